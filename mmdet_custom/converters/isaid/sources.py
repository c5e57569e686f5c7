"""Reading the raw iSAID sources: images, the PNG mask pairs (8- or 16-bit) and the official json."""
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import shapely
from PIL import Image
from scipy import ndimage

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import load_json

from .common import ISAIDConversionError
from .windows import natural_key

_IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
COLOR_SUFFIX = '_instance_color_RGB.png'
ID_SUFFIX = '_instance_id_RGB.png'
_MASK_SUFFIXES = ('_instance_color_RGB', '_instance_id_RGB')


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------
def list_images(img_dir: str) -> List[str]:
    """Image file names in ``img_dir`` (mask PNGs excluded), in natural order. Raises if none or no folder."""
    if not osp.isdir(img_dir):
        raise ISAIDConversionError(f'image folder not found: {img_dir}')
    names = [n for n in os.listdir(img_dir)
             if n.lower().endswith(_IMAGE_EXTS) and not osp.splitext(n)[0].endswith(_MASK_SUFFIXES)]
    if not names:
        raise ISAIDConversionError(f'no image in {img_dir}')
    return sorted(names, key=natural_key)


def image_size(path: str) -> Tuple[int, int]:
    """``(height, width)`` of an image from its file header."""
    if not osp.isfile(path):
        raise ISAIDConversionError(f'image not found: {path}')
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception as e:  # PIL raises several types for unreadable files
        raise ISAIDConversionError(f'cannot read image {path}: {e}') from e
    return height, width


def read_image(path: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(path, flags)
    if img is None:
        raise ISAIDConversionError(f'cannot read image {path}')
    return img


# ----------------------------------------------------------------------------------------------------------------
# Mask PNGs
# ----------------------------------------------------------------------------------------------------------------
def _channels(arr: np.ndarray, path: str) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(R, G, B)`` planes of a BGR(A) array as read by cv2, or None for a one-channel image."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return None
    if arr.ndim == 3 and arr.shape[2] in (3, 4):  # an alpha channel carries no id or class
        return arr[..., 2], arr[..., 1], arr[..., 0]
    raise ISAIDConversionError(f'{path}: expected a grey, RGB or RGBA PNG, got an array of shape {arr.shape}')


def read_id_mask(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """An instance-id PNG as ``(H, W)`` integer ids (0 = background), read at its own bit depth.

    An RGB(A) PNG gives ``R << 2b | G << b | B`` (``b`` = 8 or 16 bits per channel; for 8-bit PNGs the usual
    ``R*65536 + G*256 + B``), a grey PNG its value; 16-bit PNGs are read as 16-bit (``cv2.IMREAD_UNCHANGED``), never
    cut to 8 bits.

    Returns:
        tuple: ``(ids, key)``: ``ids`` is ``(H, W)`` int32 (8-bit PNG) or int64 (16-bit); ``key`` the bit shifts
        ``(r, g, b)`` of the devkit's number of an instance, ``(R << r) + (G << g) + (B << b)`` (for 8-bit RGB
        ``R + 256 G + 65536 B``: the devkit lists a patch's instances in increasing order of it, see
        :func:`devkit_order`), or an empty array for a grey PNG (the value itself).

    Raises:
        ISAIDConversionError: the file is missing, unreadable, not 8/16-bit, or not grey/RGB/RGBA.
    """
    if not osp.isfile(path):
        raise ISAIDConversionError(f'mask not found: {path}')
    arr = read_image(path, cv2.IMREAD_UNCHANGED)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ISAIDConversionError(f'{path}: instance ids must be an 8- or 16-bit PNG, got {arr.dtype}')
    bits = 8 * arr.dtype.itemsize
    dtype = np.int32 if bits == 8 else np.int64
    planes = _channels(arr, path)
    if planes is None:
        return np.asarray(arr if arr.ndim == 2 else arr[..., 0], dtype=dtype), np.zeros(0, dtype=np.int64)
    r, g, b = (p.astype(dtype) for p in planes)
    ids = (r << (2 * bits)) | (g << bits) | b
    return ids, np.array([0, bits, 2 * bits], dtype=np.int64)


def devkit_order(ids: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The devkit's number of each id of :func:`read_id_mask` (its instances are listed in increasing order)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(key):
        return ids
    bits = int(key[1])
    mask = (1 << bits) - 1
    r, g, b = ids >> (2 * bits), (ids >> bits) & mask, ids & mask
    return (r << int(key[0])) + (g << int(key[1])) + (b << int(key[2]))


def read_color_mask(path: str) -> np.ndarray:
    """A class-colour PNG as ``(H, W)`` int32 codes ``R*65536 + G*256 + B`` (8-bit colours only)."""
    if not osp.isfile(path):
        raise ISAIDConversionError(f'mask not found: {path}')
    arr = read_image(path, cv2.IMREAD_UNCHANGED)
    if arr.dtype != np.uint8:
        raise ISAIDConversionError(f'{path}: class colours must be an 8-bit PNG (the palette is 8-bit R, G, B), got '
                                   f'{arr.dtype}; save it as 8-bit RGB')
    planes = _channels(arr, path)
    if planes is None:
        grey = (arr if arr.ndim == 2 else arr[..., 0]).astype(np.int32)
        return grey << 16 | grey << 8 | grey
    r, g, b = (p.astype(np.int32) for p in planes)
    return r << 16 | g << 8 | b


def code_to_rgb(code: int) -> Tuple[int, int, int]:
    return (int(code) >> 16) & 255, (int(code) >> 8) & 255, int(code) & 255


@dataclass
class MaskInstances:
    """The instances of one image's PNG mask pair (see :func:`read_instances`)."""
    #: ``(H, W)`` int32: 0 background, ``k + 1`` instance ``k``.
    labels: np.ndarray
    #: ``(H, W)`` int8: 0-based class of each pixel's colour, -2 for black.
    pixel_class: np.ndarray
    #: ``(K,)`` 0-based class of each instance by majority of its pixels' colours.
    majority: np.ndarray
    #: ``(K,)`` whether the instance's pixels carry several class colours.
    mixed: np.ndarray
    #: ``(K, 4)`` ``(y0, y1, x0, x1)`` bounding box of each instance.
    boxes: np.ndarray
    #: ``(K,)`` the devkit's number of each instance (order of its annotations within a class).
    order: np.ndarray
    #: coloured pixels with instance id 0: ``dict(file, pixels, first=[x, y])``, or None.
    unassigned: Optional[dict]


def read_instances(image_path: str, palette: Sequence[Tuple[int, int, int]]) -> MaskInstances:
    """Read one image's mask pair ``<stem>_instance_color_RGB.png`` (class by colour) and
    ``<stem>_instance_id_RGB.png`` (instance by id, 0 = background).

    An instance is the set of pixels of one non-zero id (as the devkit identifies them); its class comes from the
    colours under it. Coloured pixels whose id is 0 belong to no instance: the devkit ignores them, we count them
    (``unassigned``) for the summary's warning.

    Raises:
        ISAIDConversionError: a missing or unreadable mask, a size that differs from the image, a colour of no class
            (with its pixel), or a black (background) colour inside an instance (the devkit crashes there).
    """
    stem = osp.splitext(image_path)[0]
    color_path, id_path = stem + COLOR_SUFFIX, stem + ID_SUFFIX
    image_hw = image_size(image_path)
    colors = read_color_mask(color_path)
    ids, key = read_id_mask(id_path)
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
    del colors
    foreground = ids != 0
    bad = (pixel_class == -1) | ((pixel_class == -2) & foreground)
    if bad.any():
        y, x = (int(v) for v in np.argwhere(bad)[0])
        code = int(read_color_mask(color_path)[y, x])
        where = f'at pixel (x={x}, y={y}) of {color_path}'
        if code == 0:
            raise ISAIDConversionError(f'colour (0, 0, 0) (background) {where} lies inside instance {ids[y, x]} of '
                                       f'{id_path}: it maps to no class ({np.count_nonzero(bad)} such pixels)')
        raise ISAIDConversionError(f'colour {code_to_rgb(code)} {where} maps to no class of the palette '
                                   f'{list(palette)} ({np.count_nonzero(bad)} such pixels)')
    unassigned = None
    orphans = (pixel_class >= 0) & ~foreground
    num_orphans = int(np.count_nonzero(orphans))
    if num_orphans:
        y, x = divmod(int(np.flatnonzero(orphans)[0]), orphans.shape[1])
        unassigned = dict(file=id_path, pixels=num_orphans, first=[x, y])

    labels = np.zeros(ids.shape, dtype=np.int32)
    instance_ids, inverse = np.unique(ids[foreground], return_inverse=True)
    inverse = inverse.ravel()
    labels[foreground] = inverse + 1
    num, num_classes = len(instance_ids), len(palette)
    votes = np.bincount(inverse * num_classes + pixel_class[foreground], minlength=num * num_classes)
    votes = votes.reshape(num, num_classes)  # pixels of each class colour per instance
    slices = ndimage.find_objects(labels, max_label=num)
    boxes = np.array([(s[0].start, s[0].stop, s[1].start, s[1].stop) for s in slices], dtype=np.int64)
    return MaskInstances(labels=labels, pixel_class=pixel_class, majority=votes.argmax(1),
                         mixed=(votes > 0).sum(1) > 1, boxes=boxes.reshape(-1, 4),
                         order=devkit_order(instance_ids, key), unassigned=unassigned)


# ----------------------------------------------------------------------------------------------------------------
# The official json
# ----------------------------------------------------------------------------------------------------------------
def find_json(raw_dir: str, split: str) -> Optional[str]:
    """The official ``iSAID_<split>.json`` under ``raw_dir`` (``<split>/Annotations``, ``<split>``, ``.``), or None."""
    name = f'iSAID_{split}.json'
    for path in (osp.join(raw_dir, split, 'Annotations', name), osp.join(raw_dir, split, 'annotations', name),
                 osp.join(raw_dir, split, name), osp.join(raw_dir, name)):
        if osp.isfile(path):
            return path
    return None


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace(' ', '_').replace('-', '_')


def _rle_size(segm: dict, where: str, height: int, width: int, file_name: str) -> None:
    size = segm.get('size')
    try:
        size = [int(v) for v in size]
    except (TypeError, ValueError):
        size = None
    if size != [height, width]:
        raise ISAIDConversionError(f'{where}: RLE `segmentation.size` {segm.get("size")!r} differs from the image '
                                   f'{file_name} ([height, width] = [{height}, {width}]); fix or drop the annotation')
    if isinstance(segm['counts'], list):
        total = sum(int(v) for v in segm['counts'])
        if total != height * width:
            raise ISAIDConversionError(f'{where}: uncompressed RLE `segmentation.counts` covers {total} pixels, the '
                                       f'image {file_name} has {height} x {width} = {height * width}')


def load_json_source(json_path: str, img_dir: str, classes: Sequence[str], skip: Sequence[str] = ()):
    """Images and geometries of an official-style COCO json on the full images.

    Categories are matched to ``classes`` by name (case, spaces and dashes ignored), never by id: the official
    train and val jsons give different ids to the same class. Images whose stem is in ``skip`` are left out.

    Returns:
        tuple: ``(items, skipped)``: ``items`` is ``[(image_path, (h, w), [(category_id, geom, iscrowd), ...])]`` in
        natural order of file names (``geom`` a shapely geometry for polygons, a ``(h, w)`` bool array for RLE);
        ``skipped`` the file names left out.

    Raises:
        ISAIDConversionError: malformed json or fields (names the file and annotation), an unknown category name, an
            RLE whose size is not its image's, an image missing or of another size than the json says.
    """
    try:
        coco = load_json(json_path, 'iSAID json')
    except UserError as e:
        raise ISAIDConversionError(str(e)) from e
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
    images, skipped = {}, []
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
        file_name, height, width, anns = images[ann['image_id']]
        segm = ann.get('segmentation')
        if isinstance(segm, list):
            try:
                rings = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]
            except (TypeError, ValueError) as e:
                raise ISAIDConversionError(f'{where}: field `segmentation` holds a malformed polygon') from e
            geom = shapely.union_all([shapely.make_valid(shapely.Polygon(r)) for r in rings if len(r) >= 3])
        elif isinstance(segm, dict) and 'counts' in segm:
            _rle_size(segm, where, height, width, file_name)
            try:
                rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm['counts'], list) else segm
                geom = mask_utils.decode(rle).astype(bool)
            except (TypeError, ValueError) as e:
                raise ISAIDConversionError(f'{where}: field `segmentation` holds a malformed RLE ({e})') from e
            if geom.shape != (height, width):
                raise ISAIDConversionError(f'{where}: RLE decodes to {geom.shape[1]}x{geom.shape[0]} (WxH), the image '
                                           f'{file_name} is {width}x{height}')
        else:
            raise ISAIDConversionError(f'{where}: field `segmentation` is neither polygons nor RLE')
        anns.append((cat_map[ann['category_id']], geom, int(ann.get('iscrowd', 0))))
    out = []
    for file_name, height, width, anns in sorted(images.values(), key=lambda item: natural_key(item[0])):
        if osp.splitext(osp.basename(file_name))[0] in skip:
            skipped.append(file_name)
            continue
        image_path = osp.join(img_dir, file_name)
        actual = image_size(image_path)
        if actual != (height, width):
            raise ISAIDConversionError(f'size mismatch: {json_path} gives {file_name} as {width}x{height} (WxH) but '
                                       f'{image_path} is {actual[1]}x{actual[0]}')
        out.append((image_path, (height, width), anns))
    return out, skipped
