"""Distributed runs (``tools/dist_train.sh``, ``tools/dist_test.sh``: torchrun + mmengine's ``pytorch`` launcher) on
machines without CUDA devices.

On GPUs mmengine does everything: ``Runner.setup_env`` calls ``mmengine.dist.init_dist('pytorch', **dist_cfg)``
(``env_cfg.dist_cfg``, NCCL by default) and ``Runner.wrap_model`` wraps the model in ``MMDistributedDataParallel``
with ``device_ids=[LOCAL_RANK]``. On CPUs both steps fail in mmengine 0.10: ``init_dist`` first calls
``torch.cuda.set_device(LOCAL_RANK)`` ("Found no NVIDIA driver"), and DDP refuses ``device_ids`` for a CPU module.
:func:`prepare_distributed` fills that gap without replacing mmengine: it initialises the process group itself with
the gloo backend (``Runner.setup_env`` then finds it initialised and skips ``init_dist``) and sets
``model_wrapper_cfg.device_ids = None``. Everything else (samplers, gradient all-reduce, rank-0 checkpoints and
logs, result collection for evaluation) is mmengine's and PyTorch's.

On any device it also refuses ``sync_bn`` for models built on timm, which mmengine's SyncBN conversion would
silently change (:func:`check_sync_bn`).
"""
import datetime
import warnings
from typing import Any, Iterator

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict

from mmdet_custom.utils.errors import UserError

__all__ = ['DistributedSetupError', 'prepare_distributed', 'check_sync_bn']


class DistributedSetupError(UserError, RuntimeError):
    """A distributed setting that cannot work on this machine (launcher, SyncBN without CUDA)."""


def _types(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield node['type']
        for v in node.values():
            yield from _types(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _types(v)


def check_sync_bn(cfg: Config) -> None:
    """Refuse ``sync_bn`` for models with timm modules, whose activations mmengine's conversion would drop.

    ``Runner.wrap_model`` converts every ``_BatchNorm`` to a plain ``SyncBatchNorm``
    (``mmengine.model.convert_sync_batchnorm``). timm's ``BatchNormAct2d`` (every norm layer of EfficientNet /
    EfficientNetV2, hence of ``TimmCBAMBackbone``) is a ``_BatchNorm`` that also applies the activation (SiLU):
    converted, the layers lose it and the network silently becomes another one (measured on efficientnet_b0: 48
    layers, outputs off by up to 45). timm's own ``timm.layers.convert_sync_batchnorm`` keeps it
    (``SyncBatchNormAct``), but mmengine would convert that again.

    Raises:
        DistributedSetupError: ``cfg.sync_bn`` is set and a model component's type names timm.
    """
    if not cfg.get('sync_bn', None):
        return
    timm_types = sorted({t for t in _types(cfg.get('model', {})) if 'timm' in t.lower()})
    if timm_types:
        raise DistributedSetupError(
            f'sync_bn={cfg.sync_bn!r} with {", ".join(timm_types)}: mmengine replaces timm\'s BatchNormAct2d layers by '
            f'plain SyncBatchNorm and drops their activation (another network). Remove sync_bn '
            f'(--cfg-options sync_bn=None), or freeze the backbone\'s BatchNorm statistics (norm_eval=True) when '
            f'the per-GPU batch is small')


def prepare_distributed(cfg: Config) -> bool:
    """Prepare ``cfg`` (launcher in ``cfg.launcher``) for a distributed run on CPUs; nothing happens with CUDA.

    Call it after ``cfg.launcher`` is set and before ``Runner.from_cfg(cfg)``, in each process started by torchrun
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK`` in the environment).

    With any launcher it refuses ``sync_bn`` for timm-based models (:func:`check_sync_bn`). Without CUDA and
    with ``launcher='pytorch'`` it

    - uses gloo: ``env_cfg.dist_cfg.backend`` ``nccl`` (mmdet's default, which needs GPUs) becomes ``gloo`` with a
      warning; ``timeout`` (seconds) and other ``dist_cfg`` keys are passed to ``init_process_group``;
    - initialises the default process group from the environment (``env://``) unless it already is;
    - sets ``model_wrapper_cfg`` to mmengine's default wrapper (``MMDistributedDataParallel``,
      ``broadcast_buffers=False``, ``find_unused_parameters`` from the config) with ``device_ids=None``.

    Args:
        cfg (Config): the run's config; changed in place.

    Returns:
        bool: True when this call initialised the process group.

    Raises:
        DistributedSetupError: ``sync_bn`` with a timm-based model; without CUDA, a launcher other than
            ``pytorch`` (slurm / mpi set devices in mmengine too), or ``sync_bn`` in the config (``SyncBatchNorm``
            synchronises CUDA tensors only).
    """
    launcher = cfg.get('launcher', 'none') or 'none'
    if launcher == 'none':
        return False
    check_sync_bn(cfg)
    if torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise DistributedSetupError(f'--launcher {launcher} needs CUDA devices (mmengine sets one per process); '
                                    f'on CPUs use torchrun (tools/dist_train.sh, --launcher pytorch) with gloo')
    if cfg.get('sync_bn', None):
        raise DistributedSetupError(f'sync_bn={cfg.sync_bn!r}: SyncBatchNorm synchronises CUDA tensors only; remove '
                                    f'sync_bn from the config (--cfg-options sync_bn=None) for a CPU run')
    env_cfg = cfg.get('env_cfg') or ConfigDict()
    dist_cfg = ConfigDict(env_cfg.get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        warnings.warn(f'env_cfg.dist_cfg.backend={backend!r} needs GPUs; this machine has none, so the gloo backend '
                      f'is used (set env_cfg.dist_cfg.backend=gloo to silence this)')
    env_cfg['dist_cfg'] = ConfigDict(dist_cfg, backend='gloo')
    cfg.env_cfg = env_cfg
    initialised = False
    if not dist.is_initialized():
        kwargs = dict(dist_cfg)
        if kwargs.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        dist.init_process_group(backend='gloo', **kwargs)
        initialised = True
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None  # a CPU module: DDP takes no device ids
    cfg.model_wrapper_cfg = wrapper
    return initialised
