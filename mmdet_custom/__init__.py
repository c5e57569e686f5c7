"""mmdet_custom: importing it registers every module into mmdet's registries.

Configs name it in ``custom_imports = dict(imports=['mmdet_custom'], allow_failed_imports=False)`` so that
mmdet's own tools (and ``mim train mmdet``) build our datasets, models, hooks and metrics.

Light command lines that need neither torch nor mmdet (the dataset converters) set the environment variable
``MMDET_CUSTOM_NO_REGISTER=1`` before their first import: the package then imports nothing heavy, and the torch-free
modules (``mmdet_custom.utils``, ``mmdet_custom.converters``) work as usual.
"""
import os

from .version import __version__

if os.environ.get('MMDET_CUSTOM_NO_REGISTER', '') in ('', '0'):
    # checkpoint: weights_only-safe checkpoint loading, see checkpoint.py
    from . import (  # noqa: F401
        checkpoint,
        datasets,
        engine,
        evaluation,
        models,
    )

__all__ = ['__version__']
