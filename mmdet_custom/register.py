"""Registers every module of mmdet_custom into mmdet's registries; importing this module is the registration.

Configs name it in ``custom_imports = dict(imports=['mmdet_custom.register'], allow_failed_imports=False)``
(``configs/_base_/default_runtime.py``), so that mmdet's own tools (and ``mim train mmdet``) build our datasets,
models, hooks and metrics; the tools and APIs of this package that build models import it themselves. It also
installs the weights_only-safe checkpoint loader and the atomic checkpoint saver (:mod:`mmdet_custom.checkpoint`).

``import mmdet_custom`` alone registers nothing and imports neither torch nor mmdet, so the torch-free modules
(``mmdet_custom.utils``, ``mmdet_custom.converters``, ``mmdet_custom.evaluation.functional``) load light.
It imports torch, mmengine, mmdet and timm (through the backbones); nothing beyond what mmdet's registries load.
"""
from . import checkpoint, datasets, engine, models  # noqa: F401
from .evaluation import metrics  # noqa: F401
