"""Exact anchor recall: the best IoU of every ground-truth box over a whole grid of anchors.

An anchor grid in mmdet places every anchor shape ``(w, h)`` of level ``l`` at the centres
``(i * stride + offset, j * stride + offset)``, ``i in range(ceil(W_pad / stride))``, ``j in range(ceil(H_pad /
stride))`` (the RPN's valid anchors of a padded input of ``H_pad x W_pad`` pixels, with ``allowed_border=-1``).
For a box and one anchor shape, the overlap along x of an anchor centred at ``c`` is
``max(0, min(bw, w, (bw + w) / 2 - |c - bx|))``: it depends on ``|c - bx|`` only and never grows with it, and
the same holds along y. The IoU ``I / (A_box + A_anchor - I)`` grows with the intersection ``I = ox * oy``, so
its maximum over the grid is attained at the grid centre nearest the box centre on each axis separately. The
exact maximum therefore costs O(boxes x anchor shapes) instead of O(boxes x anchors); both paths below evaluate
the IoU as mmdet's ``bbox_overlaps`` does (eps = 1e-6) and agree to floating-point rounding (~1e-15).
"""
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmdet_custom.evaluation.functional.coco_eval import PROTOCOLS

#: mmdet's ``bbox_overlaps`` clamps the union to this value.
IOU_EPS = 1e-6
#: COCO size buckets by box area in network-input pixels: small < 32**2 <= medium < 96**2 <= large.
SIZE_BUCKETS = (('small', 0., float(PROTOCOLS['coco'].area_ranges[2][0])),
                ('medium', float(PROTOCOLS['coco'].area_ranges[2][0]), float(PROTOCOLS['coco'].area_ranges[3][0])),
                ('large', float(PROTOCOLS['coco'].area_ranges[3][0]), math.inf))


@dataclass(frozen=True)
class AnchorSetting:
    """Anchors of an RPN in the terms of ``PerLevelAnchorGenerator``.

    Args:
        strides (tuple[int]): Stride of each level, in pixels.
        sizes (tuple[tuple[float]]): Anchor sizes (square root of the area, pixels) of each level.
        ratios (tuple[float]): Height / width ratios shared by all levels.
        center_offset (float): Centre offset in proportion to the stride (mmdet's ``center_offset``).
    """

    strides: Tuple[int, ...]
    sizes: Tuple[Tuple[float, ...], ...]
    ratios: Tuple[float, ...]
    center_offset: float = 0.

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.strides):
            raise ValueError(f'AnchorSetting: {len(self.sizes)} size lists for {len(self.strides)} strides.')
        if len(self.ratios) == 0 or min(self.ratios) <= 0:
            raise ValueError(f'AnchorSetting: ratios must be positive and non-empty, got {self.ratios}.')
        if any(len(s) == 0 or min(s) <= 0 for s in self.sizes):
            raise ValueError(f'AnchorSetting: every level needs positive sizes, got {self.sizes}.')

    @property
    def num_levels(self) -> int:
        """int: number of feature levels."""
        return len(self.strides)

    def level_shapes(self, level: int) -> Tuple[np.ndarray, np.ndarray]:
        """Widths and heights (pixels, float64) of the anchors of one level, in mmdet's order.

        ``w = size / sqrt(ratio)``, ``h = size * sqrt(ratio)``, ratio-major then size (``scale_major=True``).
        """
        h_ratios = np.sqrt(np.asarray(self.ratios, dtype=np.float64))
        sizes = np.asarray(self.sizes[level], dtype=np.float64)
        ws = ((1. / h_ratios)[:, None] * sizes[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
        return ws, hs

    @property
    def num_shapes(self) -> int:
        """int: number of anchor shapes over all levels."""
        return sum(len(s) for s in self.sizes) * len(self.ratios)

    def generator_cfg(self) -> dict:
        """The ``anchor_generator`` config dict that builds exactly these anchors."""
        cfg = dict(type='PerLevelAnchorGenerator', strides=[int(s) for s in self.strides],
                   sizes=[[_plain_number(v) for v in s] for s in self.sizes],
                   ratios=[_plain_number(r) for r in self.ratios])
        if self.center_offset:
            cfg['center_offset'] = float(self.center_offset)
        return cfg

    def describe_sizes(self) -> List[str]:
        """Sizes of each level as ``'8/16'`` strings, for tables."""
        return ['/'.join(f'{v:g}' for v in s) for s in self.sizes]


def _plain_number(value: float):
    """``16.0 -> 16`` and ``0.5 -> 0.5``, so that written configs read naturally."""
    value = float(value)
    return int(value) if value.is_integer() else round(value, 6)


def level_name(stride: int) -> str:
    """FPN level name of a stride: 4 -> 'P2', 64 -> 'P6'."""
    exponent = math.log2(stride)
    return f'P{int(exponent)}' if exponent.is_integer() else f's{stride}'


def grid_counts(img_shapes: np.ndarray, stride: int) -> np.ndarray:
    """Number of anchor centres per axis, ``ceil(padded size / stride)``, shape (N, 2) as (rows, cols)."""
    return -(-np.asarray(img_shapes, dtype=np.int64) // int(stride))


def _check_boxes(boxes: np.ndarray, img_shapes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    boxes = np.ascontiguousarray(boxes, dtype=np.float64)
    img_shapes = np.asarray(img_shapes, dtype=np.int64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes must have shape (N, 4) (x1, y1, x2, y2), got {boxes.shape}.')
    if img_shapes.ndim == 1:
        img_shapes = np.broadcast_to(img_shapes, (len(boxes), 2))
    if img_shapes.shape != (len(boxes), 2):
        raise ValueError(f'img_shapes must have shape (2,) or (N, 2) (h, w), got {img_shapes.shape}.')
    if len(boxes) and img_shapes.min() <= 0:
        raise ValueError('img_shapes must be positive.')
    return boxes, img_shapes


def max_iou_exact(boxes: np.ndarray,
                  img_shapes: np.ndarray,
                  anchors: AnchorSetting,
                  chunk_size: int = 16384,
                  num_threads: int = 1) -> np.ndarray:
    """Best IoU of every box over all anchors of the grid, in O(boxes x anchor shapes).

    For each level the nearest grid centre to the box centre is found per axis (``round((b - offset) /
    stride)`` clamped to the grid; on a tie both centres are equally far and give the same overlap), then the
    IoU with every anchor shape of the level centred there is evaluated, as mmdet's ``bbox_overlaps`` does.

    Args:
        boxes (np.ndarray): (N, 4) boxes, xyxy in network-input pixels.
        img_shapes (np.ndarray): (N, 2) or (2,) padded input shape (h, w) of each box's image, in pixels; it
            sets the grid extent ``ceil(size / stride)`` of every level.
        anchors (AnchorSetting): The anchors.
        chunk_size (int): Boxes per vectorised block (bounds memory to ~12 arrays of this length).
        num_threads (int): Threads over blocks (numpy releases the GIL). Defaults to 1 (one block of 16k
            boxes x 24 shapes takes ~2 ms, so threads only pay off on idle many-core machines).

    Returns:
        np.ndarray: (N,) float64 max IoU in [0, 1].
    """
    boxes, img_shapes = _check_boxes(boxes, img_shapes)
    out = np.zeros(len(boxes), dtype=np.float64)
    starts = range(0, len(boxes), chunk_size)
    level_data = []
    for level, stride in enumerate(anchors.strides):
        ws, hs = anchors.level_shapes(level)
        base_centre = anchors.center_offset * stride   # mmdet: center_offset x base size (= stride)
        # base anchors as mmdet builds them: centre +- half size, then shifted by k * stride
        level_data.append((float(stride), base_centre, base_centre - 0.5 * ws, base_centre + 0.5 * ws,
                           base_centre - 0.5 * hs, base_centre + 0.5 * hs, ws * hs))

    def run(start: int) -> None:
        sl = slice(start, min(start + chunk_size, len(boxes)))
        _max_iou_block(boxes[sl], img_shapes[sl], level_data, out[sl])

    if num_threads <= 1 or len(starts) == 1:
        for start in starts:
            run(start)
    else:
        with ThreadPoolExecutor(num_threads) as pool:
            list(pool.map(run, starts))
    return out


def _max_iou_block(boxes: np.ndarray, img_shapes: np.ndarray, level_data: list, out: np.ndarray) -> None:
    """Fill ``out`` with the max IoU of ``boxes`` (one block) over all levels and shapes."""
    n = len(boxes)
    bx1, by1, bx2, by2 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
    box_area = (bx2 - bx1) * (by2 - by1)
    cx = (bx1 + bx2) * 0.5
    cy = (by1 + by2) * 0.5
    shift_x, shift_y = np.empty(n), np.empty(n)
    t1, t2, t3, t4 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    for stride, base_centre, ax1s, ax2s, ay1s, ay2s, areas in level_data:
        counts = grid_counts(img_shapes, int(stride))
        for centre, count, shift in ((cx, counts[:, 1], shift_x), (cy, counts[:, 0], shift_y)):
            # nearest centre k * stride + base_centre, k clamped to [0, count - 1]; shift = k * stride
            np.subtract(centre, base_centre, out=shift)
            np.divide(shift, stride, out=shift)
            np.rint(shift, out=shift)
            np.clip(shift, 0, count - 1, out=shift)
            np.multiply(shift, stride, out=shift)
        for ax1, ax2, ay1, ay2, area in zip(ax1s, ax2s, ay1s, ay2s, areas):
            # overlap along x: min(x2) - max(x1), clamped at 0 (mmdet's bbox_overlaps)
            np.add(shift_x, ax1, out=t1)
            np.maximum(t1, bx1, out=t1)
            np.add(shift_x, ax2, out=t2)
            np.minimum(t2, bx2, out=t2)
            np.subtract(t2, t1, out=t2)
            np.maximum(t2, 0., out=t2)
            np.add(shift_y, ay1, out=t1)
            np.maximum(t1, by1, out=t1)
            np.add(shift_y, ay2, out=t3)
            np.minimum(t3, by2, out=t3)
            np.subtract(t3, t1, out=t3)
            np.maximum(t3, 0., out=t3)
            np.multiply(t2, t3, out=t2)            # intersection
            np.add(box_area, area, out=t4)
            np.subtract(t4, t2, out=t4)            # union
            np.maximum(t4, IOU_EPS, out=t4)
            np.divide(t2, t4, out=t2)
            np.maximum(out, t2, out=out)


def grid_anchors(img_shape: Sequence[int], anchors: AnchorSetting, level: int) -> np.ndarray:
    """All anchors (K * A, 4) of one level for a padded input of ``img_shape`` (h, w), in mmdet's order.

    Same layout as ``AnchorGenerator.single_level_grid_priors``: location-major (row by row), then the A
    anchor shapes of a location; float64.
    """
    stride = anchors.strides[level]
    ws, hs = anchors.level_shapes(level)
    base_centre = anchors.center_offset * stride
    base = np.stack([base_centre - 0.5 * ws, base_centre - 0.5 * hs,
                     base_centre + 0.5 * ws, base_centre + 0.5 * hs], axis=-1)
    rows, cols = grid_counts(np.asarray(img_shape), stride)
    sx = np.arange(cols, dtype=np.float64) * stride
    sy = np.arange(rows, dtype=np.float64) * stride
    xx = np.tile(sx, rows)
    yy = np.repeat(sy, cols)
    shifts = np.stack([xx, yy, xx, yy], axis=-1)
    return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)


def max_iou_brute_force(boxes: np.ndarray,
                        img_shapes: np.ndarray,
                        anchors: AnchorSetting,
                        max_elements: int = 1 << 22) -> np.ndarray:
    """Reference: best IoU of every box against every anchor of the grid, O(boxes x anchors).

    Args and return as :func:`max_iou_exact`; ``max_elements`` bounds the size of one IoU block.
    """
    boxes, img_shapes = _check_boxes(boxes, img_shapes)
    out = np.zeros(len(boxes), dtype=np.float64)
    if len(boxes) == 0:
        return out
    shapes, inverse = np.unique(img_shapes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for shape_idx, shape in enumerate(shapes):
        idx = np.flatnonzero(inverse == shape_idx)
        for level in range(anchors.num_levels):
            grid = grid_anchors(shape, anchors, level)
            ax1, ay1, ax2, ay2 = grid.T
            anchor_area = (ax2 - ax1) * (ay2 - ay1)
            step = max(1, max_elements // len(grid))
            for start in range(0, len(idx), step):
                b = boxes[idx[start:start + step]]
                bx1, by1, bx2, by2 = (b[:, i:i + 1] for i in range(4))
                iw = np.maximum(np.minimum(bx2, ax2) - np.maximum(bx1, ax1), 0.)
                ih = np.maximum(np.minimum(by2, ay2) - np.maximum(by1, ay1), 0.)
                inter = iw * ih
                union = np.maximum((bx2 - bx1) * (by2 - by1) + anchor_area - inter, IOU_EPS)
                best = (inter / union).max(axis=1)
                sel = idx[start:start + step]
                out[sel] = np.maximum(out[sel], best)
    return out


def recall_table(max_ious: np.ndarray,
                 thresholds: Sequence[float],
                 labels: Optional[np.ndarray] = None,
                 classes: Optional[Sequence[str]] = None,
                 areas: Optional[np.ndarray] = None) -> Dict[str, Dict[float, float]]:
    """Recall at IoU thresholds: the fraction of boxes whose best anchor IoU is ``>= thr``.

    ``>=`` as mmdet's ``MaxIoUAssigner`` (``max_overlaps >= pos_iou_thr``).

    Args:
        max_ious (np.ndarray): (N,) best anchor IoU of every box.
        thresholds (Sequence[float]): IoU thresholds in [0, 1].
        labels (np.ndarray, optional): (N,) class indices into ``classes``; adds one row per class.
        classes (Sequence[str], optional): class names.
        areas (np.ndarray, optional): (N,) box areas in network-input pixels; adds the COCO size buckets.

    Returns:
        dict: ``{'all': {thr: recall}, '<class>': ..., 'small': ..., 'medium': ..., 'large': ...}``; a row
        also holds ``'num'`` (its box count). Rows without boxes give ``nan`` recalls.
    """
    max_ious = np.asarray(max_ious)
    groups = {'all': np.ones(len(max_ious), dtype=bool)}
    if labels is not None:
        labels = np.asarray(labels)
        names = classes if classes is not None else [str(c) for c in range(int(labels.max(initial=-1)) + 1)]
        for idx, name in enumerate(names):
            groups[name] = labels == idx
    if areas is not None:
        areas = np.asarray(areas)
        for name, low, high in SIZE_BUCKETS:
            groups[name] = (areas >= low) & (areas < high)
    table = {}
    for name, mask in groups.items():
        num = int(mask.sum())
        row = {float(t): (float((max_ious[mask] >= t).mean()) if num else math.nan) for t in thresholds}
        row['num'] = num
        table[name] = row
    return table
