"""Convert iSAID (official devkit layout) into COCO-format patches for mmdet, by default as the devkit does.

iSAID images are up to ~4000 x 13000 pixels and hold up to thousands of objects, so they are cut into overlapping
patches. By default the output is the official devkit's (CAPTAIN-WHU/iSAID_Devkit ``preprocess/split.py`` then
``preprocess/preprocess.py``; Waqas Zamir et al., iSAID, CVPR-W 2019), the ground truth behind published iSAID
numbers:

* **windows** (:func:`sliding_windows`): 800 x 800, overlap 200 (stride 600), the last window of a row or column
  shifted back inside; an image with a side of 800 px or less is kept whole, under its own name;
* **names**: ``Pxxxx_{y0}_{y1}_{x0}_{x1}.png`` (rows ``y0:y1``, columns ``x0:x1``), ``Pxxxx.png`` when kept whole;
* **instances**: one per non-zero id of the id mask in a patch, its class from the colour mask; images P1527 and
  P1530 skipped; instances of area <= 10 px, or whose contour has a part of <= 2 points, dropped; every patch
  kept (empty ones too);
* **masks** (``masks='devkit'``): the devkit's polygons through boundary-pixel centres (``cv2.findContours``
  ``RETR_EXTERNAL``/``CHAIN_APPROX_NONE``, every external contour a polygon), ``area`` = pixel count, ``bbox`` =
  the polygons' extent + 1 (see :mod:`.masks`). ``masks='exact'`` writes masks that rasterise back to exactly the
  pixels instead (they rasterise ~6.6% larger than the devkit's: segm AP against devkit ground truth is not
  comparable).

Differences from the devkit, on purpose: categories are always ids 1..K by *name* in ``classes`` order (the devkit
lists only the classes present, in order of first appearance); annotation ids start at 1 (pycocotools treats an
annotation id 0 as unmatched), while image ids are the devkit's, 0..N-1 in patch order; the devkit ignores instance
numbers below 1000 (never seen in iSAID) and crashes on a coloured pixel of no class, we keep every non-zero id and
report the file and pixel; 16-bit id masks are read as 16-bit.

Layout read by :func:`convert_isaid`::

    <raw_dir>/<split>/images/Pxxxx.png                      the image (any of .png .jpg .jpeg .tif .tiff .bmp)
    <raw_dir>/<split>/images/Pxxxx_instance_color_RGB.png   class by colour (see ``ISAID_PALETTE``), black = none
    <raw_dir>/<split>/images/Pxxxx_instance_id_RGB.png      instance id = R*65536 + G*256 + B (8 or 16 bits per
                                                            channel, or a grey PNG), 0 = background
    <raw_dir>/<split>/Annotations/iSAID_<split>.json        optional: the official COCO json on the full images
                                                            (also looked for as <split>/iSAID_<split>.json and
                                                            <raw_dir>/iSAID_<split>.json)
    <raw_dir>/test/images/Pxxxx.png                         the test split holds images only

Layout written::

    <out_dir>/<split>/images/<patch name>.png               the patches
    <out_dir>/annotations/instances_<split>.json            COCO json: categories 1..K by name (devkit order),
                                                            polygon (or, with ``rle=True``, RLE) masks, ``area``,
                                                            ``bbox`` ([x, y, w, h])
    <out_dir>/.mmdet_custom_output                          marks the folder as ours (a rerun may replace it)

which ``configs/_base_/datasets/isaid_instance.py`` reads with ``data_root=<out_dir>``,
``ann_file='annotations/instances_<split>.json'`` and ``data_prefix=dict(img='<split>/images/')``. Every image
entry also carries ``source_file`` (the full image's file name) and ``window`` (``[y0, y1, x0, x1]``), for stitching
patch predictions back onto the full image.

The whole ``out_dir`` is written to a sibling folder and swapped in at the end (``atomic_dir``): a failed or killed
run leaves the previous output as it was, never a mix of old patches and a new json. Splits converted earlier and
not named now are kept. An output folder that is, contains or lies inside the input is refused, as is a non-empty
folder this project did not write. Output is deterministic: inputs are sorted (natural order, as the devkit) and
the only randomness (the optional empty-patch filter) is seeded.

Masks may instead come from the official json (``source='json'``; ``'auto'`` prefers it): its polygons are
clipped to each window with shapely; categories are matched by *name* (the official train and val jsons give
different ids to the same class).
"""
from .classes import parse_class_spec, parse_classes, parse_palette
from .common import (
    DEFAULT_SPLITS,
    DEVKIT_AREA_THRESHOLD,
    DEVKIT_SKIP_IMAGES,
    MASK_MODES,
    PAUSE_ENV,
    ISAIDConversionError,
)
from .convert import ConversionSummary, convert_isaid, format_summary
from .masks import devkit_bbox, devkit_polygons, devkit_valid, mask_to_polygons
from .windows import keeps_whole, natural_key, sliding_windows

__all__ = [
    'convert_isaid', 'format_summary', 'ConversionSummary', 'sliding_windows', 'keeps_whole', 'natural_key',
    'ISAIDConversionError', 'parse_class_spec', 'parse_classes', 'parse_palette', 'mask_to_polygons',
    'devkit_polygons', 'devkit_valid', 'devkit_bbox', 'DEFAULT_SPLITS', 'DEVKIT_AREA_THRESHOLD',
    'DEVKIT_SKIP_IMAGES', 'MASK_MODES', 'PAUSE_ENV'
]
