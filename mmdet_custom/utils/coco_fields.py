"""Checks of the numbers in COCO entries (results and annotations): what pycocotools takes without a word.

pycocotools computes with whatever it is given: a NaN score sorts anywhere (all-NaN scores give AP 1.000), a NaN
box has NaN IoU with everything (in the ground truth it "matches" any detection), a box of negative size has a
negative area, and an RLE whose counts do not add up to its ``size`` is decoded out of bounds (it can hang). Each
function returns None when the field is sound, else a short text saying what is wrong, for the caller's message
(which names the file, the entry and the field). Pure Python: importable by every layer.
"""
import math
from numbers import Real
from typing import Any, List, Optional

__all__ = ['number_problem', 'score_problem', 'bbox_problem', 'rle_problem', 'polygons_problem',
           'segmentation_problem', 'rle_counts']


def number_problem(value: Any) -> Optional[str]:
    """None for a finite real number (not a bool), else what it is."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return f'{value!r:.40} is not a number'
    if not math.isfinite(value):
        return f'{value!r} is not a finite number'
    return None


def score_problem(score: Any) -> Optional[str]:
    """None for a finite real score, else what is wrong."""
    return number_problem(score)


def bbox_problem(bbox: Any) -> Optional[str]:
    """None for ``[x, y, w, h]`` of four finite numbers with ``w, h >= 0`` (pixels), else what is wrong."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f'{bbox!r:.60} is not [x, y, w, h]'
    for value in bbox:
        problem = number_problem(value)
        if problem:
            return f'{list(bbox)!r:.80}: {problem}'
    if bbox[2] < 0 or bbox[3] < 0:
        return f'{list(bbox)!r:.80} has a negative width or height'
    return None


def rle_counts(counts: str) -> List[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, in Python).

    Raises:
        ValueError: a character outside pycocotools' alphabet (``'0'`` .. ``'o'``) or a string cut inside a number.
    """
    runs: List[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError('the string ends inside a run length')
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f'character {counts[p]!r} at {p} is not an RLE character')
            x |= (c & 0x1f) << 5 * k
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << 5 * k
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def rle_problem(rle: Any, height: Optional[int] = None, width: Optional[int] = None) -> Optional[str]:
    """None for a COCO RLE whose ``size`` is ``[height, width]`` (when given) and whose run lengths are
    non-negative and add up to ``height * width``; else what is wrong. ``counts`` may be compressed (str) or a list.
    """
    size = rle.get('size') if isinstance(rle, dict) else None
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in size):
        return f'its size {size!r:.40} is not [height, width]'
    if height is not None and list(size) != [height, width]:
        return f'the RLE has size {list(size)}, its image is [{height}, {width}] (height, width)'
    counts = rle.get('counts')
    if isinstance(counts, bytes):
        counts = counts.decode('ascii', errors='replace')
    if isinstance(counts, str):
        try:
            runs = rle_counts(counts)
        except ValueError as e:
            return f'its counts are not a compressed RLE ({e})'
    elif isinstance(counts, list):
        if any(isinstance(v, bool) or not isinstance(v, int) for v in counts):
            return 'its counts are not all integers'
        runs = counts
    else:
        return f'its counts {counts!r:.40} are neither a string nor a list'
    if any(v < 0 for v in runs):
        return 'its counts hold a negative run length'
    total = sum(runs)
    if total != size[0] * size[1]:
        return f'its counts cover {total} pixels, its size {size[0]} x {size[1]} = {size[0] * size[1]}'
    return None


def polygons_problem(polygons: Any) -> Optional[str]:
    """None for a non-empty list of polygons ``[x0, y0, x1, y1, ...]`` of >= 2 points of finite numbers."""
    if not isinstance(polygons, list) or not polygons:
        return f'{polygons!r:.40} is not a list of polygons'
    for j, poly in enumerate(polygons):
        if not isinstance(poly, list) or len(poly) < 4 or len(poly) % 2:
            return f'polygon {j} is not [x0, y0, x1, y1, ...] of at least 2 points'
        for value in poly:
            problem = number_problem(value)
            if problem:
                return f'polygon {j}: {problem}'
    return None


def segmentation_problem(segm: Any, height: Optional[int] = None, width: Optional[int] = None) -> Optional[str]:
    """None for sound polygons or a sound RLE (see :func:`rle_problem`), else what is wrong."""
    if isinstance(segm, dict):
        return rle_problem(segm, height, width)
    return polygons_problem(segm)
