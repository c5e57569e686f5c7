"""Evaluation: the metrics (mmdet ``BaseMetric`` subclasses, import torch and mmdet) and ``functional`` (torch-free
COCO/iSAID evaluation). The metrics are imported on first use of their names, so that importing
``mmdet_custom.evaluation.functional`` loads neither torch nor mmdet; :mod:`mmdet_custom.register` registers them."""
import importlib

_LAZY = {'CocoResultsExport': 'metrics', 'DiceIoUMetric': 'metrics', 'MaxDetsCocoMetric': 'metrics'}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
