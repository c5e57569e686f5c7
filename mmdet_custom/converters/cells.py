"""Convert microscopy cell data (one folder per image, one label image per class) to COCO instance jsons.

Layout read by :func:`convert_cells` (as in the Data Science Bowl 2018 stage1 release, regrouped per class)::

    <root>/train/<id>/image.tif      grey, RGB or RGBA image, uint8 or 16-bit
    <root>/train/<id>/class1.tif     label image of class 1: 0 = background, each distinct value > 0 = one instance
    ...
    <root>/train/<id>/class4.tif     (any class file may be missing: that image has no instance of the class)

Layout written::

    <out_dir>/images/<id>.png                     8-bit RGB, see :func:`image_to_rgb8`
    <out_dir>/annotations/instances_train.json    COCO: RLE masks, iscrowd 0, categories 1..K
    <out_dir>/annotations/instances_val.json

:func:`convert_cells_test` turns a folder of unlabelled test images plus their ``file name -> image id`` mapping
into ``<out_dir>/test/<stem>.png`` and ``<out_dir>/annotations/image_info_test.json`` (images only), whose image
ids are the given ones, so that predictions exported with
:func:`mmdet_custom.apis.export.predictions_to_coco_results` carry them directly.

The mask helpers (:func:`encode_mask`, :func:`touches_border`) and :func:`dump_json_atomic` are shared with
:mod:`mmdet_custom.apis.export` and :mod:`mmdet_custom.converters.coco_subset`.
"""
import json
import os
import os.path as osp
import re
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils
import tifffile
from PIL import Image

from mmdet_custom.utils.fileio import dump_json_atomic

#: Default category names; category id k (1-based) is read from ``class{k}.tif``.
CELL_CLASSES = ('class1', 'class2', 'class3', 'class4')

_IMAGE_EXTS = ('.tif', '.tiff', '.png', '.jpg', '.jpeg', '.bmp')

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------------------------------------------
# Generic helpers (also used by apis/export.py and converters/coco_subset.py)
# --------------------------------------------------------------------------------------------------------------
def encode_mask(mask: np.ndarray) -> dict:
    """Encode one binary mask as compressed COCO RLE with ``counts`` as ``str`` (json-serialisable).

    Args:
        mask (np.ndarray): ``(H, W)`` mask, bool or 0/1 integers.

    Returns:
        dict: ``{'size': [H, W], 'counts': str}``, decodable by ``pycocotools.mask.decode``.
    """
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def touches_border(mask: np.ndarray) -> bool:
    """Whether a ``(H, W)`` binary mask has a foreground pixel in the first/last row or column."""
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


# --------------------------------------------------------------------------------------------------------------
# Reading images and label images
# --------------------------------------------------------------------------------------------------------------
def image_to_rgb8(image: np.ndarray, name: str = 'image') -> np.ndarray:
    """Convert a grey, RGB or RGBA microscopy image of any depth to ``(H, W, 3)`` uint8 RGB.

    * Layout: ``(H, W)`` and ``(H, W, 1)`` grey images are repeated to three channels; the alpha channel of
      ``(H, W, 4)`` images is dropped (not composited); channel-first ``(3|4, H, W)`` stacks (with ``W > 4``)
      are transposed.
    * Depth: uint8 (and bool, as 0/255) is kept as is. Any other depth (uint16, int32, float) is stretched
      linearly, per image and over all channels together, from its own minimum to its maximum onto 0..255
      and rounded. 16-bit microscopy rarely uses the full 0..65535 range (12-bit cameras store 0..4095), so a
      fixed division by 257 would leave most images nearly black; the per-image stretch keeps contrast and the
      ratios between channels. A constant image becomes all zeros.

    Args:
        image (np.ndarray): the image as read by ``tifffile``.
        name (str): file name used in error messages.

    Returns:
        np.ndarray: ``(H, W, 3)`` uint8.

    Raises:
        ValueError: for a shape that is none of the above, or a float image holding NaN/inf.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (3, 4) and img.shape[-1] > 4:
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    elif img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f'{name}: unsupported image shape {tuple(np.shape(image))}; expected (H, W) grey, '
                         '(H, W, 3) RGB or (H, W, 4) RGBA')
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    img = img.astype(np.float64)
    if not np.isfinite(img).all():
        raise ValueError(f'{name}: image holds NaN or infinite values')
    lo, hi = img.min(), img.max()
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.uint8)
    return np.round((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(path: PathLike) -> np.ndarray:
    """Read a ``.tif``/``.tiff`` (tifffile) or ``.png``/``.jpg``/``.bmp`` (PIL) image as ``(H, W, 3)`` uint8 RGB.

    See :func:`image_to_rgb8` for the conversion. Raises ``FileNotFoundError`` naming ``path`` if it is missing.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'image missing: {path}')
    if path.lower().endswith(('.tif', '.tiff')):
        image = tifffile.imread(path)
    else:
        with Image.open(path) as im:
            image = np.asarray(im)
    return image_to_rgb8(image, name=path)


def read_label_image(path: PathLike, shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Read an instance label image: 0 = background, each distinct value > 0 = one instance.

    Args:
        path: ``.tif`` label image (uint8, uint16 or any integer type; singleton axes are squeezed).
        shape (tuple[int, int], optional): expected ``(H, W)``, the size of the image it annotates.

    Returns:
        np.ndarray: ``(H, W)`` integer label image.

    Raises:
        ValueError: naming ``path``, if the labels are not integers (e.g. a float mask), are negative, are not
            2-D, or their size differs from ``shape``.
    """
    path = os.fspath(path)
    label = np.asarray(tifffile.imread(path))
    if label.ndim > 2:
        label = np.squeeze(label)
    if label.ndim != 2:
        raise ValueError(f'{path}: label image must be 2-D (H, W), got shape {label.shape}')
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f'{path}: label image has dtype {label.dtype}; instance labels must be integers '
                         '(uint8/uint16), one distinct value per instance')
    if np.issubdtype(label.dtype, np.signedinteger) and label.size and label.min() < 0:
        raise ValueError(f'{path}: label image holds negative values')
    if shape is not None and tuple(label.shape) != tuple(shape):
        raise ValueError(f'{path}: mask size {label.shape[1]}x{label.shape[0]} (WxH) differs from the image '
                         f'size {shape[1]}x{shape[0]}')
    return label


def label_image_to_masks(label: np.ndarray) -> List[Tuple[int, np.ndarray]]:
    """Split a label image into ``(value, (H, W) bool mask)`` pairs, one per distinct non-zero value, sorted.

    A value's pixels form one instance even if they are not connected.
    """
    values = np.unique(label)
    return [(int(v), label == v) for v in values[values != 0]]


def instance_annotations(label: np.ndarray, category_id: int, drop_border: bool = False) -> Tuple[List[dict], int]:
    """COCO annotations (without ``id``/``image_id``) for every instance of one label image.

    Args:
        label (np.ndarray): ``(H, W)`` instance label image.
        category_id (int): category id written to each annotation.
        drop_border (bool): skip instances with a pixel in the first/last row or column. Defaults to False.

    Returns:
        tuple[list[dict], int]: annotations with ``segmentation`` (RLE, ``counts`` str), ``area`` (pixels),
        ``bbox`` ``[x, y, w, h]`` in pixels (tight box of the mask), ``iscrowd`` 0; and the number of instances
        dropped for touching the border.
    """
    anns, dropped = [], 0
    for _, mask in label_image_to_masks(label):
        if drop_border and touches_border(mask):
            dropped += 1
            continue
        rle = encode_mask(mask)
        anns.append(dict(category_id=category_id, segmentation=rle, area=float(mask_utils.area(rle)),
                         bbox=[float(x) for x in mask_utils.toBbox(rle)], iscrowd=0))
    return anns, dropped


# --------------------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------------------
def split_ids(ids: Sequence, val_fraction: float = 0.2, seed: int = 0) -> Tuple[list, list]:
    """Seeded random train/val split of ``ids``.

    ``round(val_fraction * len(ids))`` ids go to val, at least one when ``val_fraction > 0`` and more than one id
    is given, and at least one id always stays in train. The split depends only on the sorted ids, the fraction
    and the seed (``numpy.random.default_rng(seed).permutation``). Both returned lists are sorted.

    Raises:
        ValueError: if ``val_fraction`` is not in ``[0, 1)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
    ids = sorted(ids)
    n = len(ids)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    else:
        n_val = 0
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    train = [x for i, x in enumerate(ids) if i not in val_idx]
    val = [x for i, x in enumerate(ids) if i in val_idx]
    return train, val


def _categories(class_names: Optional[Sequence[str]]) -> List[dict]:
    names = list(CELL_CLASSES if class_names is None else class_names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f'class_names must be non-empty and unique, got {names}')
    return [dict(id=i + 1, name=name) for i, name in enumerate(names)]


def _save_png(rgb: np.ndarray, path: str) -> None:
    Image.fromarray(rgb).save(path, format='PNG')


def _move_staged(staging: str, dst_dir: str) -> None:
    os.makedirs(dst_dir, exist_ok=True)
    for name in sorted(os.listdir(staging)):
        os.replace(osp.join(staging, name), osp.join(dst_dir, name))


def convert_cells(root: PathLike,
                  out_dir: PathLike,
                  val_fraction: float = 0.2,
                  seed: int = 0,
                  drop_border: bool = False,
                  class_names: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Convert ``<root>/train/<id>/{image,class1..classK}.tif`` folders to COCO train/val jsons.

    Image ids are 1..N in the sorted order of the folder names (the same whatever the split), annotation ids
    1..M in that order, then by class, then by label value. Each distinct non-zero value of ``class{k}.tif`` is
    one instance of category k (named ``class_names[k - 1]``); a missing class file means no instance of it.

    Everything is read and checked before anything is written to ``out_dir``: on bad input no file is left
    behind. Images go through a staging folder inside ``out_dir`` and jsons through :func:`dump_json_atomic`.

    Args:
        root: dataset root holding ``train/``.
        out_dir: output root (``images/``, ``annotations/instances_{train,val}.json``).
        val_fraction (float): share of images in val, see :func:`split_ids`. Defaults to 0.2.
        seed (int): split seed. Defaults to 0.
        drop_border (bool): drop instances whose mask touches the image border. Defaults to False.
        class_names (Sequence[str], optional): K category names; defaults to :data:`CELL_CLASSES`.

    Returns:
        dict: ``images``, ``train_images``, ``val_images``, ``instances`` (written), ``dropped_border``.

    Raises:
        FileNotFoundError: ``<root>/train`` or an ``image.tif`` is missing (the path is named).
        ValueError: a label image is not integer, not 2-D, of another size than its image, or a ``class{k}.tif``
            has ``k`` beyond the given class names (the file is named).
    """
    root, out_dir = os.fspath(root), os.fspath(out_dir)
    categories = _categories(class_names)
    num_classes = len(categories)
    train_root = osp.join(root, 'train')
    if not osp.isdir(train_root):
        raise FileNotFoundError(f'cells train folder missing: {train_root} (expected <root>/train/<id>/image.tif)')
    folders = sorted(d for d in os.listdir(train_root)
                     if not d.startswith('.') and osp.isdir(osp.join(train_root, d)))
    if not folders:
        raise FileNotFoundError(f'no image folders in {train_root}')

    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(dir=out_dir, prefix='.images.staging-')
    try:
        images, annotations, dropped = [], [], 0
        for img_id, folder in enumerate(folders, start=1):
            folder_path = osp.join(train_root, folder)
            rgb = read_image(osp.join(folder_path, 'image.tif'))
            height, width = rgb.shape[:2]
            for fname in os.listdir(folder_path):
                m = re.fullmatch(r'class(\d+)\.tiff?', fname)
                if m and not 1 <= int(m.group(1)) <= num_classes:
                    raise ValueError(f'{osp.join(folder_path, fname)}: class index {m.group(1)} has no name '
                                     f'(only {num_classes} class names: {[c["name"] for c in categories]})')
            for cat in categories:
                label_path = osp.join(folder_path, f'class{cat["id"]}.tif')
                if not osp.isfile(label_path):
                    continue
                label = read_label_image(label_path, shape=(height, width))
                anns, n_dropped = instance_annotations(label, cat['id'], drop_border=drop_border)
                dropped += n_dropped
                for ann in anns:
                    ann.update(id=len(annotations) + 1, image_id=img_id)
                    annotations.append(ann)
            file_name = f'{folder}.png'
            _save_png(rgb, osp.join(staging, file_name))
            images.append(dict(id=img_id, file_name=file_name, height=int(height), width=int(width)))

        train_ids, val_ids = split_ids([im['id'] for im in images], val_fraction=val_fraction, seed=seed)
        _move_staged(staging, osp.join(out_dir, 'images'))
        for split, ids in (('train', set(train_ids)), ('val', set(val_ids))):
            coco = dict(images=[im for im in images if im['id'] in ids],
                        annotations=[a for a in annotations if a['image_id'] in ids],
                        categories=categories)
            dump_json_atomic(coco, osp.join(out_dir, 'annotations', f'instances_{split}.json'))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dict(images=len(images), train_images=len(train_ids), val_images=len(val_ids),
                instances=len(annotations), dropped_border=dropped)


def load_name_to_id(path: PathLike) -> Dict[str, int]:
    """Read a test image ``file name -> image id`` mapping.

    Accepts a json object ``{"name.tif": 1, ...}`` or a list of image records
    ``[{"file_name": "name.tif", "id": 1, ...}, ...]`` (the form of ``test_image_name_to_ids.json``).

    Raises:
        ValueError: naming ``path``, for another structure, a non-integer id or a duplicate name or id.
    """
    path = os.fspath(path)
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list) and all(isinstance(r, dict) and 'file_name' in r and 'id' in r for r in data):
        items = [(r['file_name'], r['id']) for r in data]
    else:
        raise ValueError(f'{path}: expected {{file_name: id}} or a list of {{"file_name", "id"}} records')
    mapping = {}
    for name, img_id in items:
        if isinstance(img_id, bool) or not isinstance(img_id, int):
            raise ValueError(f'{path}: image id of {name!r} must be an integer, got {img_id!r}')
        if name in mapping:
            raise ValueError(f'{path}: duplicate file name {name!r}')
        mapping[name] = img_id
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f'{path}: image ids are not unique')
    return mapping


def convert_cells_test(image_dir: PathLike,
                       name_to_id_file: PathLike,
                       out_dir: PathLike,
                       class_names: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Convert unlabelled test images to ``<out_dir>/test/<stem>.png`` + ``annotations/image_info_test.json``.

    The json holds ``images`` (ids from the mapping, ``file_name`` ``<stem>.png``, height, width), an empty
    ``annotations`` list and the categories, so it serves as mmdet's test dataset (``CocoDataset`` with
    ``test_mode=True``); the predicted ``img_id`` of each image is then its id from the mapping.

    Args:
        image_dir: folder of test images (``.tif``, ``.png``, ...).
        name_to_id_file: mapping json, see :func:`load_name_to_id`.
        out_dir: output root.
        class_names (Sequence[str], optional): category names, defaults to :data:`CELL_CLASSES`.

    Returns:
        dict: ``images`` written.

    Raises:
        FileNotFoundError: an image named in the mapping is missing from ``image_dir``.
        ValueError: an image in ``image_dir`` has no id in the mapping; two names share a stem; a record's
            ``height``/``width`` disagrees with the image.
    """
    image_dir, out_dir = os.fspath(image_dir), os.fspath(out_dir)
    categories = _categories(class_names)
    mapping = load_name_to_id(name_to_id_file)
    with open(name_to_id_file) as f:
        raw = json.load(f)
    sizes = {r['file_name']: r for r in raw} if isinstance(raw, list) else {}
    present = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(_IMAGE_EXTS))
    extra = [n for n in present if n not in mapping]
    if extra:
        raise ValueError(f'{name_to_id_file}: no image id for {extra[:5]} in {image_dir}')
    stems = [osp.splitext(n)[0] for n in mapping]
    if len(set(stems)) != len(stems):
        raise ValueError(f'{name_to_id_file}: two file names share a stem, their PNGs would collide')

    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(dir=out_dir, prefix='.test.staging-')
    try:
        images = []
        for name, img_id in sorted(mapping.items(), key=lambda kv: kv[1]):
            path = osp.join(image_dir, name)
            rgb = read_image(path)
            height, width = rgb.shape[:2]
            rec = sizes.get(name, {})
            if ('height' in rec and rec['height'] != height) or ('width' in rec and rec['width'] != width):
                raise ValueError(f'{name_to_id_file}: {name} is {width}x{height} (WxH) but the record says '
                                 f'{rec.get("width")}x{rec.get("height")}')
            file_name = osp.splitext(name)[0] + '.png'
            _save_png(rgb, osp.join(staging, file_name))
            images.append(dict(id=img_id, file_name=file_name, height=int(height), width=int(width)))
        _move_staged(staging, osp.join(out_dir, 'test'))
        dump_json_atomic(dict(images=images, annotations=[], categories=categories),
                         osp.join(out_dir, 'annotations', 'image_info_test.json'))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dict(images=len(images))
