"""A timm backbone (``features_only``) with a CBAM on each output stage."""
import os.path as osp
import socket
import threading
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import timm
import torch
import torch.nn as nn
from huggingface_hub import constants as hf_constants
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet_custom.utils.errors import UserError

from ..layers.cbam import CBAM

# Output strides of C2-C5, the levels an FPN neck expects (Lin et al., FPN, CVPR 2017, Sec. 3).
PYRAMID_REDUCTIONS = (4, 8, 16, 32)
# Seconds the hub's host has to accept a TCP connection before the weights are looked up in the local cache only.
# Without this probe, huggingface_hub retries an unreachable host with back-off for about 50 s before failing.
HUB_PROBE_TIMEOUT_S = 2.0


class BackboneWeightsError(UserError, ValueError):
    """A local weights file (``model.backbone.checkpoint_path``) that does not fit the timm model."""


class PretrainedWeightsUnavailableError(UserError, RuntimeError):
    """timm's pretrained weights could not be fetched (offline, hub unreachable, no cached copy)."""


@MODELS.register_module()
class TimmCBAMBackbone(BaseModule):
    """Any timm model as a multi-scale backbone, with a CBAM (Woo et al., ECCV 2018) on each output stage.

    The network comes from ``timm.create_model(model_name, features_only=True, out_indices=...)``; channels and
    strides are read from its ``feature_info``, never hard-coded. Each returned feature map then goes through its
    own :class:`~mmdet_custom.models.layers.CBAM` (or through unchanged, see ``use_cbam``).

    For ``efficientnet_b0`` the default gives strides 4/8/16/32 and ``out_channels == [24, 40, 112, 320]``; for
    ``tf_efficientnetv2_m`` (Tan & Le, EfficientNetV2, ICML 2021) ``[48, 80, 176, 512]``, for ``tf_efficientnetv2_s``
    ``[48, 64, 160, 256]``.

    Weights: the timm model is always created with random weights (``pretrained=False``), so building the backbone
    (and the detector around it, e.g. by mmdet's ``init_detector`` or the analysis tools) never reads a file or
    touches the network. The weights asked for by ``pretrained`` / ``checkpoint_path`` are loaded by
    :meth:`init_weights`, which mmengine's runner calls once before training (mmengine's rule for pretrained
    weights).

    Args:
        model_name (str): A timm model name, e.g. ``'efficientnet_b0'``. Defaults to ``'efficientnet_b0'``.
        out_indices (Sequence[int], optional): timm feature indices to return. Defaults to None: the indices whose
            reductions are 4, 8, 16 and 32 (C2-C5); where timm gives several features of one reduction the
            deepest is taken.
        pretrained (bool): In :meth:`init_weights`, load timm's pretrained weights of ``model_name`` from its hub
            (or from the local hub cache; needs network access otherwise). Defaults to False.
        checkpoint_path (str, optional): In :meth:`init_weights`, load this local weights file instead: a
            ``.pth``/``.pt``/``.bin`` file (read by :func:`timm.models.load_state_dict`, ``weights_only=True``)
            holding a bare state_dict or one under ``'state_dict'`` or ``'model'`` (an EMA copy under
            ``'state_dict_ema'`` / ``'model_ema'`` is preferred, as timm does), or a ``.safetensors`` file. Its keys
            must be those of timm's classification model ``model_name`` (the classifier and the first conv may
            differ in shape, timm adapts them) or of the ``features_only`` model itself; a leading ``'module.'`` is
            stripped. Defaults to None.
        use_cbam (bool | Sequence[bool]): CBAM on every output stage, or one flag per output stage.
            Defaults to True.
        cbam_reduction (int): Reduction ratio ``r`` of the CBAM channel attention. Defaults to 16.
        frozen_stages (int): Stages to freeze (``requires_grad=False`` and eval mode): -1 freezes nothing,
            0 freezes the stem (every module that runs before the first output stage), ``k`` the stem and the
            first ``k`` output stages (everything up to the module giving the ``k``-th output). The CBAMs are
            new layers and stay trainable. Defaults to -1.
        norm_eval (bool): Keep the BatchNorm layers of the timm model in eval mode (frozen running statistics)
            during training. Defaults to False.
        init_cfg (dict or list[dict], optional): Initialization config. Defaults to None.
        **timm_kwargs: Further arguments of ``timm.create_model``, e.g. ``drop_path_rate=0.1``.

    Attributes:
        timm_model (nn.Module): The ``features_only`` timm network.
        out_indices (tuple[int]): The timm feature indices returned.
        out_channels (list[int]): Channels of each output, from ``feature_info.channels()``.
        strides (list[int]): Reduction (output stride, in pixels) of each output, from
            ``feature_info.reduction()``.
        cbams (nn.ModuleList): One :class:`CBAM` or ``nn.Identity`` per output.

    Raises:
        ValueError: if both ``pretrained`` and ``checkpoint_path`` are given, ``timm_kwargs`` holds an argument
            this class sets itself, ``out_indices`` is None and the model has no features at reductions
            4/8/16/32, ``use_cbam`` has the wrong length, or ``frozen_stages`` is out of range.
        BackboneWeightsError: (a ``UserError`` and ``ValueError``, from :meth:`init_weights`) if the checkpoint
            holds no state_dict or keys/shapes that fit the model (the message names the file and the keys).
        PretrainedWeightsUnavailableError: (a ``UserError``, from :meth:`init_weights`) if ``pretrained=True`` and
            timm cannot fetch the weights (e.g. offline); the message says how to give a local file or build with
            random weights.
        FileNotFoundError: (from :meth:`init_weights`) if ``checkpoint_path`` is not a file.

    Example:
        >>> import torch
        >>> self = TimmCBAMBackbone('efficientnet_b0').eval()
        >>> outputs = self.forward(torch.rand(1, 3, 64, 64))
        >>> for out, stride in zip(outputs, self.strides):
        ...     print(stride, tuple(out.shape))
        4 (1, 24, 16, 16)
        8 (1, 40, 8, 8)
        16 (1, 112, 4, 4)
        32 (1, 320, 2, 2)
    """

    def __init__(self,
                 model_name: str = 'efficientnet_b0',
                 out_indices: Optional[Sequence[int]] = None,
                 pretrained: bool = False,
                 checkpoint_path: Optional[str] = None,
                 use_cbam: Union[bool, Sequence[bool]] = True,
                 cbam_reduction: int = 16,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: OptMultiConfig = None,
                 **timm_kwargs) -> None:
        super().__init__(init_cfg=init_cfg)
        reserved = {'features_only', 'pretrained_cfg_overlay'} & set(timm_kwargs)
        if reserved:
            raise ValueError(f'TimmCBAMBackbone sets {sorted(reserved)} itself; remove them from its arguments')
        if pretrained and checkpoint_path is not None:
            raise ValueError('give at most one of pretrained=True (timm hub) and checkpoint_path (local file)')
        self.model_name = model_name
        self.pretrained = bool(pretrained)
        self.checkpoint_path = checkpoint_path
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        if out_indices is None:
            out_indices = _pyramid_out_indices(model_name, timm_kwargs)
        self._timm_kwargs = dict(timm_kwargs)
        self._create_kwargs = dict(timm_kwargs, features_only=True, out_indices=tuple(out_indices))
        # random weights here; init_weights() loads the pretrained ones (nothing is read or downloaded on build)
        self.timm_model = timm.create_model(model_name, pretrained=False, **self._create_kwargs)

        feature_info = self.timm_model.feature_info
        self.out_indices = tuple(feature_info.out_indices)
        self.out_channels: List[int] = list(feature_info.channels())
        self.strides: List[int] = list(feature_info.reduction())
        num_outs = len(self.out_channels)

        if isinstance(use_cbam, bool):
            use_cbam = (use_cbam, ) * num_outs
        if len(use_cbam) != num_outs:
            raise ValueError(f'use_cbam has {len(use_cbam)} flags but the backbone has {num_outs} output stages '
                             f'(out_indices={self.out_indices})')
        self.use_cbam = tuple(bool(flag) for flag in use_cbam)
        self.cbams = nn.ModuleList(
            CBAM(channels, reduction=cbam_reduction) if flag else nn.Identity()
            for channels, flag in zip(self.out_channels, self.use_cbam))

        if not -1 <= frozen_stages <= num_outs:
            raise ValueError(f'frozen_stages must lie in [-1, {num_outs}] (number of output stages), '
                             f'got {frozen_stages}')
        self._frozen_modules = self._find_frozen_modules(frozen_stages)
        self._freeze_stages()

    def init_weights(self) -> None:
        """Initialise the CBAMs (and apply ``init_cfg``), then load the timm weights asked for.

        With ``checkpoint_path`` the local file is loaded; with ``pretrained=True`` timm fetches its pretrained
        weights (hub or local hub cache). Runs once: a second call (mmengine warns) loads nothing.

        Raises:
            FileNotFoundError: if ``checkpoint_path`` is not a file.
            BackboneWeightsError: if the file holds no state_dict that fits the model.
            PretrainedWeightsUnavailableError: if timm cannot fetch its pretrained weights.
        """
        first_call = not self._is_init
        super().init_weights()
        if not first_call:
            return
        if self.checkpoint_path is not None:
            self._load_checkpoint_file(self.checkpoint_path)
        elif self.pretrained:
            self._load_hub_weights()
        # loading replaced the parameters' values only: requires_grad and the frozen stages' modes stay

    def _load_hub_weights(self) -> None:
        """timm's pretrained weights of ``model_name`` (through its own loader), copied into :attr:`timm_model`.

        The hub's host is probed first (a TCP connection, :data:`HUB_PROBE_TIMEOUT_S` seconds). When it is
        unreachable, or huggingface_hub is offline (``HF_HUB_OFFLINE=1``), timm's loader reads the local caches only,
        so an offline machine gets the error within seconds instead of after the hub client's retries.
        """
        cfg = getattr(self.timm_model, 'pretrained_cfg', None) or {}
        hf_hub_id, url = cfg.get('hf_hub_id'), cfg.get('url')
        source = hf_hub_id or url or "timm's hub"
        host_url = hf_constants.ENDPOINT if hf_hub_id else url
        offline = hf_constants.is_offline_mode() or not (host_url and _reachable(host_url, HUB_PROBE_TIMEOUT_S))
        where = 'offline mode (HF_HUB_OFFLINE)' if hf_constants.is_offline_mode() else \
            f'offline: {urlsplit(host_url or "").hostname or "the hub"} unreachable within {HUB_PROBE_TIMEOUT_S:g} s'
        try:
            if offline and not hf_hub_id and url and not osp.isfile(
                    osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(urlsplit(url).path))):
                raise FileNotFoundError(f'no copy of {url} in the torch hub cache ({torch.hub.get_dir()})')
            with _hub_cache_only(offline):
                pretrained_model = timm.create_model(self.model_name, pretrained=True, **self._create_kwargs)
        except Exception as err:  # offline: huggingface_hub / urllib errors of many types, all reported alike
            reason = f'{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""}'
            if offline:
                reason = f'{where}, and not in the local cache; {reason}'
            raise PretrainedWeightsUnavailableError(
                f'model.backbone (TimmCBAMBackbone): cannot fetch timm\'s pretrained weights of '
                f'{self.model_name!r} from {source} ({reason}). Either download them where the network is '
                f'reachable (e.g. `timm.create_model({self.model_name!r}, pretrained=True)` fills the local hub '
                f'cache, or save the state_dict to a file) and set model.backbone.checkpoint_path=<local '
                f'.pth/.safetensors file> with model.backbone.pretrained=False, or build with random weights: '
                f'model.backbone.pretrained=False (e.g. --cfg-options model.backbone.pretrained=False).') from err
        self.timm_model.load_state_dict(pretrained_model.state_dict(), strict=True)

    def _load_checkpoint_file(self, checkpoint_path: str) -> None:
        """Load a local weights file into :attr:`timm_model` (see ``checkpoint_path`` in the class docstring).

        A state_dict of the ``features_only`` model is loaded strictly; one of timm's classification model goes
        through timm's own pretrained loading (``pretrained_cfg_overlay=dict(state_dict=...)``), which maps it
        onto the features model, drops the classifier and adapts the first conv.
        """
        path = osp.expanduser(checkpoint_path)
        if not osp.isfile(path):
            raise FileNotFoundError(f'{checkpoint_path} (model.backbone.checkpoint_path) can not be found')
        try:
            state_dict = timm.models.load_state_dict(path, use_ema=True, weights_only=True)
        except (RuntimeError, OSError, ValueError) as err:
            raise BackboneWeightsError(f'{checkpoint_path} (model.backbone.checkpoint_path): cannot read a state_dict '
                                       f'({type(err).__name__}: {err})') from err
        if not (isinstance(state_dict, dict) and state_dict
                and all(isinstance(v, Tensor) for v in state_dict.values())):
            raise BackboneWeightsError(
                f'{checkpoint_path} (model.backbone.checkpoint_path): expected a state_dict (a dict of tensors, '
                f"bare or under 'state_dict' or 'model'), got a {type(state_dict).__name__} with keys "
                f'{sorted(state_dict)[:8] if isinstance(state_dict, dict) else "-"}')
        if not _mismatch(state_dict, self.timm_model):
            self.timm_model.load_state_dict(state_dict, strict=True)
            return
        classifier = _probe(self.model_name, **self._timm_kwargs)
        cfg = getattr(classifier, 'pretrained_cfg', {}) or {}
        heads = cfg.get('classifier') or ()
        adaptable = [f'{name}.' for name in ((heads, ) if isinstance(heads, str) else heads)]
        if cfg.get('first_conv'):
            adaptable.append(f'{cfg["first_conv"]}.')
        problems = _mismatch(state_dict, classifier, adaptable)
        if problems:
            raise BackboneWeightsError(
                f'{checkpoint_path} (model.backbone.checkpoint_path) does not hold weights of timm model '
                f'{self.model_name!r} (neither of its classification model nor of its features_only model); '
                'against the classification model: ' + '; '.join(problems))
        loaded = timm.create_model(
            self.model_name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=state_dict, source=''),
            **self._create_kwargs)
        self.timm_model.load_state_dict(loaded.state_dict(), strict=True)

    def _find_frozen_modules(self, frozen_stages: int) -> List[nn.Module]:
        """Modules of the stem and the first ``frozen_stages`` output stages, in registration (= forward) order.

        timm's feature wrappers hold their modules in forward order, so the modules that run up to the end of
        output stage ``k`` are those registered before the end of the module that gives output ``k`` (a
        contiguous prefix of ``named_modules()``), less the containers that also hold later stages.
        """
        if frozen_stages < 0:
            return []
        named = list(self.timm_model.named_modules())
        positions = {name: i for i, (name, _) in enumerate(named)}
        stage = max(frozen_stages, 1) - 1
        target = _resolve_module_name(self.timm_model.feature_info.module_name()[stage], positions, self.model_name)
        start = positions[target]
        if frozen_stages == 0:
            end = start  # everything before the first output stage's module
        else:
            end = start + 1
            while end < len(named) and named[end][0].startswith(target + '.'):
                end += 1
        ancestors = {name for name, _ in named[:start] if name == '' or target.startswith(name + '.')}
        return [module for name, module in named[:end] if name not in ancestors]

    def _freeze_stages(self) -> None:
        """Set ``requires_grad=False`` and eval mode on the frozen modules."""
        for module in self._frozen_modules:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'TimmCBAMBackbone':
        """Set train/eval mode, keeping frozen stages (and, with ``norm_eval``, all BatchNorms) in eval mode."""
        super().train(mode)
        if mode:
            self._freeze_stages()
            if self.norm_eval:
                for module in self.timm_model.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
        return self

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Extract the feature pyramid.

        Args:
            x (Tensor): Images, shape (N, 3, H, W).

        Returns:
            tuple[Tensor]: One map per output stage, shape (N, out_channels[i], H / strides[i], W / strides[i])
            (sizes rounded as the network's strided convolutions round them).
        """
        features = self.timm_model(x)
        return tuple(cbam(feature) for cbam, feature in zip(self.cbams, features))


def _reachable(url: str, timeout: float) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` seconds (name lookup included).

    Behind a proxy (``HTTPS_PROXY`` / ``HTTP_PROXY``, unless ``NO_PROXY`` exempts the host) the proxy is probed
    instead, as the hub client would connect to it. Nothing is sent. The lookup and connection run in a daemon
    thread, so a hanging resolver also counts as unreachable once ``timeout`` has passed.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(parts.hostname):
        parts = urlsplit(proxy if '://' in proxy else f'http://{proxy}')
        if not parts.hostname:
            return False
    port = parts.port or (443 if parts.scheme == 'https' else 80)
    answer = []

    def connect() -> None:
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                answer.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, name='hub-probe', daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answer)


@contextmanager
def _hub_cache_only(enabled: bool) -> Iterator[None]:
    """huggingface_hub's offline mode (what ``HF_HUB_OFFLINE=1`` sets at import) for the duration of the block:
    ``hf_hub_download`` answers from the local cache or raises at once, without retrying the network."""
    if not enabled:
        yield
        return
    before = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = before


def _probe(model_name: str, **kwargs) -> nn.Module:
    """Build a timm model without allocating its weights (meta device), to read its structure."""
    try:
        with torch.device('meta'):
            return timm.create_model(model_name, pretrained=False, **kwargs)
    except Exception:  # a model whose __init__ needs real tensors: build it on the CPU
        return timm.create_model(model_name, pretrained=False, **kwargs)


def _pyramid_out_indices(model_name: str, timm_kwargs: Dict) -> Tuple[int, ...]:
    """timm feature indices of ``model_name`` at reductions 4/8/16/32 (the deepest one of each reduction).

    Raises:
        ValueError: if some of these reductions has no feature.
    """
    info = _probe(model_name, features_only=True, **timm_kwargs).feature_info.info
    by_reduction = {}
    for index, feature in enumerate(info):
        by_reduction[feature['reduction']] = index  # later (deeper) features overwrite earlier ones
    missing = [r for r in PYRAMID_REDUCTIONS if r not in by_reduction]
    if missing:
        raise ValueError(
            f'timm model {model_name!r} has no features_only output at reductions {missing} (it gives reductions '
            f'{[f["reduction"] for f in info]} at indices 0..{len(info) - 1}); pass out_indices explicitly')
    return tuple(by_reduction[r] for r in PYRAMID_REDUCTIONS)


def _resolve_module_name(name: str, positions: Dict[str, int], model_name: str) -> str:
    """Name of a ``feature_info`` module inside the features model (FeatureListNet flattens ``a.b`` to ``a_b``)."""
    for candidate in (name, name.replace('.', '_')):
        if candidate in positions:
            return candidate
    raise ValueError(f'cannot locate module {name!r} of {model_name!r} in its features_only model, so '
                     f'frozen_stages cannot be applied; use frozen_stages=-1')


def _mismatch(state_dict: Dict[str, Tensor], model: nn.Module, adaptable: Sequence[str] = ()) -> List[str]:
    """Missing keys, unexpected keys and shape mismatches of ``state_dict`` against ``model`` (empty: it fits).

    Keys starting with an entry of ``adaptable`` may differ in shape.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(f'{k}: {tuple(state_dict[k].shape)} in file, {expected[k]} in model'
                    for k in set(expected) & set(state_dict)
                    if tuple(state_dict[k].shape) != expected[k] and not k.startswith(tuple(adaptable)))
    for title, keys in (('missing keys', missing), ('unexpected keys', unexpected), ('shape mismatches', shapes)):
        if keys:
            shown = ', '.join(keys[:8]) + (', ...' if len(keys) > 8 else '')
            problems.append(f'{len(keys)} {title} ({shown})')
    return problems
