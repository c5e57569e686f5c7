"""Dataset converters (torch-free). Submodules are imported on first use, so that importing one converter (e.g.
``mmdet_custom.converters.cells``) does not load the others' dependencies."""
import importlib

_LAZY = {'ISAIDConversionError': 'isaid', 'convert_isaid': 'isaid', 'sliding_windows': 'isaid'}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
