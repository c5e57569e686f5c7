from .runner import load_config, test, train, write_json_atomic

__all__ = ['load_config', 'train', 'test', 'write_json_atomic']
