"""Before training: can the config's RPN anchors match its training boxes at all?

An RPN learns box regression only from positive anchors: those whose IoU with an object reaches the assigner's
``pos_iou_thr`` (and, with ``match_low_quality``, each object's best anchor when it reaches ``min_pos_iou``). When
the pipeline's ``Resize`` shrinks small objects below every anchor, no anchor is ever positive, ``loss_rpn_bbox``
stays 0 for the whole run and nothing says why: measured on the shared iSAID samples, the 256 px smoke config
(800 px patches shrunk 3.1x, vehicles ~20x7 px, smallest anchor 32 px) has recall 0.000 on all 427 training boxes
at every IoU down to 0.3.

:func:`check_anchor_recall` computes the exact recall (:func:`~.recall.max_iou_exact`, the best IoU of each box over
the whole anchor grid) of the training boxes in network-input pixels, scaled as the train pipeline's ``Resize``
scales the images (:class:`~.data.ResizeSpec`), on a seeded sample of at most ``max_images`` images (~1 s for
2,000 iSAID patches), and refuses or warns when it is far too low, naming the classes and box sizes that no anchor
matches.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from mmdet_custom.utils.errors import UserError

from .data import AnchorSearchError, GTBoxes, ResizeSpec, _leaf_dataset_cfgs, gt_boxes_from_data_infos
from .recall import SIZE_BUCKETS, AnchorSetting, level_name, max_iou_exact

__all__ = ['ANCHOR_CHECK_MODES', 'AnchorCheck', 'AnchorRecallError', 'check_anchor_recall', 'measure_anchor_recall']

#: ``refuse``: an error below ``refuse_below`` (a warning below ``warn_below``); ``warn``: warnings only; ``off``.
ANCHOR_CHECK_MODES = ('refuse', 'warn', 'off')


class AnchorRecallError(UserError, ValueError):
    """The config's RPN anchors match (almost) none of the training boxes at the assigner's positive IoU."""


@dataclass
class AnchorCheck:
    """What :func:`measure_anchor_recall` found.

    Attributes:
        recall (float): fraction of the boxes whose best anchor IoU reaches ``pos_iou_thr``.
        recall_any (float): fraction that gets any positive anchor (``>= min_pos_iou`` with ``match_low_quality``,
            else the same as ``recall``).
        pos_iou_thr, min_pos_iou (float): the RPN assigner's thresholds.
        num_boxes, num_images, total_images (int): boxes measured, images sampled, images in the dataset.
        per_class (dict): class name -> (boxes, recall, median w, median h of the unmatched boxes, px).
        per_size (dict): COCO size bucket (box area in network-input pixels) -> (boxes, recall).
        smallest_anchor (tuple): (w, h, level name) of the anchor of least area.
        resize (str): the train pipeline's Resize, for messages.
    """

    recall: float
    recall_any: float
    pos_iou_thr: float
    min_pos_iou: float
    num_boxes: int
    num_images: int
    total_images: int
    per_class: Dict[str, Tuple[int, float, float, float]] = field(default_factory=dict)
    per_size: Dict[str, Tuple[int, float]] = field(default_factory=dict)
    smallest_anchor: Tuple[float, float, str] = (math.nan, math.nan, '')
    resize: str = ''

    def summary(self) -> str:
        """One line: the recall at the positive IoU, the boxes without any positive anchor, the sample."""
        sample = (f'{self.num_boxes} training boxes of {self.num_images} images'
                  + (f' (a sample of {self.total_images})' if self.num_images < self.total_images else ''))
        any_txt = (f'; {1 - self.recall_any:.1%} get no positive anchor at all (best IoU < min_pos_iou '
                   f'{self.min_pos_iou:g})' if self.min_pos_iou < self.pos_iou_thr else '')
        return (f'RPN anchor recall@{self.pos_iou_thr:g} (the assigner\'s pos_iou_thr) is {self.recall:.3f} on '
                f'{sample} in network-input pixels ({self.resize}){any_txt}')

    def unmatched(self, below: float) -> str:
        """The classes and size buckets whose recall is under ``below``, with the unmatched boxes' median size."""
        classes = [f'{name} {round(r * n)}/{n} (unmatched median {w:.0f}x{h:.0f} px)'
                   for name, (n, r, w, h) in sorted(self.per_class.items(), key=lambda kv: -kv[1][0])
                   if n and r < below]
        sizes = [f'{name} {round(r * n)}/{n}' for name, (n, r) in self.per_size.items() if n and r < below]
        w, h, level = self.smallest_anchor
        return (f'matched at IoU {self.pos_iou_thr:g}: {", ".join(classes) or "-"}; by size: {", ".join(sizes) or "-"}'
                f'; the smallest anchor is {w:.0f}x{h:.0f} px ({level})')


def _rpn_settings(cfg: Any) -> Optional[Tuple[dict, dict]]:
    """``(rpn_head.anchor_generator, train_cfg.rpn.assigner)`` of a two-stage config, None for other models."""
    model = cfg.get('model') or {}
    generator = (model.get('rpn_head') or {}).get('anchor_generator')
    assigner = ((model.get('train_cfg') or {}).get('rpn') or {}).get('assigner')
    if not generator or not assigner or 'pos_iou_thr' not in assigner:
        return None
    return generator, assigner


def _smallest_anchor(setting: AnchorSetting) -> Tuple[float, float, str]:
    best = (math.inf, math.inf, '')
    for level, stride in enumerate(setting.strides):
        ws, hs = setting.level_shapes(level)
        i = int(np.argmin(ws * hs))
        if ws[i] * hs[i] < best[0] * best[1]:
            best = (float(ws[i]), float(hs[i]), f'{level_name(stride)}, stride {stride}')
    return best


def _sample_infos(dataset: Any, max_images: int, seed: int) -> Tuple[List[dict], int]:
    """Data infos of at most ``max_images`` images of a built dataset (seeded sample), and the dataset's size."""
    leaves = [dataset]
    while any(hasattr(d, 'datasets') or hasattr(d, 'dataset') for d in leaves):
        leaves = [x for d in leaves for x in (getattr(d, 'datasets', None) or [getattr(d, 'dataset', d)])]
    index = [(leaf, i) for leaf in leaves for i in range(len(leaf))]
    if len(index) > max_images:
        picked = np.random.default_rng(seed).choice(len(index), max_images, replace=False)
        index = [index[i] for i in sorted(picked)]
    return [leaf.get_data_info(i) for leaf, i in index], sum(len(leaf) for leaf in leaves)


def measure_anchor_recall(cfg: Any, dataset: Any, max_images: int = 2000, seed: int = 0) -> Optional[AnchorCheck]:
    """Exact recall of the config's RPN anchors on the training boxes (see the module docstring).

    Args:
        cfg (Config): the run's config (``model.rpn_head.anchor_generator``, ``model.train_cfg.rpn.assigner``,
            the train pipeline's ``Resize``, ``model.data_preprocessor.pad_size_divisor``).
        dataset: the built training dataset (its data infos: ``width``, ``height``, ``instances``).
        max_images (int): images sampled at most (seeded); boxes of crowd regions are left out.
        seed (int): the sample's seed.

    Returns:
        AnchorCheck, or None when it does not apply: no RPN anchors or assigner (single-stage models), an anchor
        generator the exact recall does not model, a pipeline that resizes at random, or no box.
    """
    from .search import anchor_setting_from_cfg  # imports mmdet's registry

    rpn = _rpn_settings(cfg)
    if rpn is None:
        return None
    generator, assigner = rpn
    dataset_cfg = (cfg.get('train_dataloader') or {}).get('dataset')
    if not dataset_cfg:
        return None
    try:
        setting = anchor_setting_from_cfg(generator)
        resize = ResizeSpec.from_pipeline(_leaf_dataset_cfgs(dataset_cfg)[0][1])
        infos, total = _sample_infos(dataset, max_images, seed)
        classes = tuple((getattr(dataset, 'metainfo', None) or {}).get('classes') or ())
        divisor = ((cfg.get('model') or {}).get('data_preprocessor') or {}).get('pad_size_divisor', 1) or 1
        gt: GTBoxes = gt_boxes_from_data_infos(infos, classes, resize, divisor, source='the training set')
    except AnchorSearchError:
        return None
    ious = max_iou_exact(gt.boxes, gt.img_shapes, setting)
    pos, min_pos = float(assigner['pos_iou_thr']), float(assigner.get('min_pos_iou', assigner['pos_iou_thr']))
    low_quality = bool(assigner.get('match_low_quality', True))
    matched = ious >= pos
    any_pos = ious >= (min(pos, min_pos) if low_quality else pos)
    w, h = gt.boxes[:, 2] - gt.boxes[:, 0], gt.boxes[:, 3] - gt.boxes[:, 1]
    per_class = {}
    for label, name in enumerate(gt.classes):
        mask = gt.labels == label
        if mask.any():
            miss = mask & ~matched
            per_class[name] = (int(mask.sum()), float(matched[mask].mean()),
                               float(np.median(w[miss])) if miss.any() else math.nan,
                               float(np.median(h[miss])) if miss.any() else math.nan)
    areas = gt.areas
    per_size = {}
    for name, low, high in SIZE_BUCKETS:
        mask = (areas >= low) & (areas < high)
        per_size[name] = (int(mask.sum()), float(matched[mask].mean()) if mask.any() else math.nan)
    resize_txt = (f'Resize to {tuple(resize.scale)}, keep_ratio={resize.keep_ratio}' if resize.scale is not None
                  else f'Resize scale_factor={resize.scale_factor}')
    return AnchorCheck(float(matched.mean()), float(any_pos.mean()), pos, min_pos if low_quality else pos,
                       len(gt), len(infos), total, per_class, per_size, _smallest_anchor(setting), resize_txt)


def check_anchor_recall(cfg: Any, dataset: Any, mode: str = 'refuse', refuse_below: float = 0.1,
                        warn_below: float = 0.5, max_images: int = 2000, logger: Any = None) -> Optional[AnchorCheck]:
    """Refuse (``mode='refuse'``) or warn when the RPN anchors match far too few training boxes.

    Recall at the assigner's ``pos_iou_thr`` below ``refuse_below`` (default 0.1: the RPN sees (almost) no
    positive, ``loss_rpn_bbox`` stays ~0) is an error in ``refuse`` mode and a warning in ``warn`` mode; below
    ``warn_below`` (default 0.5) a warning. Either names the classes and COCO size buckets (box area in
    network-input pixels) under the threshold with the median size of their unmatched boxes, and the smallest
    anchor. Measured on the shared iSAID samples: the 256 px smoke config 0.000 (refused), the root config at
    800 px (stock anchors, pos_iou_thr 0.7) 0.241 (warned), the anchors step (stride-adjusted anchors, 0.5) 0.707.

    Args:
        cfg (Config): the run's config (see :func:`measure_anchor_recall`).
        dataset: the built training dataset.
        mode (str): ``'refuse'``, ``'warn'`` or ``'off'`` (nothing is measured).
        refuse_below (float): recall under which training is refused. warn_below (float): ... warned.
        max_images (int): images sampled at most.
        logger: gets the result line (info) or the warning.

    Returns:
        AnchorCheck, or None when off or not applicable.

    Raises:
        AnchorRecallError: in ``refuse`` mode, recall below ``refuse_below``; the message says what to change and
            that ``--anchor-check warn`` trains anyway.
        ValueError: an unknown ``mode``.
    """
    if mode not in ANCHOR_CHECK_MODES:
        raise ValueError(f'anchor check mode must be one of {ANCHOR_CHECK_MODES}, got {mode!r}')
    if mode == 'off':
        return None
    found = measure_anchor_recall(cfg, dataset, max_images=max_images)
    if found is None:
        return None
    if found.recall >= warn_below:
        if logger is not None:
            logger.info(found.summary())
        return found
    advice = ('Anchors for small objects (configs/_base_/anchors/isaid_stride_adjusted.py, or a fragment of '
              'tools/anchor_search.py), a larger input scale, or a lower train_cfg.rpn.assigner.pos_iou_thr fix it')
    if found.recall < refuse_below:
        message = (f'{found.summary()}: the RPN will see (almost) no positive anchor and loss_rpn_bbox stays ~0. '
                   f'Boxes {found.unmatched(refuse_below)}. {advice}')
        if mode == 'refuse':
            raise AnchorRecallError(message + '; --anchor-check warn trains anyway.')
    else:
        message = f'{found.summary()}. Boxes {found.unmatched(warn_below)}. {advice}.'
    if logger is not None:
        logger.warning(message)
    return found
