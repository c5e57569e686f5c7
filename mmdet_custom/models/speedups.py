"""Output-preserving inference speedups for mmdet two-stage detectors: BatchNorm folded into the preceding conv,
the backbone in channels_last, the mask head run in chunks of RoIs.

The detections stay those of the unmodified model to float rounding (``tests/test_bench_models.py`` checks 1e-4 on
the project's configs). Used by whole-scene inference (on by default) and the model benchmark (``+fast``).
"""
from typing import Optional

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ['apply_inference_speedups', 'fuse_conv_bn']


def fuse_conv_bn(module):
    """Fold every eval-mode BatchNorm that directly follows a ``Conv2d`` (next child of the same parent) into it.

    The conv becomes ``fuse_conv_bn_eval(conv, bn)`` (``W' = W * g / sqrt(v + eps)``, ``b' = (b - m) * g /
    sqrt(v + eps) + beta``, PyTorch's own folding) and the BatchNorm an ``nn.Identity`` - or, for a timm
    ``BatchNormAct2d`` (BatchNorm + dropout + activation in one module), ``nn.Sequential(drop, act)``, so its
    activation stays (mmcv's ``fuse_conv_bn`` makes every BatchNorm an Identity, dropping the activation of timm's
    EfficientNet blocks). A BatchNorm subclass of another kind is left alone. Like mmcv's ``fuse_conv_bn`` this relies
    on the parent running the conv and then the BatchNorm; :func:`apply_inference_speedups` is tested against the
    unfused model on the project's configs.

    Args:
        module (nn.Module): a model in eval mode (modified in place).

    Returns:
        int: the number of BatchNorms folded.
    """
    folded = 0
    last_name, last_conv = None, None
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and last_conv is not None and child.track_running_stats \
                and not child.training and last_conv.out_channels == child.num_features:
            exact = type(child) in (nn.BatchNorm2d, nn.SyncBatchNorm) or type(child).__name__ == 'BatchNorm2d'
            has_act = hasattr(child, 'act') and hasattr(child, 'drop')
            if exact or has_act:
                setattr(module, last_name, fuse_conv_bn_eval(last_conv, child))
                setattr(module, name, nn.Sequential(child.drop, child.act) if not exact else nn.Identity())
                folded += 1
                last_name, last_conv = None, None
                continue
        if isinstance(child, nn.Conv2d):
            last_name, last_conv = name, child
        else:
            folded += fuse_conv_bn(child)
            last_name, last_conv = None, None
    return folded


def _to_channels_last(x):
    return x.contiguous(memory_format=torch.channels_last) if torch.is_tensor(x) and x.dim() == 4 else x


def _to_contiguous(outputs):
    if torch.is_tensor(outputs):
        return outputs.contiguous()
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_to_contiguous(o) for o in outputs)
    return outputs


def apply_inference_speedups(model, fuse_bn: bool = True, channels_last: bool = True,
                             mask_chunk: Optional[int] = 100):
    """Make an mmdet two-stage detector faster at inference without changing what it computes (to float rounding).

    * ``fuse_bn``: :func:`fuse_conv_bn` over the whole model (backbone, neck, heads).
    * ``channels_last``: the backbone's weights and input in ``torch.channels_last``; its outputs are handed on as
      contiguous NCHW (mmcv's CPU RoIAlign reads raw NCHW memory and is silently wrong on channels-last input).
    * ``mask_chunk``: the mask head runs on chunks of this many RoIs, in channels_last (None: one batch, NCHW). The
      mask head holds no batch statistics in eval mode, so each RoI's output does not depend on its chunk.
      (:class:`~mmdet_custom.models.roi_heads.ResidualFCNMaskHead` chunks by itself, ``test_chunk=100``; this adds
      channels_last and covers any mask head.)

    The model must be in eval mode and stay there: the fused model has no BatchNorms left to train.

    Args:
        model (nn.Module): an mmdet detector (``backbone``; ``roi_head.mask_head`` optional), modified in place.

    Returns:
        nn.Module: ``model``.

    Raises:
        ValueError: the model is in training mode, or the speedups were applied already.
    """
    if model.training:
        raise ValueError('apply_inference_speedups needs a model in eval mode (call model.eval() first)')
    if getattr(model, '_inference_speedups', None):
        raise ValueError('the inference speedups were applied to this model already')
    if fuse_bn:
        fuse_conv_bn(model)
    if channels_last:
        backbone = model.backbone
        backbone.to(memory_format=torch.channels_last)
        backbone.register_forward_pre_hook(lambda m, args: tuple(_to_channels_last(a) for a in args))
        backbone.register_forward_hook(lambda m, args, out: _to_contiguous(out))
    mask_head = getattr(getattr(model, 'roi_head', None), 'mask_head', None)
    if mask_chunk and mask_head is not None:
        mask_head.to(memory_format=torch.channels_last)
        forward = mask_head.forward

        def chunked_forward(x, *args, **kwargs):
            if x.shape[0] == 0:
                return forward(x, *args, **kwargs)
            return torch.cat([forward(_to_channels_last(part), *args, **kwargs).contiguous()
                              for part in x.split(mask_chunk)])

        mask_head.forward = chunked_forward
    model._inference_speedups = dict(fuse_bn=fuse_bn, channels_last=channels_last, mask_chunk=mask_chunk)
    return model
