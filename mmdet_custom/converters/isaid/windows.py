"""The devkit's sliding windows and patch names (iSAID devkit ``preprocess/split.py``).

:func:`devkit_windows` is the one implementation of the tiling: the converter cuts training patches with it
(:func:`sliding_windows`, the devkit's small-image rule and patch-name order) and whole-scene inference cuts its
windows with it (:func:`mmdet_custom.apis.scene.reader.scene_windows`, a side shorter than the window is covered by
one window of that side).
"""
import os.path as osp
import re
from typing import List, Tuple, Union

import numpy as np

from .common import Window

#: Small-image rules of :func:`devkit_windows`.
SMALL_IMAGE_RULES = ('whole', 'clip')


def _axis_starts(length: int, patch_size: int, stride: int) -> List[int]:
    # the devkit tries 0, s, 2s, ... < length and shifts a window that crosses the border back inside; the distinct
    # starts are those below length - patch_size, then length - patch_size (0 for a side no longer than a patch)
    starts = list(range(0, length - patch_size, stride))
    starts.append(max(length - patch_size, 0))
    return starts


def keeps_whole(height: int, width: int, patch_size: int = 800) -> bool:
    """Whether the devkit keeps an image whole instead of cutting it: when a side is ``<= patch_size``.

    The devkit's ``split.py`` cuts an image only when ``img_H > 800 and img_W > 800`` (800 written literally, its
    default patch size) and otherwise copies it unchanged under its own name; we compare with ``patch_size``, which
    is the same rule at the default 800.
    """
    return height <= patch_size or width <= patch_size


def devkit_windows(height: int, width: int, window: int = 800, overlap: int = 200,
                   small_image: str = 'whole') -> np.ndarray:
    """Windows of the devkit's sliding-window tiling of a ``height x width`` image.

    Along each axis windows start at ``0, s, 2s, ...`` with stride ``s = window - overlap`` until one reaches the
    border; that last window is shifted back to end exactly at the border (so it overlaps its neighbour by at least
    ``overlap``). Windows made identical by the shift are listed once (the devkit skips writing a patch file that
    exists). Row-major order (ordered by ``y0`` then ``x0``).

    ``small_image`` says what happens to a side of at most ``window`` px:

    - ``'whole'`` (the devkit's ``split.py``, :func:`keeps_whole`): an image with such a side is one window, the
      whole image, however long its other side;
    - ``'clip'`` (whole-scene inference): only that axis gets a single window, as long as the side; the other axis
      is cut as usual (a 500 x 3000 px strip gives 500 x 800 px windows).

    Args:
        height (int): image height in pixels.
        width (int): image width in pixels.
        window (int): window side in pixels. Defaults to 800.
        overlap (int): overlap of neighbouring windows in pixels, ``0 <= overlap < window``. Defaults to 200.
        small_image (str): ``'whole'`` or ``'clip'``, see above. Defaults to ``'whole'``.

    Returns:
        np.ndarray: (K, 4) int64 ``x0, y0, x1, y1`` in image pixels, ``x1``/``y1`` exclusive.

    Raises:
        ValueError: a window or overlap of no tiling (checked first: a bad window is not a bad image), a size that is
            not a positive integer, or an unknown ``small_image``.

    Example:
        >>> devkit_windows(977, 884).tolist()
        [[0, 0, 800, 800], [84, 0, 884, 800], [0, 177, 800, 977], [84, 177, 884, 977]]
        >>> devkit_windows(500, 1000).tolist(), devkit_windows(500, 1000, small_image='clip').tolist()
        ([[0, 0, 1000, 500]], [[0, 0, 800, 500], [200, 0, 1000, 500]])
    """
    if small_image not in SMALL_IMAGE_RULES:
        raise ValueError(f'small_image must be one of {SMALL_IMAGE_RULES}, got {small_image!r}')
    if int(window) != window or window <= 0 or int(overlap) != overlap or not 0 <= overlap < window:
        raise ValueError(f'need window > 0 and 0 <= overlap < window (integers), got window={window!r}, '
                         f'overlap={overlap!r}')
    for name, value in (('height', height), ('width', width)):
        if int(value) != value or value <= 0:
            raise ValueError(f'image size must be positive integers, got {name} {value!r}')
    height, width, window, overlap = int(height), int(width), int(window), int(overlap)
    if small_image == 'whole' and keeps_whole(height, width, window):
        return np.array([[0, 0, width, height]], dtype=np.int64)
    stride = window - overlap
    ys, xs = _axis_starts(height, window, stride), _axis_starts(width, window, stride)
    return np.array([(x, y, min(x + window, width), min(y + window, height)) for y in ys for x in xs],
                    dtype=np.int64).reshape(-1, 4)


def sliding_windows(height: int, width: int, patch_size: int = 800, overlap: int = 200) -> List[Window]:
    """The devkit's patches of a ``height x width`` image: :func:`devkit_windows` with the devkit's small-image rule
    (``'whole'``), in the devkit's patch-name order.

    Args:
        height (int): image height in pixels.
        width (int): image width in pixels.
        patch_size (int): window side in pixels. Defaults to 800.
        overlap (int): overlap of neighbouring windows in pixels, ``0 <= overlap < patch_size``. Defaults to 200.

    Returns:
        list[tuple[int, int, int, int]]: ``(y0, y1, x0, x1)`` per window, half-open pixel ranges
        ``rows y0:y1, columns x0:x1`` (the order of the devkit's patch names), ordered by ``y0`` then ``x0``.

    Raises:
        ValueError: if a size is not positive or ``overlap`` is not in ``[0, patch_size)``.

    Example:
        >>> sliding_windows(977, 884)
        [(0, 800, 0, 800), (0, 800, 84, 884), (177, 977, 0, 800), (177, 977, 84, 884)]
        >>> sliding_windows(500, 1000, patch_size=800)  # a side <= 800: kept whole
        [(0, 500, 0, 1000)]
    """
    windows = devkit_windows(height, width, patch_size, overlap, small_image='whole')
    return [(int(y0), int(y1), int(x0), int(x1)) for x0, y0, x1, y1 in windows]


def patch_file_name(image_path: str, window: Window, whole: bool) -> str:
    """The devkit's name of a patch: ``Pxxxx_{y0}_{y1}_{x0}_{x1}.png``, or ``Pxxxx.png`` for an image kept whole."""
    stem = osp.splitext(osp.basename(image_path))[0]
    return f'{stem}.png' if whole else '{}_{}_{}_{}_{}.png'.format(stem, *window)


def natural_key(name: str) -> Tuple[Union[str, int], ...]:
    """Sort key of natural order (digit runs compared as numbers), the ``natsort`` order the devkit lists files in."""
    return tuple(int(part) if k % 2 else part for k, part in enumerate(re.split(r'(\d+)', name)))
