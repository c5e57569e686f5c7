"""Time spent in a detector's parts during one inference or training step, for the model benchmark
(:mod:`mmdet_custom.analysis.benchmark`): :class:`PartTimer` wraps the part methods of an mmdet or torchvision Mask
R-CNN (``wrap_*``), :func:`infer_parts` / :func:`train_parts` turn the times into the table's parts (the remainder of
the step's total is ``post`` / ``other``), :func:`profile_top_ops` reads the top operators of each part from a
``torch.profiler`` run. Seconds throughout; on CUDA every part is synchronised before and after.
"""
import time
from typing import Dict, List, Sequence, Tuple

import torch

from .bench_report import TRAIN_PARTS


class PartTimer:
    """Wall time spent in chosen methods of a model, by label (inclusive times; nested calls add to both labels).

    :meth:`wrap` replaces a bound method on its instance by a wrapper that synchronises CUDA (when ``cuda``),
    times the call, and opens a ``torch.profiler.record_function(label)`` range (for :func:`profile_top_ops`).
    """

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self.times: Dict[str, float] = {}
        self.labels: List[str] = []

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def wrap(self, obj, method: str, label: str) -> None:
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            with torch.profiler.record_function(label):
                out = inner(*args, **kwargs)
            self.sync()
            self.times[label] = self.times.get(label, 0.0) + time.perf_counter() - start
            return out

        setattr(obj, method, timed)
        if label not in self.labels:
            self.labels.append(label)

    def reset(self) -> None:
        self.times = {}


def wrap_mmdet_predict(model, timer: PartTimer) -> None:
    """Time an mmdet two-stage detector's inference parts: backbone+neck, rpn, roi_heads; the box and mask heads'
    ``predict_by_feat`` (decoding, NMS, mask pasting) count as post."""
    timer.wrap(model, 'extract_feat', 'backbone+neck')
    timer.wrap(model.rpn_head, 'predict', 'rpn')
    timer.wrap(model.roi_head, 'predict', 'roi_heads')
    timer.wrap(model.roi_head.bbox_head, 'predict_by_feat', 'post')
    if getattr(model.roi_head, 'with_mask', False):
        timer.wrap(model.roi_head.mask_head, 'predict_by_feat', 'post')


def wrap_mmdet_train(model, optim_wrapper, timer: PartTimer) -> None:
    """Time an mmdet two-stage detector's training parts: backbone+neck, rpn, roi_heads, backward, optimizer."""
    timer.wrap(model, 'extract_feat', 'backbone+neck')
    timer.wrap(model.rpn_head, 'loss_and_predict', 'rpn')
    timer.wrap(model.roi_head, 'loss', 'roi_heads')
    timer.wrap(optim_wrapper, 'backward', 'backward')
    timer.wrap(optim_wrapper, 'step', 'optimizer')


def wrap_torchvision(model, timer: PartTimer) -> None:
    """Time torchvision's Mask R-CNN parts (backbone, rpn, roi_heads; box post-processing as post)."""
    # modules: their forward is wrapped; the transform (resize, normalise, mask pasting) falls in post
    timer.wrap(model.backbone, 'forward', 'backbone+neck')
    timer.wrap(model.rpn, 'forward', 'rpn')
    timer.wrap(model.roi_heads, 'forward', 'roi_heads')
    timer.wrap(model.roi_heads, 'postprocess_detections', 'post')


def infer_parts(times: Dict[str, float], total: float) -> Dict[str, float]:
    """Exclusive seconds per inference part from the inclusive wrapper times: the ``post`` wrappers sit inside
    roi_heads (box decoding + NMS, mask pasting); post = total - backbone+neck - rpn - roi_heads less post, i.e.
    also the data preprocessor and result packing."""
    inner_post = times.get('post', 0.0)
    roi = max(times.get('roi_heads', 0.0) - inner_post, 0.0)
    parts = {'backbone+neck': times.get('backbone+neck', 0.0), 'rpn': times.get('rpn', 0.0), 'roi_heads': roi}
    parts['post'] = max(total - sum(parts.values()), 0.0)
    return parts


def train_parts(times: Dict[str, float], total: float) -> Dict[str, float]:
    """Seconds per training part; ``other`` = total - the timed parts (data preprocessor, loss parsing, ...)."""
    parts = {p: times.get(p, 0.0) for p in TRAIN_PARTS[:-1]}
    parts['other'] = max(total - sum(parts.values()), 0.0)
    return parts


def profile_top_ops(prof, labels: Sequence[str], top: int = 5,
                    outside: str = 'post') -> Dict[str, List[Tuple[str, float]]]:
    """Top operators by self time under each labelled range of a ``torch.profiler.profile`` run.

    Each operator event is charged to the nearest enclosing range whose name is in ``labels``, else to
    ``outside`` (inference: ``'post'``, i.e. data preprocessing, result packing, torchvision's transform).

    Returns:
        dict[str, list[tuple[str, float]]]: label -> up to ``top`` (operator, self milliseconds), largest first.
    """
    labels = set(labels)
    totals: Dict[str, Dict[str, float]] = {}
    for event in prof.events():
        if event.name in labels:
            continue
        parent, part = event.cpu_parent, outside
        while parent is not None:
            if parent.name in labels:
                part = parent.name
                break
            parent = parent.cpu_parent
        self_us = event.self_cpu_time_total + getattr(event, 'self_device_time_total', 0.0)
        ops = totals.setdefault(part, {})
        ops[event.name] = ops.get(event.name, 0.0) + self_us / 1000.0
    return {part: sorted(ops.items(), key=lambda kv: -kv[1])[:top] for part, ops in totals.items()}
