from .errors import UserError
from .fileio import atomic_dir, atomic_path, check_output_outside_inputs, dump_json_atomic, load_json, write_csv_atomic

__all__ = [
    'UserError', 'atomic_dir', 'atomic_path', 'check_output_outside_inputs', 'dump_json_atomic', 'load_json',
    'write_csv_atomic'
]
