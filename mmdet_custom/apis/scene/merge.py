"""Detections of a whole scene, kept compact, and the merge of duplicates across window overlaps.

Masks are stored as COCO RLE of the mask cropped to its own extent, plus that extent in scene pixels: memory grows
with the objects' areas, never with the scene's (a full-scene dense mask of a 20,000 x 20,000 px scene is 400 MB
per object). Full-scene RLE (what COCO results need) is built from the crop's runs directly, see :func:`scene_rle`.

The merge rule (:func:`merge_scene_detections`), per class and only between detections of *different* windows
(duplicates inside one window are the model's own NMS's business):

1. Candidate pairs are boxes that intersect, found with a shapely ``STRtree`` (an R-tree), so the work grows with
   the number of detections and their local density, not with its square.
2. A pair is compared *only where both windows looked*: both masks are restricted to the intersection of the two
   windows, and the pair matches when the IoU (``match='iou'``) or the intersection over the smaller
   (``match='ios'``) of the restricted masks reaches ``match_thr``. An object seen whole by window A and cut by
   window B's border is identical in A∩B, whatever share of it B saw. Without masks, boxes are used the same way.
3. A detection is *cut* when its extent reaches an inner window border (a window edge that is not the scene edge)
   within ``border_margin`` px. Detections are visited whole-first, then by decreasing score. A whole detection
   that is kept suppresses the detections matched to it (the object keeps the mask of the window that holds it
   whole). A cut detection that is kept (no window saw the object whole: it is larger than the overlap) absorbs the
   cut detections matched to it, transitively: masks and boxes are unioned, the score is the highest.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from .reader import SceneSettingError

MATCH_METRICS = ('iou', 'ios')


# ----------------------------------------------------------------------------------------------------------------
# Compact masks
# ----------------------------------------------------------------------------------------------------------------
def encode_crops(masks: np.ndarray, indices: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, List[bytes]]:
    """Crop each mask to its extent and RLE-encode the crop.

    Args:
        masks (np.ndarray): (N, H, W) bool masks in window pixels.
        indices (Sequence[int], optional): encode only these masks, in this order (no copy of the others).

    Returns:
        tuple: ``extents`` (M, 4) int64 ``x0, y0, x1, y1`` (exclusive ends; all zero for an empty mask) and
        ``counts``, the M crops' compressed COCO RLE strings (bytes; ``b''`` for an empty mask).
    """
    indices = range(len(masks)) if indices is None else indices
    extents = np.zeros((len(indices), 4), dtype=np.int64)
    counts: List[bytes] = []
    for row, k in enumerate(indices):
        mask = masks[k]  # a view: one (H, W) mask at a time, never a copy of the stack
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        if len(cols) == 0:
            counts.append(b'')
            continue
        x0, y0, x1, y1 = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1
        extents[row] = x0, y0, x1, y1
        counts.append(mask_utils.encode(np.asfortranarray(mask[y0:y1, x0:x1], dtype=np.uint8))['counts'])
    return extents, counts


def decode_crop(extent: Sequence[int], counts: bytes) -> np.ndarray:
    """The (y1 - y0, x1 - x0) bool crop of one mask (see :func:`encode_crops`)."""
    x0, y0, x1, y1 = (int(v) for v in extent)
    if not counts:
        return np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=bool)
    return mask_utils.decode({'size': [y1 - y0, x1 - x0], 'counts': counts}).astype(bool)


def scene_rle(extent: Sequence[int], counts: bytes, height: int, width: int) -> dict:
    """The full-scene COCO RLE (``{'size': [H, W], 'counts': str}``) of a cropped mask, without a dense scene array.

    COCO RLE runs go down the columns (Fortran order). Runs of ones are found per crop column and placed at
    ``(x0 + column) * H + y0 + row``; runs that continue into the next column are joined. The work is
    O(crop area), not O(H * W).
    """
    crop = decode_crop(extent, counts)
    x0, y0 = int(extent[0]), int(extent[1])
    total = int(height) * int(width)
    if crop.size == 0 or not crop.any():
        runs = [total]
    else:
        h, w = crop.shape
        padded = np.zeros((w, h + 2), dtype=np.int8)
        padded[:, 1:-1] = crop.T
        step = np.diff(padded, axis=1)
        cs, rs = np.nonzero(step == 1)
        ce, re = np.nonzero(step == -1)
        starts = (x0 + cs).astype(np.int64) * height + y0 + rs
        ends = (x0 + ce).astype(np.int64) * height + y0 + re
        join = starts[1:] == ends[:-1]
        starts = np.concatenate([starts[:1], starts[1:][~join]])
        ends = np.concatenate([ends[:-1][~join], ends[-1:]])
        bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
        bounds[0], bounds[-1] = 0, total
        bounds[1:-1:2], bounds[2:-1:2] = starts, ends
        runs = np.diff(bounds)
        runs = (runs[:-1] if runs[-1] == 0 else runs).tolist()  # no empty final run, as pycocotools' encode
    rle = mask_utils.frPyObjects({'size': [int(height), int(width)], 'counts': runs}, int(height), int(width))
    return {'size': [int(height), int(width)], 'counts': rle['counts'].decode('ascii')}


# ----------------------------------------------------------------------------------------------------------------
# The detections of one scene
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SceneDetections:
    """Detections of one scene in scene pixels, one row per detection (a column store).

    Attributes:
        height, width (int): scene size in pixels.
        windows (np.ndarray): (K, 4) windows ``x0, y0, x1, y1`` the scene was cut into.
        bboxes (np.ndarray): (N, 4) float32 predicted boxes ``x0, y0, x1, y1``.
        scores (np.ndarray): (N,) float32.
        labels (np.ndarray): (N,) int64 class indices of the model.
        window_ids (np.ndarray): (N,) int64 index of the window each detection came from.
        cut (np.ndarray): (N,) bool: the detection reaches an inner border of its window.
        extents (np.ndarray | None): (N, 4) int64 mask extents (see :func:`encode_crops`); None for a box-only model.
        counts (list[bytes] | None): crop RLE strings, or None for a box-only model.
    """
    height: int
    width: int
    windows: np.ndarray
    bboxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    window_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cut: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    extents: Optional[np.ndarray] = None
    counts: Optional[List[bytes]] = None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def with_masks(self) -> bool:
        return self.counts is not None

    def areas(self) -> np.ndarray:
        """(N,) mask areas in pixels (box areas for a box-only model)."""
        if not self.with_masks:
            return np.prod(np.clip(self.bboxes[:, 2:] - self.bboxes[:, :2], 0, None), axis=1)
        return np.array([int(mask_utils.area({'size': [int(e[3] - e[1]), int(e[2] - e[0])], 'counts': c}))
                         if c else 0 for e, c in zip(self.extents, self.counts)], dtype=np.int64)

    def select(self, keep: np.ndarray) -> 'SceneDetections':
        """A copy with the rows ``keep`` (indices)."""
        keep = np.asarray(keep, dtype=np.int64)
        return SceneDetections(
            self.height, self.width, self.windows, self.bboxes[keep], self.scores[keep], self.labels[keep],
            self.window_ids[keep], self.cut[keep], None if self.extents is None else self.extents[keep],
            None if self.counts is None else [self.counts[i] for i in keep])


class SceneDetectionsBuilder:
    """Collects the detections of each window, shifted to scene pixels, into :class:`SceneDetections`.

    Args:
        height, width (int): scene size in pixels.
        windows (np.ndarray): (K, 4) windows (see :func:`~.reader.scene_windows`).
        border_margin (int): a detection whose extent comes within this many pixels of an inner window border is
            *cut*. Defaults to 2.
        score_thr (float): detections below this score are dropped. Defaults to 0.
        max_per_window (int): at most this many detections (highest scores) per window: the iSAID
            1000-detections-per-image budget applies per window, never per scene. Defaults to 1000.
    """

    def __init__(self, height: int, width: int, windows: np.ndarray, border_margin: int = 2, score_thr: float = 0.0,
                 max_per_window: int = 1000):
        self.height, self.width = int(height), int(width)
        self.windows = np.asarray(windows, dtype=np.int64)
        self.border_margin = border_margin
        self.score_thr = score_thr
        self.max_per_window = max_per_window
        self._parts: List[dict] = []
        self._with_masks: Optional[bool] = None
        self.num_raw = 0

    def add(self, window_id: int, bboxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
            masks: Optional[np.ndarray] = None) -> None:
        """Add one window's predictions, in that window's pixels.

        Args:
            window_id (int): index into ``windows``.
            bboxes (np.ndarray): (N, 4) ``x0, y0, x1, y1`` in window pixels.
            scores (np.ndarray): (N,).
            labels (np.ndarray): (N,) class indices.
            masks (np.ndarray, optional): (N, h, w) bool masks of the window's size; None for a box-only model.

        Raises:
            ValueError: masks present in some windows and absent in others, or of the wrong size.
        """
        bboxes = np.asarray(bboxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.num_raw += len(scores)
        with_masks = masks is not None
        if self._with_masks is None:
            self._with_masks = with_masks
        elif self._with_masks != with_masks:
            raise ValueError('the model returned masks for some windows and not for others')
        wx0, wy0, wx1, wy1 = self.windows[window_id]
        keep = np.nonzero(scores >= self.score_thr)[0]
        keep = keep[np.argsort(-scores[keep], kind='stable')][:self.max_per_window]
        part = dict(bboxes=bboxes[keep] + np.array([wx0, wy0, wx0, wy0], np.float32), scores=scores[keep],
                    labels=labels[keep], window_ids=np.full(len(keep), window_id, np.int64))
        if with_masks:
            if masks.shape[1:] != (wy1 - wy0, wx1 - wx0):
                raise ValueError(f'masks of window {window_id} are {tuple(masks.shape[1:])}, the window is '
                                 f'{(wy1 - wy0, wx1 - wx0)} (h, w)')
            extents, counts = encode_crops(masks, keep)
            empty = extents[:, 2] == 0
            extents = extents + np.array([wx0, wy0, wx0, wy0])
            extents[empty] = 0
            part.update(extents=extents, counts=counts)
            reach = np.where(empty[:, None], part['bboxes'], extents)
        else:
            reach = part['bboxes']
        m = self.border_margin
        part['cut'] = (((reach[:, 0] <= wx0 + m) & (wx0 > 0)) | ((reach[:, 1] <= wy0 + m) & (wy0 > 0))
                       | ((reach[:, 2] >= wx1 - m) & (wx1 < self.width))
                       | ((reach[:, 3] >= wy1 - m) & (wy1 < self.height)))
        self._parts.append(part)

    def build(self) -> SceneDetections:
        """All detections added so far."""
        dets = SceneDetections(self.height, self.width, self.windows)
        if not self._parts:
            if self._with_masks:
                dets.extents, dets.counts = np.zeros((0, 4), np.int64), []
            return dets
        cat = {k: np.concatenate([p[k] for p in self._parts]) for k in ('bboxes', 'scores', 'labels', 'window_ids',
                                                                        'cut')}
        dets.bboxes, dets.scores, dets.labels = cat['bboxes'], cat['scores'], cat['labels']
        dets.window_ids, dets.cut = cat['window_ids'], cat['cut']
        if self._with_masks:
            dets.extents = np.concatenate([p['extents'] for p in self._parts]).astype(np.int64)
            dets.counts = [c for p in self._parts for c in p['counts']]
        return dets


# ----------------------------------------------------------------------------------------------------------------
# Merging duplicates
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class MergeStats:
    """What a merge did: detection counts before and after, pairs tested by mask and matched, rows removed."""
    before: int = 0
    after: int = 0
    candidate_pairs: int = 0
    matched_pairs: int = 0
    suppressed: int = 0
    unioned: int = 0

    def as_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)


def _intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])])


class _MaskCache:
    """Decoded crops, decoded once each while their pairs are tested (bounded: oldest dropped first)."""

    def __init__(self, dets: SceneDetections, size: int = 4096):
        self.dets, self.size, self.store = dets, size, {}

    def __call__(self, i: int) -> np.ndarray:
        crop = self.store.get(i)
        if crop is None:
            if len(self.store) >= self.size:
                self.store.pop(next(iter(self.store)))
            crop = self.store[i] = decode_crop(self.dets.extents[i], self.dets.counts[i])
        return crop


def _pixels(region: np.ndarray, extent: np.ndarray, crop: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """The part of a crop inside ``region`` (scene pixels), or None when they do not overlap."""
    r = _intersect(region, extent)
    if r[2] <= r[0] or r[3] <= r[1]:
        return None
    if crop is None:  # a box: all ones
        return np.ones((int(r[3] - r[1]), int(r[2] - r[0])), dtype=bool)
    return crop[int(r[1] - extent[1]):int(r[3] - extent[1]), int(r[0] - extent[0]):int(r[2] - extent[0])]


def pair_overlap(dets: SceneDetections, i: int, j: int, metric: str = 'iou', masks=None) -> float:
    """IoU or intersection-over-smaller of detections ``i`` and ``j`` inside the intersection of their windows.

    Args:
        dets (SceneDetections): the detections.
        i, j (int): two rows.
        metric (str): ``'iou'`` or ``'ios'``.
        masks (callable, optional): ``masks(k)`` -> decoded crop of row ``k`` (a cache); decoded here when None.

    Returns:
        float: in [0, 1]; 0 when either restricted mask is empty.
    """
    region = _intersect(dets.windows[dets.window_ids[i]], dets.windows[dets.window_ids[j]])
    if dets.with_masks:
        get = masks or (lambda k: decode_crop(dets.extents[k], dets.counts[k]))
        ext_i, ext_j = dets.extents[i], dets.extents[j]
        crop_i, crop_j = get(i), get(j)
    else:  # boxes, rounded outwards to whole pixels
        ext_i = np.concatenate([np.floor(dets.bboxes[i, :2]), np.ceil(dets.bboxes[i, 2:])]).astype(np.int64)
        ext_j = np.concatenate([np.floor(dets.bboxes[j, :2]), np.ceil(dets.bboxes[j, 2:])]).astype(np.int64)
        crop_i = crop_j = None
    part_i, part_j = _pixels(region, ext_i, crop_i), _pixels(region, ext_j, crop_j)
    if part_i is None or part_j is None:
        return 0.0
    area_i, area_j = int(part_i.sum()), int(part_j.sum())
    if area_i == 0 or area_j == 0:
        return 0.0
    both = _intersect(_intersect(region, ext_i), _intersect(region, ext_j))
    if both[2] <= both[0] or both[3] <= both[1]:
        return 0.0
    inter = int(np.count_nonzero(_pixels(both, ext_i, crop_i) & _pixels(both, ext_j, crop_j)))
    if metric == 'ios':
        return inter / min(area_i, area_j)
    return inter / (area_i + area_j - inter)


def candidate_pairs(dets: SceneDetections) -> np.ndarray:
    """(M, 2) rows ``i < j`` of the same class, from different windows, whose extents intersect (an R-tree query)."""
    import shapely
    if len(dets) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    ext = dets.extents.astype(np.float64) if dets.with_masks else dets.bboxes.astype(np.float64)
    valid = (ext[:, 2] > ext[:, 0]) & (ext[:, 3] > ext[:, 1])
    index = np.nonzero(valid)[0]
    if len(index) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    geoms = shapely.box(ext[index, 0], ext[index, 1], ext[index, 2], ext[index, 3])
    a, b = shapely.STRtree(geoms).query(geoms, predicate='intersects')
    a, b = index[a], index[b]
    sel = (a < b) & (dets.labels[a] == dets.labels[b]) & (dets.window_ids[a] != dets.window_ids[b])
    return np.stack([a[sel], b[sel]], axis=1)


def _union(dets: SceneDetections, rows: List[int]) -> Tuple[np.ndarray, np.ndarray, bytes]:
    """Union of the boxes and masks of ``rows``: (bbox, extent, counts)."""
    bbox = np.concatenate([dets.bboxes[rows, :2].min(axis=0), dets.bboxes[rows, 2:].max(axis=0)])
    if not dets.with_masks:
        return bbox, None, None
    ext = dets.extents[rows]
    ext = ext[(ext[:, 2] > ext[:, 0])]
    if len(ext) == 0:
        return bbox, np.zeros(4, np.int64), b''
    box = np.concatenate([ext[:, :2].min(axis=0), ext[:, 2:].max(axis=0)])
    canvas = np.zeros((int(box[3] - box[1]), int(box[2] - box[0])), dtype=bool)
    for r in rows:
        e = dets.extents[r]
        if e[2] > e[0]:
            canvas[e[1] - box[1]:e[3] - box[1], e[0] - box[0]:e[2] - box[0]] |= decode_crop(e, dets.counts[r])
    return bbox, box, mask_utils.encode(np.asfortranarray(canvas, dtype=np.uint8))['counts']


def check_match(match: str, match_thr: float) -> None:
    """Raise :class:`~.reader.SceneSettingError` for an unknown ``match`` or a threshold outside (0, 1]."""
    if match not in MATCH_METRICS:
        raise SceneSettingError(f'match must be one of {MATCH_METRICS}, got {match!r}')
    if not 0 < match_thr <= 1:
        raise SceneSettingError(f'the match threshold must be in (0, 1], got {match_thr}')


def merge_scene_detections(dets: SceneDetections, match: str = 'iou',
                           match_thr: float = 0.5) -> Tuple[SceneDetections, MergeStats]:
    """Merge duplicates across window overlaps (see the module text for the rule).

    Args:
        dets (SceneDetections): detections of all windows of one scene.
        match (str): ``'iou'`` (mask IoU) or ``'ios'`` (intersection over the smaller mask), both measured inside
            the intersection of the two windows. Defaults to ``'iou'``.
        match_thr (float): a pair matches at this value or above, in (0, 1]. Defaults to 0.5.

    Returns:
        tuple: the merged :class:`SceneDetections` (kept rows in visiting order: whole first, then by score) and
        :class:`MergeStats`.

    Raises:
        SceneSettingError: an unknown ``match`` or a threshold outside (0, 1].
    """
    check_match(match, match_thr)
    stats = MergeStats(before=len(dets))
    pairs = candidate_pairs(dets)
    stats.candidate_pairs = len(pairs)
    masks = _MaskCache(dets) if dets.with_masks else None
    neighbours: Dict[int, List[int]] = {}
    for i, j in pairs:
        if pair_overlap(dets, int(i), int(j), match, masks) >= match_thr:
            neighbours.setdefault(int(i), []).append(int(j))
            neighbours.setdefault(int(j), []).append(int(i))
            stats.matched_pairs += 1
    order = np.lexsort((-dets.scores, dets.cut))  # whole first, then by decreasing score
    done = np.zeros(len(dets), dtype=bool)
    keep: List[int] = []
    unions: Dict[int, List[int]] = {}
    for i in order:
        i = int(i)
        if done[i]:
            continue
        done[i] = True
        keep.append(i)
        if not dets.cut[i]:
            for j in neighbours.get(i, ()):
                if not done[j]:
                    done[j] = True
                    stats.suppressed += 1
            continue
        group, queue = [i], [i]
        while queue:  # a cut object: gather its cut pieces from the other windows, transitively
            for j in neighbours.get(queue.pop(), ()):
                if not done[j] and dets.cut[j]:
                    done[j] = True
                    group.append(j)
                    queue.append(j)
        if len(group) > 1:
            unions[i] = group
            stats.unioned += len(group) - 1
    merged = dets.select(np.array(keep, dtype=np.int64))
    if unions:
        if merged.counts is not None:
            merged.counts = list(merged.counts)
        row_of = {i: r for r, i in enumerate(keep)}
        for i, group in unions.items():
            r = row_of[i]
            bbox, ext, counts = _union(dets, group)
            merged.bboxes[r] = bbox
            merged.scores[r] = dets.scores[group].max()
            if ext is not None:
                merged.extents[r], merged.counts[r] = ext, counts
    stats.after = len(merged)
    return merged, stats
