"""The one way the project builds a detector from a config (analysis tools, benchmarks, scene inference).

One random-init rule: the model's weights come from ``checkpoint`` or from nowhere. Every ``init_cfg``,
``pretrained`` and ``checkpoint_path`` in ``cfg.model`` is switched off (:func:`disable_pretrained`) and
``init_weights`` is not called, so building never reads a file or the network besides ``checkpoint``; without a
checkpoint the parameters keep PyTorch's default initialisation. (Training goes through mmengine's ``Runner``,
which calls ``init_weights`` and so loads ImageNet weights as the config asks.)
"""
import copy
from typing import Any, Mapping, Optional, Union

from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from torch import nn

import mmdet_custom.register  # noqa: F401  (registers the project's modules)
from mmdet_custom.checkpoint import check_checkpoint_matches, load_checkpoint_file
from mmdet_custom.utils.config import config_build_errors, read_config
from mmdet_custom.utils.device import check_device

__all__ = ['build_model', 'disable_pretrained', 'default_device']


def disable_pretrained(cfg: Union[dict, list]) -> Union[dict, list]:
    """Switch a (model) config to random init, in place, and return it.

    Walks every nested dict and list and, wherever the keys appear, sets ``init_cfg=None`` (mmengine's
    ``Pretrained`` init and any other), ``pretrained=False`` (timm backbones; mmdet's deprecated
    ``pretrained='torchvision://...'`` becomes None) and ``checkpoint_path=None`` (a local timm checkpoint).

    Args:
        cfg (dict | list): a config dict (e.g. ``cfg.model``), a list of them, or a :class:`ConfigDict`.

    Returns:
        dict | list: ``cfg`` itself, modified.

    Example:
        >>> disable_pretrained(dict(backbone=dict(pretrained=True, init_cfg=dict(type='Pretrained'))))
        {'backbone': {'pretrained': False, 'init_cfg': None}}
    """
    if isinstance(cfg, dict):
        for key in list(cfg.keys()):
            if key == 'init_cfg':
                cfg[key] = None
            elif key == 'pretrained':
                # timm takes a bool; mmdet backbones take a checkpoint path or None
                cfg[key] = None if cfg[key] is None or isinstance(cfg[key], str) else False
            elif key == 'checkpoint_path':
                cfg[key] = None
            else:
                disable_pretrained(cfg[key])
    elif isinstance(cfg, (list, tuple)):
        for item in cfg:
            disable_pretrained(item)
    return cfg


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return check_device(None)


def build_model(config: Any,
                checkpoint: Optional[str] = None,
                device: Optional[str] = 'cpu',
                dataset_meta: Optional[Mapping] = None,
                cfg_options: Optional[Mapping[str, Any]] = None,
                strict: bool = True) -> nn.Module:
    """Build ``config``'s model in eval mode on ``device``, random init or ``checkpoint``'s weights.

    Registers mmdet's and the project's modules and sets the config's default scope (``mmdet``).

    Args:
        config (str | Config): config file or object (not modified).
        checkpoint (str, optional): weights to load (``weights_only`` loading, see :mod:`mmdet_custom.checkpoint`).
            None keeps random weights (see the module docstring).
        device (str, optional): 'cpu', 'cuda', 'cuda:1', ... None: 'cuda' when a GPU is visible, else 'cpu'.
            Defaults to 'cpu'.
        dataset_meta (Mapping, optional): ``classes`` and ``palette`` set as ``model.dataset_meta``; else the
            checkpoint's ``meta.dataset_meta``, else ``{}``.
        cfg_options (Mapping, optional): ``--cfg-options`` merged first (unknown keys refused, see
            :func:`mmdet_custom.utils.config.read_config`).
        strict (bool): refuse a checkpoint whose weights do not fit the model (missing, unexpected or other-shaped
            keys: another backbone, neck, anchor or class count), before anything runs; False loads what fits and
            warns (:func:`mmdet_custom.checkpoint.check_checkpoint_matches`). Defaults to True.

    Returns:
        nn.Module: the detector in eval mode, with ``model.cfg`` (the config used) and ``model.dataset_meta``.

    Raises:
        FileNotFoundError: ``config`` is a path that does not exist, or ``checkpoint`` does not exist.
        CheckpointMismatchError: with ``strict``, the checkpoint does not fit the model (named keys and shapes).
        CorruptCheckpointError, UnsafeCheckpointError: a truncated checkpoint, or one holding a refused object.
        KeyError: the config has no ``model``.
        ConfigKeyError: an unknown ``cfg_options`` key.
        DeviceError: ``device`` cannot be used here, e.g. 'cuda' without a GPU (checked first, with the reason:
            :func:`mmdet_custom.utils.device.check_device`).
    """
    device = check_device(device)
    register_all_modules(init_default_scope=False)
    cfg = read_config(config if isinstance(config, str) else copy.deepcopy(config), cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if 'model' not in cfg:
        raise KeyError(f'{getattr(cfg, "filename", config)}: the config has no `model`')
    with config_build_errors(cfg):
        model = MODELS.build(disable_pretrained(copy.deepcopy(cfg.model)))
    if checkpoint is not None:
        ckpt = load_checkpoint_file(checkpoint, map_location='cpu')
        check_checkpoint_matches(model, checkpoint, strict=strict, loaded=ckpt)
        _load_checkpoint_to_model(model, ckpt, strict=False)  # what does not fit was refused or warned about above
        dataset_meta = dataset_meta or (ckpt.get('meta') or {}).get('dataset_meta')
    model.cfg = cfg
    model.dataset_meta = dict(dataset_meta or {})
    return model.to(device).eval()
