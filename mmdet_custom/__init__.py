"""mmdet_custom: importing it registers every module into mmdet's registries.

Configs name it in ``custom_imports = dict(imports=['mmdet_custom'], allow_failed_imports=False)`` so that
mmdet's own tools (and ``mim train mmdet``) build our datasets, models, hooks and metrics.
"""
from .version import __version__
from . import checkpoint  # noqa: F401  (weights_only-safe checkpoint loading, see checkpoint.py)
from . import datasets, engine, evaluation, models  # noqa: F401

__all__ = ['__version__']
