"""Convert microscopy cell data (one folder per image, one label image per class) to COCO instance jsons.

Layout read by :func:`convert_cells` (as in the Data Science Bowl 2018 stage1 release, regrouped per class)::

    <root>/train/<id>/image.tif      grey, RGB or RGBA image, uint8 or 16-bit
    <root>/train/<id>/class1.tif     label image of class 1: 0 = background, each distinct value > 0 = one instance
    ...
    <root>/train/<id>/class4.tif     (any class file may be missing: that image has no instance of the class)

File naming rule (:func:`find_cell_files`), matched without regard to case: the image is ``image.<ext>`` with
``<ext>`` one of tif, tiff, png, jpg, jpeg, bmp; the label image of class ``k`` is ``class<k>.tif`` or
``class<k>.tiff`` (``k`` in decimal, ``class01`` = ``class1``). Two files for one role (``class1.tif`` and
``class1.tiff``, or ``image.tif`` and ``image.png``) and a label image in another format (``class1.png``) are
refused, naming the files; hidden files (``._class1.tif``, ``.DS_Store``) and other names are ignored.

Layout written::

    <out_dir>/images/<id>.png                     8-bit RGB, see :func:`image_to_rgb8`
    <out_dir>/annotations/instances_train.json    COCO: RLE masks, iscrowd 0, categories 1..K
    <out_dir>/annotations/instances_val.json

:func:`convert_cells_test` turns a folder of unlabelled test images plus their ``file name -> image id`` mapping
into ``<out_dir>/test/<stem>.png`` and ``<out_dir>/annotations/image_info_test.json`` (images only), whose image
ids are the given ones, so that predictions exported with
:func:`mmdet_custom.apis.export.predictions_to_coco_results` carry them directly.

Outputs are written through :func:`mmdet_custom.utils.fileio.atomic_dir`: a run builds the new output folder beside
the old one and swaps it in whole, so a reader (or a run killed at any moment) sees the old output or the complete
new one -- never train and val jsons of two runs. A run replaces only its own part of the folder (the train/val
part: ``images/`` and ``instances_{train,val}.json``; the test part: ``test/`` and ``image_info_test.json``) and
keeps the other part of an earlier run.

The mask helpers (:func:`encode_mask`, :func:`touches_border`) live in
:mod:`mmdet_custom.evaluation.functional.masks` and the image name -> id parser in
:mod:`mmdet_custom.evaluation.functional.results`; they are shared with the exporters and the iSAID converter.
"""
import os
import os.path as osp
import re
import shutil
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils
import tifffile
from PIL import Image

from mmdet_custom.evaluation.functional.masks import encode_mask, touches_border  # noqa: F401  (re-exported)
from mmdet_custom.evaluation.functional.results import load_name_to_ids, parse_name_to_ids
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_dir, check_output_outside_inputs, dump_json_atomic, load_json

#: Default category names; category id k (1-based) is read from ``class{k}.tif`` (or ``.tiff``).
CELL_CLASSES = ('class1', 'class2', 'class3', 'class4')

_IMAGE_EXTS = ('.tif', '.tiff', '.png', '.jpg', '.jpeg', '.bmp')
_LABEL_EXTS = ('.tif', '.tiff')
_IMAGE_NAME = re.compile(r'image(\.[^.]+)', re.IGNORECASE)
_CLASS_NAME = re.compile(r'class(\d+)(\.[^.]+)', re.IGNORECASE)


class CellsConversionError(UserError, ValueError):
    """Input the cells converter refuses (a label image of the wrong type or size, two files for one class,
    a bad test-image mapping); the message names the file."""

PathLike = Union[str, os.PathLike]


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
        CellsConversionError: (a ``ValueError``) for a shape that is none of the above, or a float image holding
            NaN/inf.
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
        raise CellsConversionError(f'{name}: unsupported image shape {tuple(np.shape(image))}; expected (H, W) grey, '
                         '(H, W, 3) RGB or (H, W, 4) RGBA')
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    img = img.astype(np.float64)
    if not np.isfinite(img).all():
        raise CellsConversionError(f'{name}: image holds NaN or infinite values')
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
        CellsConversionError: (a ``ValueError``) naming ``path``, if the labels are not integers (e.g. a float
            mask), are negative, are not
            2-D, or their size differs from ``shape``.
    """
    path = os.fspath(path)
    label = np.asarray(tifffile.imread(path))
    if label.ndim > 2:
        label = np.squeeze(label)
    if label.ndim != 2:
        raise CellsConversionError(f'{path}: label image must be 2-D (H, W), got shape {label.shape}')
    if label.dtype == bool:
        label = label.astype(np.uint8)
    if not np.issubdtype(label.dtype, np.integer):
        raise CellsConversionError(f'{path}: label image has dtype {label.dtype}; instance labels must be integers '
                         '(uint8/uint16), one distinct value per instance')
    if np.issubdtype(label.dtype, np.signedinteger) and label.size and label.min() < 0:
        raise CellsConversionError(f'{path}: label image holds negative values')
    if shape is not None and tuple(label.shape) != tuple(shape):
        raise CellsConversionError(f'{path}: mask size {label.shape[1]}x{label.shape[0]} (WxH) differs from the image '
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
        CellsConversionError: (a ``ValueError``) if ``val_fraction`` is not in ``[0, 1)``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise CellsConversionError(f'val_fraction (--val-fraction) must be in [0, 1), got {val_fraction}')
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
        raise CellsConversionError(f'class_names (--class-names) must be non-empty and unique, got {names}')
    return [dict(id=i + 1, name=name) for i, name in enumerate(names)]




def find_cell_files(folder: PathLike, num_classes: int) -> Tuple[str, Dict[int, str]]:
    """The image and the label images of one image folder, by the naming rule of the module docstring.

    Args:
        folder: ``<root>/train/<id>``.
        num_classes (int): K; label images ``class1`` .. ``classK`` are read.

    Returns:
        tuple[str, dict[int, str]]: the image path and ``{k: label image path}`` (1-based class index ``k``,
        sorted); classes without a label image are absent.

    Raises:
        FileNotFoundError: the folder holds no image file (the expected path is named).
        CellsConversionError: two files for one role (two images, or ``class1.tif`` beside ``class1.tiff``), a
            label image that is not TIFF, an image of an unsupported format, or a class index outside ``1..K``.
    """
    folder = os.fspath(folder)
    names = sorted(f for f in os.listdir(folder) if not f.startswith('.') and osp.isfile(osp.join(folder, f)))
    images = []
    for fname in names:
        m = _IMAGE_NAME.fullmatch(fname)
        if m:
            if m.group(1).lower() not in _IMAGE_EXTS:
                raise CellsConversionError(f'{osp.join(folder, fname)}: unsupported image format {m.group(1)!r}; '
                                           f'save the image as one of '
                                           f'{", ".join("image" + e for e in _IMAGE_EXTS)}')
            images.append(osp.join(folder, fname))
    if not images:
        raise FileNotFoundError(f'image missing: {osp.join(folder, "image.tif")} (looked for image with the '
                                f'extensions {", ".join(_IMAGE_EXTS)})')
    if len(images) > 1:
        raise CellsConversionError(f'{folder}: {len(images)} image files {[osp.basename(p) for p in images]}; '
                                   f'keep exactly one')
    labels = {}
    for fname in names:
        m = _CLASS_NAME.fullmatch(fname)
        if not m:
            continue
        path, k = osp.join(folder, fname), int(m.group(1))
        if m.group(2).lower() not in _LABEL_EXTS:
            raise CellsConversionError(f'{path}: label images must be TIFF (class{k}.tif or class{k}.tiff); '
                                       f'convert it, or move it out of the folder')
        if not 1 <= k <= num_classes:
            raise CellsConversionError(f'{path}: class index {m.group(1)} has no name (only {num_classes} class '
                                       f'names; give them with --class-names / class_names)')
        labels.setdefault(k, []).append(path)
    for k, paths in labels.items():
        if len(paths) > 1:
            raise CellsConversionError(f'{folder}: {len(paths)} label images for class {k} '
                                       f'{[osp.basename(p) for p in paths]}; keep exactly one')
    return images[0], {k: paths[0] for k, paths in sorted(labels.items())}


def _save_png(rgb: np.ndarray, path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(rgb).save(path, format='PNG')


def _remove(path: str) -> None:
    """Remove a file or folder of the temporary output (a hard-linked copy: the old output is not touched)."""
    if osp.isdir(path) and not osp.islink(path):
        shutil.rmtree(path)
    elif osp.lexists(path):
        os.remove(path)


def _train_folders(root: str) -> Tuple[str, List[str]]:
    train_root = osp.join(root, 'train')
    if not osp.isdir(train_root):
        raise FileNotFoundError(f'cells train folder missing: {train_root} (expected <root>/train/<id>/image.tif)')
    folders = sorted(d for d in os.listdir(train_root)
                     if not d.startswith('.') and osp.isdir(osp.join(train_root, d)))
    if not folders:
        raise FileNotFoundError(f'no image folders in {train_root} (expected <root>/train/<id>/image.tif)')
    return train_root, folders


def convert_cells(root: PathLike,
                  out_dir: PathLike,
                  val_fraction: float = 0.2,
                  seed: int = 0,
                  drop_border: bool = False,
                  class_names: Optional[Sequence[str]] = None,
                  test_dir: Optional[PathLike] = None,
                  test_name_to_ids: Optional[PathLike] = None) -> Dict[str, int]:
    """Convert ``<root>/train/<id>/{image,class1..classK}.tif`` folders to COCO train/val jsons.

    Image ids are 1..N in the sorted order of the folder names (the same whatever the split), annotation ids
    1..M in that order, then by class, then by label value. Each distinct non-zero value of ``class{k}.tif`` (or
    ``.tiff``, see :func:`find_cell_files`) is one instance of category k (named ``class_names[k - 1]``); a
    missing class file means no instance of it.

    The output is built in a temporary folder beside ``out_dir`` and swapped in whole
    (:func:`~mmdet_custom.utils.fileio.atomic_dir`): on bad input, an error or a kill, ``out_dir`` stays as it
    was. ``images/`` and both jsons are replaced together; the test part of an earlier run is kept unless
    ``test_dir`` is given too (then it is replaced in the same swap).

    Args:
        root: dataset root holding ``train/``.
        out_dir: output root (``images/``, ``annotations/instances_{train,val}.json``).
        val_fraction (float): share of images in val, see :func:`split_ids`. Defaults to 0.2.
        seed (int): split seed. Defaults to 0.
        drop_border (bool): drop instances whose mask touches the image border. Defaults to False.
        class_names (Sequence[str], optional): K category names; defaults to :data:`CELL_CLASSES`.
        test_dir, test_name_to_ids (optional): convert a test set as well, see :func:`convert_cells_test`.

    Returns:
        dict: ``images``, ``train_images``, ``val_images``, ``instances`` (written), ``dropped_border``,
        ``images_without_labels`` (folders without any class file), and ``test_images`` when ``test_dir`` is given.

    Warns:
        UserWarning: when image folders hold no class file, or the output (or its train split) holds no instance:
            the conversion then succeeds, but a model could not learn from it.

    Raises:
        FileNotFoundError: ``<root>/train`` or an image is missing (the path is named).
        CellsConversionError: (a ``ValueError``) a label image is not integer, not 2-D, of another size than its
            image, is not TIFF, two files name one class, or a ``class{k}.tif`` has ``k`` beyond the class names
            (the file is named).
        UserError: ``out_dir`` is, contains or lies inside an input, or holds files this project did not write.
    """
    root, out_dir = os.fspath(root), os.fspath(out_dir)
    categories = _categories(class_names)
    split_ids([], val_fraction=val_fraction)  # checks the fraction before any work
    if (test_dir is None) != (test_name_to_ids is None):
        raise CellsConversionError('test_dir (--test-dir) and test_name_to_ids (--test-name-to-ids) go together')
    train_root, folders = _train_folders(root)
    check_output_outside_inputs(out_dir, root, out_flag='output folder (-o)')
    if test_dir is not None:
        check_output_outside_inputs(out_dir, test_dir, out_flag='output folder (-o)')
    # the naming rule over every folder first: a misnamed file is reported before any image is decoded
    files = [find_cell_files(osp.join(train_root, folder), len(categories)) for folder in folders]

    with atomic_dir(out_dir, keep_existing=True) as tmp:
        for part in ('images', osp.join('annotations', 'instances_train.json'),
                     osp.join('annotations', 'instances_val.json')):
            _remove(osp.join(tmp, part))
        images, annotations, dropped, unlabelled = [], [], 0, []
        # ids from 1 (COCO's convention), unlike the iSAID converter's 0..N-1: no reference json numbers these images
        # (the iSAID one must match the devkit's), and the test images keep the ids of the user's name -> id map
        for img_id, (folder, (image_path, label_paths)) in enumerate(zip(folders, files), start=1):
            rgb = read_image(image_path)
            height, width = rgb.shape[:2]
            if not label_paths:
                unlabelled.append(folder)
            for k, label_path in label_paths.items():
                label = read_label_image(label_path, shape=(height, width))
                anns, n_dropped = instance_annotations(label, k, drop_border=drop_border)
                dropped += n_dropped
                for ann in anns:
                    ann.update(id=len(annotations) + 1, image_id=img_id)
                    annotations.append(ann)
            file_name = f'{folder}.png'
            _save_png(rgb, osp.join(tmp, 'images', file_name))
            images.append(dict(id=img_id, file_name=file_name, height=int(height), width=int(width)))

        train_ids, val_ids = split_ids([im['id'] for im in images], val_fraction=val_fraction, seed=seed)
        per_split = {}
        for split, ids in (('train', set(train_ids)), ('val', set(val_ids))):
            coco = dict(images=[im for im in images if im['id'] in ids],
                        annotations=[a for a in annotations if a['image_id'] in ids],
                        categories=categories)
            per_split[split] = len(coco['annotations'])
            dump_json_atomic(coco, osp.join(tmp, 'annotations', f'instances_{split}.json'))
        stats = dict(images=len(images), train_images=len(train_ids), val_images=len(val_ids),
                     instances=len(annotations), dropped_border=dropped, images_without_labels=len(unlabelled))
        if test_dir is not None:
            stats['test_images'] = _write_test(test_dir, test_name_to_ids, tmp, categories)

    if unlabelled:
        warnings.warn(f'{len(unlabelled)} of {len(folders)} image folders in {train_root} hold no class<k>.tif '
                      f'label image ({", ".join(unlabelled[:5])}{", ..." if len(unlabelled) > 5 else ""}); they are '
                      f'written as images without any instance. Check the mask file names if they should have some.')
    if not annotations:
        warnings.warn(f'{out_dir}: no instance at all in {train_root} ({len(images)} images'
                      f'{f", {dropped} dropped at the border" if dropped else ""}): the jsons hold no annotation '
                      f'and a model cannot learn from them.')
    elif not per_split['train']:
        warnings.warn(f'{out_dir}: instances_train.json holds no annotation (all {len(annotations)} instances '
                      f'are in val): choose another --seed or --val-fraction.')
    return stats


def load_name_to_id(path: PathLike) -> Dict[str, int]:
    """Read a test image ``file name -> image id`` mapping.

    Accepts a json object ``{"name.tif": 1, ...}`` or a list of image records
    ``[{"file_name": "name.tif", "id": 1, ...}, ...]`` (the form of ``test_image_name_to_ids.json``).

    Raises:
        UserError: naming ``path``, when it is missing or not valid json.
        CellsConversionError: (a ``ValueError``) naming ``path``, for another structure, a non-integer id or a
            duplicate name or id.
    """
    return load_name_to_ids(os.fspath(path), 'test image name -> id mapping', CellsConversionError)


def _write_test(image_dir: PathLike, name_to_id_file: PathLike, dst: str, categories: List[dict]) -> int:
    """Check the test images against their mapping, then write them and their json into ``dst`` (replacing the
    test part there); returns the number of images."""
    image_dir, name_to_id_file = os.fspath(image_dir), os.fspath(name_to_id_file)
    raw = load_json(name_to_id_file, 'test image name -> id mapping')
    mapping = parse_name_to_ids(raw, f'test image name -> id mapping {name_to_id_file}', CellsConversionError)
    sizes = {r['file_name']: r for r in raw} if isinstance(raw, list) else {}
    if not osp.isdir(image_dir):
        raise FileNotFoundError(f'test image folder not found: {image_dir}')
    present = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(_IMAGE_EXTS))
    extra = [n for n in present if n not in mapping]
    if extra:
        raise CellsConversionError(f'{name_to_id_file}: no image id for {extra[:5]} in {image_dir}')
    stems = [osp.splitext(n)[0] for n in mapping]
    if len(set(stems)) != len(stems):
        raise CellsConversionError(f'{name_to_id_file}: two file names share a stem, their PNGs would collide')

    _remove(osp.join(dst, 'test'))
    _remove(osp.join(dst, 'annotations', 'image_info_test.json'))
    images = []
    for name, img_id in sorted(mapping.items(), key=lambda kv: kv[1]):
        rgb = read_image(osp.join(image_dir, name))
        height, width = rgb.shape[:2]
        rec = sizes.get(name, {})
        if ('height' in rec and rec['height'] != height) or ('width' in rec and rec['width'] != width):
            raise CellsConversionError(f'{name_to_id_file}: {name} is {width}x{height} (WxH) but the record says '
                                       f'{rec.get("width")}x{rec.get("height")}')
        file_name = osp.splitext(name)[0] + '.png'
        _save_png(rgb, osp.join(dst, 'test', file_name))
        images.append(dict(id=img_id, file_name=file_name, height=int(height), width=int(width)))
    os.makedirs(osp.join(dst, 'test'), exist_ok=True)
    dump_json_atomic(dict(images=images, annotations=[], categories=categories),
                     osp.join(dst, 'annotations', 'image_info_test.json'))
    if not images:
        warnings.warn(f'{name_to_id_file}: no test image: image_info_test.json lists none')
    return len(images)


def convert_cells_test(image_dir: PathLike,
                       name_to_id_file: PathLike,
                       out_dir: PathLike,
                       class_names: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Convert unlabelled test images to ``<out_dir>/test/<stem>.png`` + ``annotations/image_info_test.json``.

    The json holds ``images`` (ids from the mapping, ``file_name`` ``<stem>.png``, height, width), an empty
    ``annotations`` list and the categories, so it serves as mmdet's test dataset (``CocoDataset`` with
    ``test_mode=True``); the predicted ``img_id`` of each image is then its id from the mapping. The test part
    of ``out_dir`` is replaced in one swap (see :func:`convert_cells`); its train/val part is kept.

    Args:
        image_dir: folder of test images (``.tif``, ``.png``, ...).
        name_to_id_file: mapping json, see :func:`load_name_to_id`.
        out_dir: output root.
        class_names (Sequence[str], optional): category names, defaults to :data:`CELL_CLASSES`.

    Returns:
        dict: ``images`` written.

    Raises:
        FileNotFoundError: ``image_dir`` or an image named in the mapping is missing.
        UserError: the mapping is missing or not valid json; ``out_dir`` overlaps ``image_dir`` or holds files
            this project did not write.
        CellsConversionError: (a ``ValueError``) an image in ``image_dir`` has no id in the mapping; two names
            share a stem; a record's ``height``/``width`` disagrees with the image.
    """
    image_dir, out_dir = os.fspath(image_dir), os.fspath(out_dir)
    categories = _categories(class_names)
    check_output_outside_inputs(out_dir, image_dir, out_flag='output folder (-o)')
    with atomic_dir(out_dir, keep_existing=True) as tmp:
        n = _write_test(image_dir, name_to_id_file, tmp, categories)
    return dict(images=n)
