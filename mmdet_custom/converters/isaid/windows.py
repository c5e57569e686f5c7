"""The devkit's sliding windows and patch names (iSAID devkit ``preprocess/split.py``)."""
import os.path as osp
import re
from typing import List, Tuple, Union

from .common import Window


def _axis_starts(length: int, patch_size: int, stride: int) -> List[int]:
    # the devkit tries 0, s, 2s, ... < length and shifts a window that crosses the border back inside; the distinct
    # starts are those below length - patch_size, then length - patch_size
    starts = list(range(0, length - patch_size, stride))
    starts.append(length - patch_size)
    return starts


def keeps_whole(height: int, width: int, patch_size: int = 800) -> bool:
    """Whether the devkit keeps an image whole instead of cutting it: when a side is ``<= patch_size``.

    The devkit's ``split.py`` cuts an image only when ``img_H > 800 and img_W > 800`` (800 written literally, its
    default patch size) and otherwise copies it unchanged under its own name; we compare with ``patch_size``, which
    is the same rule at the default 800.
    """
    return height <= patch_size or width <= patch_size


def sliding_windows(height: int, width: int, patch_size: int = 800, overlap: int = 200) -> List[Window]:
    """Windows of the devkit's sliding-window patching of a ``height x width`` image.

    An image with a side of at most ``patch_size`` pixels is kept whole: one window, the whole image (the devkit's
    rule, see :func:`keeps_whole`), however long its other side. Otherwise, along each axis windows start at
    ``0, s, 2s, ...`` with stride ``s = patch_size - overlap`` until one reaches the border; that last window is
    shifted back to end exactly at the border (so it overlaps its neighbour by at least ``overlap``). Windows made
    identical by the shift are listed once (the devkit skips writing a patch file that exists).

    Args:
        height (int): image height in pixels.
        width (int): image width in pixels.
        patch_size (int): window side in pixels. Defaults to 800.
        overlap (int): overlap of neighbouring windows in pixels, ``0 <= overlap < patch_size``. Defaults to 200.

    Returns:
        list[tuple[int, int, int, int]]: ``(y0, y1, x0, x1)`` per window, half-open pixel ranges
        ``rows y0:y1, columns x0:x1``, ordered by ``y0`` then ``x0``.

    Raises:
        ValueError: if a size is not positive or ``overlap`` is not in ``[0, patch_size)``.

    Example:
        >>> sliding_windows(977, 884)
        [(0, 800, 0, 800), (0, 800, 84, 884), (177, 977, 0, 800), (177, 977, 84, 884)]
        >>> sliding_windows(500, 1000, patch_size=800)  # a side <= 800: kept whole
        [(0, 500, 0, 1000)]
    """
    for name, value in (('height', height), ('width', width), ('patch_size', patch_size)):
        if int(value) != value or value <= 0:
            raise ValueError(f'{name} must be a positive integer, got {value!r}')
    if int(overlap) != overlap or not 0 <= overlap < patch_size:
        raise ValueError(f'overlap must be an integer in [0, patch_size={patch_size}), got {overlap!r}')
    if keeps_whole(height, width, patch_size):
        return [(0, height, 0, width)]
    stride = patch_size - overlap
    ys = _axis_starts(height, patch_size, stride)
    xs = _axis_starts(width, patch_size, stride)
    return [(y, y + patch_size, x, x + patch_size) for y in ys for x in xs]


def patch_file_name(image_path: str, window: Window, whole: bool) -> str:
    """The devkit's name of a patch: ``Pxxxx_{y0}_{y1}_{x0}_{x1}.png``, or ``Pxxxx.png`` for an image kept whole."""
    stem = osp.splitext(osp.basename(image_path))[0]
    return f'{stem}.png' if whole else '{}_{}_{}_{}_{}.png'.format(stem, *window)


def natural_key(name: str) -> Tuple[Union[str, int], ...]:
    """Sort key of natural order (digit runs compared as numbers), the ``natsort`` order the devkit lists files in."""
    return tuple(int(part) if k % 2 else part for k, part in enumerate(re.split(r'(\d+)', name)))
