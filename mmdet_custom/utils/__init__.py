from .fileio import atomic_path, dump_json_atomic, write_csv_atomic

__all__ = ['atomic_path', 'dump_json_atomic', 'write_csv_atomic']
