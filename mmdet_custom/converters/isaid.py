"""Convert iSAID (official devkit layout) into COCO-format patches for mmdet.

iSAID images are up to ~4000 x 13000 pixels and hold up to thousands of objects, so they are cut into overlapping
patches as by the official iSAID devkit's preprocessing (Waqas Zamir et al., iSAID, CVPR-W 2019):
800 x 800 windows with an overlap of 200 pixels (stride 600), windows that would cross the border are shifted back
inside, and images smaller than a patch are kept whole (see :func:`sliding_windows`).

Layout read by :func:`convert_isaid`::

    <raw_dir>/<split>/images/Pxxxx.png                      the image (any of .png .jpg .jpeg .tif .tiff .bmp)
    <raw_dir>/<split>/images/Pxxxx_instance_color_RGB.png   class by colour (see ``ISAID_PALETTE``), black = none
    <raw_dir>/<split>/images/Pxxxx_instance_id_RGB.png      instance id = R*65536 + G*256 + B, 0 = background
    <raw_dir>/<split>/Annotations/iSAID_<split>.json        optional: the official COCO json on the full images
                                                            (also looked for as <split>/iSAID_<split>.json and
                                                            <raw_dir>/iSAID_<split>.json)
    <raw_dir>/test/images/Pxxxx.png                         the test split holds images only

Layout written::

    <out_dir>/<split>/images/Pxxxx_{y0}_{y1}_{x0}_{x1}.png   the patches (rows y0:y1, columns x0:x1 of Pxxxx)
    <out_dir>/annotations/instances_<split>.json            COCO json: categories 1..K by name (devkit order),
                                                            polygon (or, with ``rle=True``, RLE) masks,
                                                            ``area`` and ``bbox`` ([x, y, w, h]) of the mask

which ``configs/_base_/datasets/isaid_instance.py`` reads with ``data_root=<out_dir>``,
``ann_file='annotations/instances_<split>.json'`` and ``data_prefix=dict(img='<split>/images/')``. Every image
entry also carries ``source_file`` (the full image's file name) and ``window`` (``[y0, y1, x0, x1]``), for stitching
patch predictions back onto the full image.

Masks come from the PNG pair (instance extent from the id map, class from the colour map) or, when the split has
the official json (``source='auto'`` prefers it), from its polygons clipped to each window with shapely. Json
categories are matched to ``classes`` by *name*: the official train and val jsons give different ids to the same
class. A mask read from the PNGs is written as polygons around its pixels in the patch (every connected part,
holes filled) that ``pycocotools`` rasterises back to exactly those pixels (see :func:`mask_to_polygons`); with
``rle=True`` it is written exactly, holes included. ``area`` and ``bbox`` are those of the rasterised
segmentation, so ``COCO.annToMask`` agrees with them exactly.

Only the ``train`` split is filtered: patches with more than ``max_boxes`` instances are dropped, then empty
patches are kept at random (seeded) up to ``max_empty_fraction`` of the kept patches. Val and test keep every
patch. Output is deterministic: inputs are sorted and the only randomness is seeded. A split is written atomically:
patches go to a temporary folder that replaces ``<split>/images`` at the end and the json to a temporary file that
is ``os.replace``-d last, so a failed split leaves neither its patches nor its json behind (an earlier complete
output of that split stays as it was).
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import shapely
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from mmdet_custom.converters.cells import encode_mask
from mmdet_custom.utils.fileio import dump_json_atomic
from mmdet_custom.datasets.isaid import ISAID_CLASSES, ISAID_PALETTE

PathLike = Union[str, os.PathLike]
Window = Tuple[int, int, int, int]

#: Splits that hold images only (no masks, no json): their json lists the patches with no annotations.
IMAGE_ONLY_SPLITS = ('test', )
#: The only split that is filtered (``max_boxes``, ``max_empty_fraction``).
FILTERED_SPLIT = 'train'

_IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
_COLOR_SUFFIX = '_instance_color_RGB.png'
_ID_SUFFIX = '_instance_id_RGB.png'
_MASK_SUFFIXES = ('_instance_color_RGB', '_instance_id_RGB')
# Polygon vertices are rounded to this many decimals (pixels) in the json.
_DECIMALS = 2


class ISAIDConversionError(ValueError):
    """Raised for bad input data: a missing or unreadable file, a colour of no class, mismatched sizes, a json
    whose fields are malformed or name an unknown category. The message names the file (and pixel or field)."""


# ----------------------------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------------------------
def _axis_starts(length: int, patch_size: int, stride: int) -> List[int]:
    if length <= patch_size:
        return [0]
    starts = []
    start = 0
    while start + patch_size < length:
        starts.append(start)
        start += stride
    starts.append(length - patch_size)  # the last window is shifted back inside the image
    return sorted(set(starts))


def sliding_windows(height: int, width: int, patch_size: int = 800, overlap: int = 200) -> List[Window]:
    """Windows of the devkit's sliding-window patching of a ``height x width`` image.

    Along each axis windows start at ``0, s, 2s, ...`` with stride ``s = patch_size - overlap`` until one reaches
    the border; that last window is shifted back to end exactly at the border (so it overlaps its neighbour by at
    least ``overlap``). An axis not longer than ``patch_size`` gets one window spanning it, so an image smaller
    than a patch is kept whole. Windows made identical by the shift are listed once (the devkit writes duplicates).

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
        >>> sliding_windows(500, 1000, patch_size=800)
        [(0, 500, 0, 800), (0, 500, 200, 1000)]
    """
    for name, value in (('height', height), ('width', width), ('patch_size', patch_size)):
        if int(value) != value or value <= 0:
            raise ValueError(f'{name} must be a positive integer, got {value!r}')
    if int(overlap) != overlap or not 0 <= overlap < patch_size:
        raise ValueError(f'overlap must be an integer in [0, patch_size={patch_size}), got {overlap!r}')
    stride = patch_size - overlap
    ys = _axis_starts(height, patch_size, stride)
    xs = _axis_starts(width, patch_size, stride)
    return [(y, min(y + patch_size, height), x, min(x + patch_size, width)) for y in ys for x in xs]


# ----------------------------------------------------------------------------------------------------------------
# Classes and palettes
# ----------------------------------------------------------------------------------------------------------------
def _from_file(path: str, key: str):
    if path.endswith('.json'):
        with open(path) as f:
            obj = json.load(f)
    else:
        from mmengine.config import Config
        obj = Config.fromfile(path).to_dict()
    if isinstance(obj, dict):
        for holder in (obj, obj.get('metainfo') or {}):
            if key in holder:
                return holder[key]
        raise ISAIDConversionError(f'{path}: no `{key}` (neither top-level nor in `metainfo`)')
    return obj


def parse_classes(spec: str) -> Tuple[str, ...]:
    """Class names from a command-line value.

    Args:
        spec (str): a comma-separated list (``'ship,plane'``), or a ``.json`` file holding a list or a dict with
            ``classes`` (top-level or in ``metainfo``), or an mmengine config file (``.py``/``.yaml``) with
            ``classes`` or ``metainfo = dict(classes=...)``.

    Returns:
        tuple[str]: the class names in category-id order (id = index + 1).
    """
    value = _from_file(spec, 'classes') if osp.isfile(spec) else [s.strip() for s in spec.split(',') if s.strip()]
    return tuple(str(v) for v in value)


def parse_palette(spec: str) -> List[Tuple[int, int, int]]:
    """Class colours (R, G, B) of the ``*_instance_color_RGB.png`` masks from a command-line value.

    Args:
        spec (str): inline ``'0,0,63;0,63,63'`` or json ``'[[0,0,63],[0,63,63]]'``, or a file as in
            :func:`parse_classes` holding ``palette``.

    Returns:
        list[tuple[int, int, int]]: one colour per class, in class order.
    """
    if osp.isfile(spec):
        value = _from_file(spec, 'palette')
    elif spec.strip().startswith('['):
        value = json.loads(spec)
    else:
        value = [[int(c) for c in item.split(',')] for item in spec.replace(' ', ';').split(';') if item.strip()]
    return [tuple(int(c) for c in color) for color in value]


def parse_class_spec(classes: Optional[str] = None,
                     palette: Optional[str] = None) -> Tuple[Optional[Tuple[str, ...]], Optional[list]]:
    """Classes and palette from command-line values (see :func:`parse_classes` and :func:`parse_palette`).

    When ``palette`` is not given and ``classes`` is a file that also holds a palette (e.g. a config with
    ``metainfo = dict(classes=..., palette=...)``), the palette is read from it.

    Returns:
        tuple: ``(classes, palette)``, each None where not given.
    """
    names = parse_classes(classes) if classes else None
    colors = parse_palette(palette) if palette else None
    if colors is None and classes and osp.isfile(classes):
        try:
            colors = parse_palette(classes)
        except (ValueError, TypeError):  # the file holds classes only
            colors = None
    return names, colors


def _check_classes(classes: Optional[Sequence[str]], palette: Optional[Sequence[Sequence[int]]]
                   ) -> Tuple[Tuple[str, ...], Optional[List[Tuple[int, int, int]]]]:
    if classes is None and palette is None:
        return tuple(ISAID_CLASSES), [tuple(c) for c in ISAID_PALETTE]
    classes = tuple(ISAID_CLASSES) if classes is None else tuple(str(c) for c in classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f'classes must be non-empty and unique, got {classes}')
    if palette is None:  # fine for json input and test splits; the colour masks need one (see _convert_split)
        return classes, None
    palette = [tuple(int(c) for c in color) for color in palette]
    if len(palette) != len(classes):
        raise ValueError(f'palette has {len(palette)} colours for {len(classes)} classes')
    for color in palette:
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise ValueError(f'palette colours must be (R, G, B) in 0..255, got {color}')
        if color == (0, 0, 0):
            raise ValueError('palette colour (0, 0, 0) is the background colour of the masks')
    if len(set(palette)) != len(palette):
        raise ValueError(f'palette colours must be unique, got {palette}')
    return classes, palette


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
def _list_images(img_dir: str) -> List[str]:
    if not osp.isdir(img_dir):
        raise ISAIDConversionError(f'image folder not found: {img_dir}')
    names = sorted(n for n in os.listdir(img_dir)
                   if n.lower().endswith(_IMAGE_EXTS) and not osp.splitext(n)[0].endswith(_MASK_SUFFIXES))
    if not names:
        raise ISAIDConversionError(f'no image in {img_dir}')
    return names


def _image_size(path: str) -> Tuple[int, int]:
    """(height, width) from the file header."""
    if not osp.isfile(path):
        raise ISAIDConversionError(f'image not found: {path}')
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception as e:  # PIL raises several types for unreadable files
        raise ISAIDConversionError(f'cannot read image {path}: {e}') from e
    return height, width


def _read_image(path: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(path, flags)
    if img is None:
        raise ISAIDConversionError(f'cannot read image {path}')
    return img


def _read_rgb_codes(path: str) -> np.ndarray:
    """An RGB mask PNG as ``(H, W)`` int32 codes ``R*65536 + G*256 + B``."""
    if not osp.isfile(path):
        raise ISAIDConversionError(f'mask not found: {path}')
    bgr = _read_image(path, cv2.IMREAD_COLOR)
    codes = bgr[..., 2].astype(np.int32) << 16
    codes |= bgr[..., 1].astype(np.int32) << 8
    codes |= bgr[..., 0]
    return codes


def _code_to_rgb(code: int) -> Tuple[int, int, int]:
    return (int(code) >> 16) & 255, (int(code) >> 8) & 255, int(code) & 255


# ----------------------------------------------------------------------------------------------------------------
# Segmentation encoding
# ----------------------------------------------------------------------------------------------------------------
def _polygons_of(geom, decimals: int = _DECIMALS) -> List[List[float]]:
    """Exterior rings of the polygonal parts of ``geom`` as flat COCO polygons (holes dropped)."""
    polygons = []
    for part in shapely.get_parts(geom):
        if part.geom_type == 'MultiPolygon' or part.geom_type == 'GeometryCollection':
            polygons.extend(_polygons_of(part, decimals))
            continue
        if part.geom_type != 'Polygon' or part.area <= 0:
            continue
        ring = np.round(np.asarray(part.exterior.coords)[:-1], decimals)
        ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)]  # drop repeats made by rounding
        if len(ring) >= 3:
            polygons.append(ring.ravel().tolist())
    return polygons


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """Polygons around every connected part of a binary mask (holes filled) that rasterise back to its pixels.

    ``cv2.findContours`` traces the outer borders of the 8-connected parts on the mask upsampled 2x (nearest), so
    the polygons run a quarter pixel inside the pixels' outer edges. In the COCO convention (pixel ``(x, y)`` covers
    ``[x, x+1) x [y, y+1)``, as ``pycocotools`` rasterises by pixel centre) every pixel centre of the mask is then
    strictly inside and every other one strictly outside, so ``pycocotools`` gives back exactly the mask (without
    its holes). A contour through pixel centres instead loses half a pixel all around (6% of the area on average,
    up to 11%, on the objects of the devkit's P0003). Vertices are multiples of 0.25 in
    ``[0.25, W - 0.25] x [0.25, H - 0.25]``.

    Args:
        mask (np.ndarray): ``(H, W)`` bool or 0/1 mask.

    Returns:
        list[list[float]]: flat ``[x1, y1, x2, y2, ...]`` polygons (at least 4 vertices each), empty for an empty
        mask.
    """
    upsampled = np.repeat(np.repeat(np.asarray(mask, dtype=np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # sub-pixel u (upsampled) has its centre at u + 0.5, i.e. (u + 0.5) / 2 in the mask's coordinates
    return [((contour.reshape(-1, 2) + 0.5) / 2).ravel().tolist() for contour in contours]


def _annotation(category_id: int, height: int, width: int, polygons: Optional[List[List[float]]] = None,
                mask: Optional[np.ndarray] = None, rle: bool = False, iscrowd: int = 0) -> Optional[dict]:
    """A COCO annotation (without ids) whose area and bbox are those of its encoded segmentation; None if empty.

    The segmentation is given as ``polygons`` (patch coordinates) or as a ``(height, width)`` binary ``mask``.
    """
    if mask is not None:
        if rle:
            segmentation = encoded = encode_mask(mask)
        else:
            polygons = mask_to_polygons(mask)
    if polygons is not None:
        if not polygons:
            return None
        encoded = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        segmentation = dict(size=[height, width], counts=encoded['counts'].decode('ascii')) if rle else polygons
    area = int(mask_utils.area(encoded))
    if area == 0:
        return None
    bbox = [float(v) for v in mask_utils.toBbox(encoded)]
    return dict(category_id=category_id, segmentation=segmentation, area=area, bbox=bbox, iscrowd=int(iscrowd))


# ----------------------------------------------------------------------------------------------------------------
# Patches of one image
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Patch:
    image_path: str
    window: Window
    annotations: List[dict] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        stem = osp.splitext(osp.basename(self.image_path))[0]
        return '{}_{}_{}_{}_{}.png'.format(stem, *self.window)


def _instances_from_masks(image_path: str, palette: Sequence[Tuple[int, int, int]]):
    """Read one image's mask pair.

    Returns:
        tuple: ``labels`` (H, W) int32 (0 background, k > 0 instance k), ``categories`` (K,) category id of
        instance k at index k-1, ``slices`` bounding slices per instance, and the number of instances whose
        pixels carry more than one class colour (they take the majority class).
    """
    stem = osp.splitext(image_path)[0]
    color_path, id_path = stem + _COLOR_SUFFIX, stem + _ID_SUFFIX
    image_hw = _image_size(image_path)
    colors = _read_rgb_codes(color_path)
    ids = _read_rgb_codes(id_path)
    for path, arr in ((color_path, colors), (id_path, ids)):
        if arr.shape != image_hw:
            raise ISAIDConversionError(f'size mismatch: {path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but the image '
                                       f'{image_path} is {image_hw[1]}x{image_hw[0]}')

    # colour code -> 0-based class; -1: no class; -2: black (background, allowed only where the id is 0)
    lut = np.full(1 << 24, -1, dtype=np.int8)
    lut[0] = -2
    for index, (r, g, b) in enumerate(palette):
        lut[(r << 16) | (g << 8) | b] = index
    pixel_class = lut[colors]
    foreground = ids != 0
    bad = (pixel_class == -1) | ((pixel_class == -2) & foreground)
    if bad.any():
        y, x = (int(v) for v in np.argwhere(bad)[0])
        code = int(colors[y, x])
        where = f'at pixel (x={x}, y={y}) of {color_path}'
        if code == 0:
            raise ISAIDConversionError(f'colour (0, 0, 0) (background) {where} lies inside instance {ids[y, x]} of '
                                       f'{id_path}: it maps to no class ({np.count_nonzero(bad)} such pixels)')
        raise ISAIDConversionError(f'colour {_code_to_rgb(code)} {where} maps to no class of the palette '
                                   f'{list(palette)} ({np.count_nonzero(bad)} such pixels)')

    labels = np.zeros(ids.shape, dtype=np.int32)
    instance_ids, inverse = np.unique(ids[foreground], return_inverse=True)
    inverse = inverse.ravel()
    labels[foreground] = inverse + 1
    num, num_classes = len(instance_ids), len(palette)
    votes = np.bincount(inverse * num_classes + pixel_class[foreground], minlength=num * num_classes)
    votes = votes.reshape(num, num_classes)  # pixels of each class colour per instance
    categories = votes.argmax(1) + 1
    mixed = int(np.count_nonzero((votes > 0).sum(1) > 1))
    slices = ndimage.find_objects(labels, max_label=num)
    return labels, categories, slices, mixed


def _patches_from_masks(image_path: str, windows: List[Window], palette, rle: bool):
    labels, categories, slices, mixed = _instances_from_masks(image_path, palette)
    boxes = np.array([(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in slices], dtype=np.int64)
    patches = []
    for window in windows:
        y0, y1, x0, x1 = window
        patch = _Patch(image_path, window)
        if len(boxes):
            hits = np.flatnonzero((boxes[:, 0] < y1) & (boxes[:, 1] > y0) & (boxes[:, 2] < x1) & (boxes[:, 3] > x0))
        else:
            hits = []
        for k in hits:
            by0, by1, bx0, bx1 = boxes[k]
            cy0, cy1, cx0, cx1 = max(by0, y0), min(by1, y1), max(bx0, x0), min(bx1, x1)
            crop = labels[cy0:cy1, cx0:cx1] == k + 1
            if not crop.any():
                continue
            if rle:
                mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
                mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = crop
                ann = _annotation(int(categories[k]), y1 - y0, x1 - x0, mask=mask, rle=True)
            else:  # trace the crop only, then shift to patch coordinates (whole pixels: still exact)
                polygons = [(np.reshape(p, (-1, 2)) + (cx0 - x0, cy0 - y0)).ravel().tolist()
                            for p in mask_to_polygons(crop)]
                ann = _annotation(int(categories[k]), y1 - y0, x1 - x0, polygons=polygons)
            if ann is not None:
                patch.annotations.append(ann)
        patches.append(patch)
    return patches, mixed


def _find_json(raw_dir: str, split: str) -> Optional[str]:
    name = f'iSAID_{split}.json'
    for path in (osp.join(raw_dir, split, 'Annotations', name), osp.join(raw_dir, split, 'annotations', name),
                 osp.join(raw_dir, split, name), osp.join(raw_dir, name)):
        if osp.isfile(path):
            return path
    return None


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace(' ', '_').replace('-', '_')


def _load_json_source(json_path: str, img_dir: str, classes: Sequence[str]):
    """Images and shapely geometries of an official json. Returns ``[(image_path, (h, w), [(cat, geom, crowd)])]``
    sorted by file name."""
    try:
        with open(json_path) as f:
            coco = json.load(f)
    except (OSError, ValueError) as e:
        raise ISAIDConversionError(f'cannot read json {json_path}: {e}') from e
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
            raise ISAIDConversionError(f'{json_path}: field `{key}` missing or not a list')
    by_name = {_normalise(c): i + 1 for i, c in enumerate(classes)}
    cat_map = {}
    for cat in coco['categories']:
        name = cat.get('name') if isinstance(cat, dict) else None
        if name in classes:
            cat_map[cat.get('id')] = classes.index(name) + 1
        elif name is not None and _normalise(name) in by_name:
            cat_map[cat.get('id')] = by_name[_normalise(name)]
        else:
            raise ISAIDConversionError(f'{json_path}: category {name!r} (entry {cat}) is not one of the classes '
                                       f'{list(classes)}')
    images = {}
    for img in coco['images']:
        try:
            images[img['id']] = (img['file_name'], int(img['height']), int(img['width']), [])
        except (KeyError, TypeError, ValueError) as e:
            raise ISAIDConversionError(f'{json_path}: image entry {img} lacks a valid id/file_name/height/width') from e
    for ann in coco['annotations']:
        where = f'{json_path}: annotation id {ann.get("id")}'
        if ann.get('image_id') not in images:
            raise ISAIDConversionError(f'{where}: field `image_id` {ann.get("image_id")!r} names no image')
        if ann.get('category_id') not in cat_map:
            raise ISAIDConversionError(f'{where}: field `category_id` {ann.get("category_id")!r} names no category')
        _, height, width, anns = images[ann['image_id']]
        segm = ann.get('segmentation')
        if isinstance(segm, list):
            try:
                rings = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]
            except (TypeError, ValueError) as e:
                raise ISAIDConversionError(f'{where}: field `segmentation` holds a malformed polygon') from e
            geom = shapely.union_all([shapely.make_valid(shapely.Polygon(r)) for r in rings if len(r) >= 3])
        elif isinstance(segm, dict) and 'counts' in segm:
            rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm['counts'], list) else segm
            geom = mask_utils.decode(rle).astype(bool)
        else:
            raise ISAIDConversionError(f'{where}: field `segmentation` is neither polygons nor RLE')
        anns.append((cat_map[ann['category_id']], geom, int(ann.get('iscrowd', 0))))
    out = []
    for file_name, height, width, anns in sorted(images.values(), key=lambda item: item[0]):
        image_path = osp.join(img_dir, file_name)
        actual = _image_size(image_path)
        if actual != (height, width):
            raise ISAIDConversionError(f'size mismatch: {json_path} gives {file_name} as {width}x{height} (WxH) but '
                                       f'{image_path} is {actual[1]}x{actual[0]}')
        out.append((image_path, (height, width), anns))
    return out


def _patches_from_geometries(image_path: str, windows: List[Window], anns, rle: bool) -> List[_Patch]:
    bounds = []
    for _, geom, _ in anns:
        if isinstance(geom, np.ndarray):
            ys, xs = np.nonzero(geom)
            bounds.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0))
        else:
            bounds.append(geom.bounds if not geom.is_empty else (0, 0, 0, 0))
    bounds = np.array(bounds, dtype=np.float64).reshape(-1, 4)
    patches = []
    for window in windows:
        y0, y1, x0, x1 = window
        height, width = y1 - y0, x1 - x0
        patch = _Patch(image_path, window)
        hits = np.flatnonzero((bounds[:, 0] < x1) & (bounds[:, 2] > x0) & (bounds[:, 1] < y1) & (bounds[:, 3] > y0))
        for k in hits:
            category_id, geom, iscrowd = anns[k]
            if isinstance(geom, np.ndarray):
                ann = _annotation(category_id, height, width, mask=geom[y0:y1, x0:x1].astype(np.uint8), rle=rle,
                                  iscrowd=iscrowd)
            else:
                clipped = shapely.intersection(geom, shapely.box(x0, y0, x1, y1))
                clipped = shapely.transform(clipped, lambda xy: xy - np.array([x0, y0], dtype=np.float64))
                ann = _annotation(category_id, height, width, polygons=_polygons_of(clipped), rle=rle,
                                  iscrowd=iscrowd)
            if ann is not None:
                patch.annotations.append(ann)
        patches.append(patch)
    return patches


# ----------------------------------------------------------------------------------------------------------------
# Filters and writing
# ----------------------------------------------------------------------------------------------------------------
def _filter_train(patches: List[_Patch], max_boxes: Optional[int], max_empty_fraction: Optional[float],
                  seed: int) -> Tuple[List[_Patch], int, int]:
    """Drop crowded patches, then keep at most ``max_empty_fraction`` of the kept patches empty (seeded)."""
    dropped_crowded = 0
    if max_boxes is not None:
        kept = [p for p in patches if len(p.annotations) <= max_boxes]
        dropped_crowded = len(patches) - len(kept)
        patches = kept
    empty = [i for i, p in enumerate(patches) if not p.annotations]
    num_full = len(patches) - len(empty)
    if max_empty_fraction is None or max_empty_fraction >= 1:
        keep_empty = len(empty)
    else:  # largest k with k <= f * (num_full + k)
        keep_empty = min(len(empty), int(np.floor(max_empty_fraction * num_full / (1 - max_empty_fraction) + 1e-9)))
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(empty, size=keep_empty, replace=False).tolist()) if keep_empty else set()
    dropped_empty = len(empty) - keep_empty
    kept = [p for i, p in enumerate(patches) if p.annotations or i in chosen]
    return kept, dropped_crowded, dropped_empty


def _write_patches(patches: List[_Patch], folder: str, desc: str, show_progress: bool) -> None:
    by_image: Dict[str, List[_Patch]] = {}
    for patch in patches:
        by_image.setdefault(patch.image_path, []).append(patch)
    for image_path, group in tqdm(by_image.items(), desc=desc, unit='img', disable=not show_progress):
        image = _read_image(image_path)
        for patch in group:
            y0, y1, x0, x1 = patch.window
            path = osp.join(folder, patch.file_name)
            if not cv2.imwrite(path, np.ascontiguousarray(image[y0:y1, x0:x1])):
                raise OSError(f'cannot write {path}')


def _coco_dict(patches: List[_Patch], classes: Sequence[str], info: dict) -> dict:
    images, annotations = [], []
    for image_id, patch in enumerate(patches, start=1):
        y0, y1, x0, x1 = patch.window
        images.append(dict(id=image_id, file_name=patch.file_name, height=y1 - y0, width=x1 - x0,
                           source_file=osp.basename(patch.image_path), window=list(patch.window)))
        for ann in patch.annotations:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, **ann))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(classes)]
    return dict(info=info, images=images, annotations=annotations, categories=categories)


def _convert_split(raw_dir: str, out_dir: str, split: str, classes, palette, patch_size: int, overlap: int,
                   max_boxes, max_empty_fraction, rle: bool, seed: int, source: str, show_progress: bool) -> dict:
    img_dir = osp.join(raw_dir, split, 'images')
    json_path = _find_json(raw_dir, split) if split not in IMAGE_ONLY_SPLITS and source != 'masks' else None
    if source == 'json' and split not in IMAGE_ONLY_SPLITS and json_path is None:
        raise ISAIDConversionError(f'no iSAID_{split}.json under {raw_dir} (looked in {split}/Annotations, {split}, .)')
    summary = dict(source='images' if split in IMAGE_ONLY_SPLITS else ('json' if json_path else 'masks'))
    patches: List[_Patch] = []
    mixed = 0
    if json_path is not None:
        items = _load_json_source(json_path, img_dir, classes)
        summary['images'] = len(items)
        for image_path, (height, width), anns in tqdm(items, desc=f'{split}: clipping', unit='img',
                                                      disable=not show_progress):
            patches += _patches_from_geometries(image_path, sliding_windows(height, width, patch_size, overlap),
                                                anns, rle)
    else:
        if palette is None and split not in IMAGE_ONLY_SPLITS:
            raise ValueError(f'{len(classes)} custom classes given without a palette: the colour masks of {split} '
                             f'need one (R, G, B) colour per class')
        names = _list_images(img_dir)
        summary['images'] = len(names)
        for name in tqdm(names, desc=f'{split}: {summary["source"]}', unit='img', disable=not show_progress):
            image_path = osp.join(img_dir, name)
            windows = sliding_windows(*_image_size(image_path), patch_size, overlap)
            if split in IMAGE_ONLY_SPLITS:
                patches += [_Patch(image_path, w) for w in windows]
            else:
                image_patches, image_mixed = _patches_from_masks(image_path, windows, palette, rle)
                patches += image_patches
                mixed += image_mixed
    summary['patches_total'] = len(patches)
    dropped_crowded = dropped_empty = 0
    if split == FILTERED_SPLIT:
        patches, dropped_crowded, dropped_empty = _filter_train(patches, max_boxes, max_empty_fraction, seed)
    per_class = {name: 0 for name in classes}
    for patch in patches:
        for ann in patch.annotations:
            per_class[classes[ann['category_id'] - 1]] += 1
    summary.update(patches=len(patches), empty_patches=sum(not p.annotations for p in patches),
                   dropped_max_boxes=dropped_crowded, dropped_empty=dropped_empty,
                   instances=sum(per_class.values()), instances_per_class=per_class, mixed_colour_instances=mixed)

    split_dir = osp.join(out_dir, split)
    ann_dir = osp.join(out_dir, 'annotations')
    made = [d for d in (out_dir, split_dir, ann_dir) if not osp.isdir(d)]
    for d in made:
        os.makedirs(d, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix='.images.', suffix='.tmp', dir=split_dir)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp_dir, 0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary folder
        _write_patches(patches, tmp_dir, f'{split}: patches', show_progress)
        info = dict(description=f'iSAID {split} patches', patch_size=patch_size, overlap=overlap,
                    source=summary['source'], rle=rle, seed=seed,
                    max_boxes=max_boxes if split == FILTERED_SPLIT else None,
                    max_empty_fraction=max_empty_fraction if split == FILTERED_SPLIT else None)
        coco = _coco_dict(patches, classes, info)
        final_dir = osp.join(split_dir, 'images')
        old_dir = None
        if osp.exists(final_dir):
            old_dir = tempfile.mkdtemp(prefix='.images.old.', dir=split_dir)
            os.replace(final_dir, osp.join(old_dir, 'images'))
        os.replace(tmp_dir, final_dir)
        try:
            json_path = osp.join(ann_dir, f'instances_{split}.json')
            dump_json_atomic(coco, json_path)
        except BaseException:  # put the previous patches back so that images and json still agree
            shutil.rmtree(final_dir)
            if old_dir is not None:
                os.replace(osp.join(old_dir, 'images'), final_dir)
                shutil.rmtree(old_dir)
            raise
        if old_dir is not None:
            shutil.rmtree(old_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        for d in reversed(made):  # folders this call created, if still empty
            if osp.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        raise
    return summary


def convert_isaid(raw_dir: PathLike,
                  out_dir: PathLike,
                  splits: Sequence[str] = ('train', 'val', 'test'),
                  patch_size: int = 800,
                  overlap: int = 200,
                  max_boxes: Optional[int] = 400,
                  max_empty_fraction: Optional[float] = 0.3,
                  rle: bool = False,
                  classes: Optional[Sequence[str]] = None,
                  palette: Optional[Sequence[Sequence[int]]] = None,
                  seed: int = 0,
                  source: str = 'auto',
                  show_progress: bool = True) -> Dict[str, dict]:
    """Cut the raw iSAID splits into patches and write one COCO json per split (layout: see the module docstring).

    Args:
        raw_dir (str | PathLike): root of the raw devkit layout (``<raw_dir>/<split>/images``).
        out_dir (str | PathLike): output root; ``<out_dir>/<split>/images`` is replaced, the json written to
            ``<out_dir>/annotations/instances_<split>.json``.
        splits (Sequence[str]): splits to convert, in order; ``test`` is read as images only.
            Defaults to ``('train', 'val', 'test')``.
        patch_size (int): patch side in pixels. Defaults to 800.
        overlap (int): overlap of neighbouring patches in pixels (stride = patch_size - overlap). Defaults to 200.
        max_boxes (int, optional): train only: patches with more instances are dropped; None keeps all.
            Defaults to 400.
        max_empty_fraction (float, optional): train only: at most this fraction of the kept patches is empty
            (empty patches chosen at random with ``seed``); None or 1 keeps all. Defaults to 0.3.
        rle (bool): write masks as compressed RLE instead of polygons. Defaults to False.
        classes (Sequence[str], optional): class names, category id = index + 1. Defaults to ``ISAID_CLASSES``.
        palette (Sequence[tuple], optional): (R, G, B) colour of each class in the colour masks. Defaults to
            ``ISAID_PALETTE``; needed with custom classes when the masks are read.
        seed (int): seed of the empty-patch choice. Defaults to 0.
        source (str): ``'auto'`` (the official json when found, else the PNG masks), ``'masks'`` or ``'json'``.
        show_progress (bool): show tqdm progress bars. Defaults to True.

    Returns:
        dict: per split: ``source``, ``images`` (source images), ``patches_total`` (windows), ``patches`` (written),
        ``empty_patches`` (written without instances), ``dropped_max_boxes``, ``dropped_empty``, ``instances``,
        ``instances_per_class`` (name -> count, over the written patches) and ``mixed_colour_instances``
        (instances whose pixels carry several class colours; they take the majority class).

    Raises:
        ISAIDConversionError: on bad input data (names the file): a missing image folder or mask PNG, a colour of
            no class (with the pixel), a size mismatch between an image and its masks or json entry, an unreadable
            file, a json category not in ``classes``. The failing split leaves no patches and no json behind;
            splits converted before it stay written.
        ValueError: on bad arguments.
    """
    raw_dir, out_dir = os.fspath(raw_dir), os.fspath(out_dir)
    if source not in ('auto', 'masks', 'json'):
        raise ValueError(f"source must be 'auto', 'masks' or 'json', got {source!r}")
    sliding_windows(1, 1, patch_size, overlap)  # validates patch_size and overlap
    if max_boxes is not None and max_boxes < 1:
        raise ValueError(f'max_boxes must be >= 1 or None, got {max_boxes}')
    if max_empty_fraction is not None and not 0 <= max_empty_fraction <= 1:
        raise ValueError(f'max_empty_fraction must be in [0, 1] or None, got {max_empty_fraction}')
    if isinstance(splits, str):
        splits = (splits, )
    if not osp.isdir(raw_dir):
        raise ISAIDConversionError(f'raw iSAID folder not found: {raw_dir}')
    classes, palette = _check_classes(classes, palette)
    return {
        split: _convert_split(raw_dir, out_dir, split, classes, palette, patch_size, overlap, max_boxes,
                              max_empty_fraction, rle, seed, source, show_progress)
        for split in splits
    }


def format_summary(summary: Dict[str, dict]) -> str:
    """A readable table of :func:`convert_isaid`'s summary: patches and filter counts, then instances per class."""
    lines = []
    for split, s in summary.items():
        lines.append(f'{split} (from {s["source"]}): {s["images"]} images -> {s["patches_total"]} patches, '
                     f'{s["patches"]} written ({s["empty_patches"]} empty); dropped: {s["dropped_max_boxes"]} with '
                     f'more than max-boxes, {s["dropped_empty"]} empty; {s["instances"]} instances'
                     + (f', {s["mixed_colour_instances"]} with mixed colours' if s['mixed_colour_instances'] else ''))
        for name, count in s['instances_per_class'].items():
            if count:
                lines.append(f'    {name:<20s} {count}')
    return '\n'.join(lines)
