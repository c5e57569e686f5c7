"""Pieces shared by the iSAID converter's modules: its error type, the devkit's constants, the test pause hook."""
import os
import sys
import time
from typing import Tuple, Union

from mmdet_custom.utils.errors import UserError

PathLike = Union[str, os.PathLike]
#: ``(y0, y1, x0, x1)``: rows ``y0:y1`` and columns ``x0:x1`` of the full image (half-open, pixels).
Window = Tuple[int, int, int, int]

#: Images the devkit's ``preprocess/split.py`` never patches (its hard-coded skip list).
DEVKIT_SKIP_IMAGES = ('P1527', 'P1530')
#: The devkit's ``preprocess/preprocess.py`` keeps an instance only if its area (pixel count in the patch) is above
#: this many pixels.
DEVKIT_AREA_THRESHOLD = 10
#: Splits the devkit knows; without ``splits`` the converter takes those present under the raw root.
DEFAULT_SPLITS = ('train', 'val', 'test')
#: Splits that hold images only (no masks, no json): their json lists the patches with no annotations.
IMAGE_ONLY_SPLITS = ('test', )
#: The only split our optional filters (``max_boxes``, ``max_empty_fraction``) apply to.
FILTERED_SPLIT = 'train'
#: Mask definitions: ``'devkit'`` traces polygons as the devkit does, ``'exact'`` rasterises back to the pixels.
MASK_MODES = ('devkit', 'exact')

#: Environment variable of the test hook: the converter stops (sleeps) at the named point so that a test can kill
#: it there (see :func:`pause_point`). Points: ``'<split>:patches_written'`` (that split's patches written to the
#: temporary output, its json not yet), ``'before_swap'`` (everything written, not yet swapped in).
PAUSE_ENV = 'MMDET_CUSTOM_ISAID_PAUSE_AT'


class ISAIDConversionError(UserError, ValueError):
    """Bad input data or arguments for the iSAID converter: a missing or unreadable file, a colour of no class,
    mismatched sizes, a json whose fields are malformed or name an unknown category, an output folder that overlaps
    the input. The message names the file (and pixel, annotation or field). Command lines print it alone and exit
    with code 2; it is also a ``ValueError`` for callers that catch that."""


def pause_point(name: str) -> None:
    """Test hook: when ``$MMDET_CUSTOM_ISAID_PAUSE_AT == name``, say so on stderr and sleep until killed."""
    if os.environ.get(PAUSE_ENV) == name:
        print(f'{PAUSE_ENV}: paused at {name}', file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
