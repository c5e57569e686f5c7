"""Whole-scene ground truth from the raw iSAID masks, for evaluating whole-scene predictions.

The devkit's raw layout holds, beside ``<split>/images/Pxxxx.png``, ``Pxxxx_instance_id_RGB.png`` (instance id =
R * 65536 + G * 256 + B, 0 = background) and ``Pxxxx_instance_color_RGB.png`` (class by colour, see
:data:`~mmdet_custom.utils.isaid_meta.ISAID_PALETTE`). Each instance's class is the majority class colour under
its pixels; instances on an unknown colour (background) are skipped. As in the devkit's ``preprocess.py``,
instances of 10 px or less are dropped. Masks are the exact pixels (not the devkit's traced polygons, which
rasterise ~6.6% smaller), stored cropped like the predictions (see :mod:`.merge`). Both PNGs are read whole.
"""
import glob
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES, ISAID_PALETTE

from .merge import SceneDetections, encode_crops, scene_rle

#: Instances of this many pixels or fewer are dropped (iSAID devkit ``preprocess.py``).
MIN_AREA = 10


def find_isaid_masks(raw_dir: str, stem: str) -> Tuple[str, str]:
    """The ``(instance_id, instance_color)`` PNGs of scene ``stem`` under ``raw_dir``.

    Looked for in ``raw_dir``, ``raw_dir/images`` and ``raw_dir/<split>/images``.

    Raises:
        UserError: not found, or found in more than one place.
    """
    found = []
    for folder in (raw_dir, osp.join(raw_dir, 'images'), *sorted(glob.glob(osp.join(raw_dir, '*', 'images')))):
        ids = osp.join(folder, f'{stem}_instance_id_RGB.png')
        colours = osp.join(folder, f'{stem}_instance_color_RGB.png')
        if osp.isfile(ids) and osp.isfile(colours):
            found.append((ids, colours))
    if not found:
        raise UserError(f'--gt {raw_dir}: no {stem}_instance_id_RGB.png + {stem}_instance_color_RGB.png in it, in '
                        f'images/ or in <split>/images/ (the iSAID devkit layout); the scene {stem} cannot be '
                        f'evaluated')
    if len(found) > 1:
        raise UserError(f'--gt {raw_dir}: the masks of {stem} are in several folders: {[f[0] for f in found]}')
    return found[0]


def isaid_mask_size(id_png: str, color_png: str) -> Tuple[int, int]:
    """``(height, width)`` of a scene's two iSAID mask PNGs, read from their headers (nothing decoded).

    Raises:
        UserError: a file that is not a readable image, or two masks of different sizes (both named).
    """
    from PIL import Image, UnidentifiedImageError
    sizes = []
    for path in (id_png, color_png):
        try:
            with Image.open(path) as image:
                sizes.append(image.size[::-1])
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f'cannot read the iSAID mask {path} as an image ({e})') from None
    if sizes[0] != sizes[1]:
        raise UserError(f'the iSAID masks {id_png} ({sizes[0][1]} x {sizes[0][0]} px) and {color_png} '
                        f'({sizes[1][1]} x {sizes[1][0]} px) differ in size: not the masks of one scene')
    return sizes[0]


def _read_rgb(path: str) -> np.ndarray:
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f'cannot read the iSAID mask {path} as an RGB image')
    return image[..., ::-1].astype(np.int64)


def read_isaid_instances(id_png: str, color_png: str, classes: Sequence[str] = ISAID_CLASSES,
                         min_area: int = MIN_AREA) -> SceneDetections:
    """The instances of one raw iSAID scene as :class:`~.merge.SceneDetections` (score 1, cropped RLE masks).

    Args:
        id_png (str): ``Pxxxx_instance_id_RGB.png``.
        color_png (str): ``Pxxxx_instance_color_RGB.png``.
        classes (Sequence[str]): label space of the result: iSAID class names; instances of iSAID classes not in
            it are skipped. Defaults to all 15 iSAID classes.
        min_area (int): instances of this many pixels or fewer are dropped. Defaults to 10.

    Returns:
        SceneDetections: one row per instance (``labels`` index ``classes``; ``bboxes`` = mask extents;
        ``windows`` one window, the scene).

    Raises:
        UserError: unreadable PNGs, or the two PNGs of different sizes.
    """
    from scipy import ndimage
    ids_rgb, colour_rgb = _read_rgb(id_png), _read_rgb(color_png)
    if ids_rgb.shape != colour_rgb.shape:
        raise UserError(f'{id_png} is {ids_rgb.shape[1]} x {ids_rgb.shape[0]} px but {color_png} is '
                        f'{colour_rgb.shape[1]} x {colour_rgb.shape[0]}')
    height, width = ids_rgb.shape[:2]
    ids = ids_rgb[..., 0] * 65536 + ids_rgb[..., 1] * 256 + ids_rgb[..., 2]
    codes = colour_rgb[..., 0] * 65536 + colour_rgb[..., 1] * 256 + colour_rgb[..., 2]
    code_to_label = {r * 65536 + g * 256 + b: (classes.index(name) if name in classes else -1)
                     for name, (r, g, b) in zip(ISAID_CLASSES, ISAID_PALETTE)}
    uniq_codes, code_inv = np.unique(codes, return_inverse=True)
    label_map = np.array([code_to_label.get(int(c), -1) for c in uniq_codes])[code_inv.reshape(codes.shape)]
    uniq_ids, id_inv = np.unique(ids, return_inverse=True)
    index = id_inv.reshape(ids.shape).astype(np.int32)  # k = position of the instance id in uniq_ids
    background = 0 if uniq_ids[0] == 0 else -1
    dets = SceneDetections(height, width, np.array([[0, 0, width, height]], np.int64))
    boxes, labels, extents, counts = [], [], [], []
    for k, sl in enumerate(ndimage.find_objects(index + 1)):
        if sl is None or k == background:
            continue
        pixels = index[sl] == k
        votes = np.bincount(label_map[sl][pixels] + 1, minlength=len(classes) + 1)
        label = int(votes.argmax()) - 1
        if label < 0 or int(pixels.sum()) <= min_area:
            continue
        ext, crop_counts = encode_crops(pixels[None])
        ext = ext[0] + np.array([sl[1].start, sl[0].start, sl[1].start, sl[0].start])
        boxes.append(ext.astype(np.float32))
        extents.append(ext)
        counts.append(crop_counts[0])
        labels.append(label)
    n = len(labels)
    dets.bboxes = np.array(boxes, np.float32).reshape(n, 4)
    dets.scores = np.ones(n, np.float32)
    dets.labels = np.array(labels, np.int64)
    dets.window_ids = np.zeros(n, np.int64)
    dets.cut = np.zeros(n, bool)
    dets.extents = np.array(extents, np.int64).reshape(n, 4)
    dets.counts = counts
    return dets


def scene_gt_coco(scenes: List[Tuple[int, str, SceneDetections]], classes: Sequence[str],
                  category_ids: Optional[Sequence[int]] = None) -> dict:
    """A COCO ground-truth dict of whole scenes.

    Args:
        scenes (list): ``(image_id, file_name, instances)`` per scene (see :func:`read_isaid_instances`).
        classes (Sequence[str]): class names by label.
        category_ids (Sequence[int], optional): category id by label; ``label + 1`` when None.

    Returns:
        dict: ``images``, ``annotations`` (full-scene RLE, exact pixel ``area``, ``bbox`` ``[x, y, w, h]`` of the
        mask extent, ``iscrowd`` 0; ids from 1) and ``categories``.
    """
    category_ids = list(category_ids) if category_ids is not None else list(range(1, len(classes) + 1))
    images, annotations = [], []
    for image_id, file_name, inst in scenes:
        images.append(dict(id=int(image_id), file_name=file_name, height=int(inst.height), width=int(inst.width)))
        for k in range(len(inst)):
            rle = scene_rle(inst.extents[k], inst.counts[k], inst.height, inst.width)
            x0, y0, x1, y1 = (int(v) for v in inst.extents[k])
            annotations.append(dict(
                id=len(annotations) + 1, image_id=int(image_id), category_id=int(category_ids[int(inst.labels[k])]),
                segmentation=rle, area=float(mask_utils.area({'size': rle['size'],
                                                              'counts': rle['counts'].encode()})),
                bbox=[x0, y0, x1 - x0, y1 - y0], iscrowd=0))
    categories = [dict(id=int(c), name=name) for c, name in zip(category_ids, classes)]
    return dict(images=images, annotations=annotations, categories=categories)
