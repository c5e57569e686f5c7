"""Refusing results whose ``image_id`` follows another numbering of the images than the ground truth's.

A results file names each image by id only. Results exported against one json of a set of images and scored
against another json of the same images give wrong numbers when the two number the images differently: e.g.
patches numbered 1..N scored against the devkit's ``instancesonly_filtered_<split>.json``, which numbers them
0..N-1. pycocotools then matches every detection against the neighbouring patch's objects. When the result ids
reach past the ground truth's (the last patch has detections) the evaluation stops on an unknown id; when they do
not (the last patch has none) it scores the results ~0 without a word (measured: perfect predictions on 3 of 4
devkit val patches, numbered from 1, gave segm mAP 0.000).

:func:`check_result_image_ids` catches both before any evaluation:

* **ids off by one**: some ids are not in the ground truth, but every id - 1 (or + 1) is;
* **ids that fit, content that does not**: the highest-scoring detections of each image overlap the ground truth's
  objects (box IoU >= 0.5) of the image one id lower (or higher) far more often than those of the image they name;
* **boxes outside their image**: most boxes reach past the named image's width/height.

Nothing here imports torch or mmdet.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmdet_custom.utils.errors import UserError

#: detections per image compared with the ground truth (the highest-scoring ones), and images compared at most:
#: enough evidence for a clear verdict, a few milliseconds on a whole iSAID split
TOP_PER_IMAGE = 10
MAX_IMAGES = 500
#: a shifted numbering is reported when reading the ids shifted matches at least this fraction of the compared
#: detections, at least MIN_HITS of them, and RATIO times the fraction matched when reading them as they are
MIN_SHIFTED_FRACTION = 0.25
MIN_HITS = 5
RATIO = 3.0
#: boxes past their image by more than 2 px + 1% of its side count as outside; reported when they are most of at
#: least MIN_BOXES boxes (a model's boxes are clipped to the image)
MIN_BOXES = 10

_FIX = ("export the results against the ground truth's own json (the test config's ann_file), or map file names to "
        "its ids with tools/test.py --name-to-ids")


class ImageNumberingError(UserError, ValueError):
    """Results whose ``image_id`` follows another numbering of the images than the ground truth's."""


def _box(res: dict) -> Optional[List[float]]:
    """``[x, y, w, h]`` of a result entry: its ``bbox``, else the extent of a compressed RLE; None if neither."""
    bbox = res.get('bbox')
    if isinstance(bbox, (list, tuple)) and len(bbox) == 4:
        try:
            return [float(v) for v in bbox]
        except (TypeError, ValueError):
            return None
    segm = res.get('segmentation')
    if isinstance(segm, dict) and isinstance(segm.get('counts'), (str, bytes)) and 'size' in segm:
        try:
            return mask_utils.toBbox(segm).tolist()
        except (TypeError, ValueError):
            return None
    return None


def _score(res: dict) -> float:
    try:
        return float(res.get('score', 0.0))
    except (TypeError, ValueError):
        return 0.0


def _shift_words(shift: int) -> str:
    return f'image_id {"-" if shift < 0 else "+"} {abs(shift)}'


def _agreement(coco_gt: COCO, boxes: Dict[int, np.ndarray], shift: int) -> Tuple[int, int]:
    """(detections overlapping an object of image ``id + shift`` with box IoU >= 0.5, detections compared)."""
    hits = compared = 0
    for img_id, dets in boxes.items():
        target = img_id + shift
        if target not in coco_gt.imgs:
            continue
        compared += len(dets)
        gts = [a['bbox'] for a in coco_gt.imgToAnns.get(target, []) if not a.get('iscrowd', 0)]
        if gts:
            ious = np.asarray(mask_utils.iou(dets.tolist(), gts, [0] * len(gts)))
            hits += int(np.count_nonzero(ious.reshape(len(dets), len(gts)).max(axis=1) >= 0.5))
    return hits, compared


def check_result_image_ids(coco_gt: COCO, results: Sequence[dict], source: str = 'results',
                           gt_source: str = 'the ground truth') -> None:
    """Refuse results whose ``image_id`` follows another numbering of the images than ``coco_gt``'s.

    Args:
        coco_gt (COCO): the ground truth (``bbox`` on every annotation, ``height``/``width`` on the images for the
            box check).
        results (Sequence[dict]): COCO results ``{image_id, category_id, score, bbox | segmentation}``; entries
            that are malformed are passed over (the loading reports them).
        source (str): the results' name in messages (e.g. their file).
        gt_source (str): the ground truth's name in messages.

    Raises:
        ImageNumberingError: (a :class:`~mmdet_custom.utils.errors.UserError`) the ids are the ground truth's
            shifted by one (some name no image of the ground truth, all do once shifted), or they name images of
            the ground truth but the detections fit the objects of the images one id away (see the module
            docstring for the thresholds), or most boxes lie outside the images their ids name. The message names
            ``source``, the field and the evidence.

    Example:
        >>> gt = COCO()
        >>> gt.dataset = dict(images=[dict(id=0, height=8, width=8), dict(id=1, height=8, width=8)],
        ...                   annotations=[], categories=[dict(id=1, name='ship')])
        >>> gt.createIndex()  # doctest: +ELLIPSIS
        creating index...
        >>> check_result_image_ids(gt, [dict(image_id=2, category_id=1, score=1.0, bbox=[0, 0, 2, 2])], 'r.json')
        Traceback (most recent call last):
        ...
        mmdet_custom.evaluation.functional.image_ids.ImageNumberingError: r.json: field image_id: ...
    """
    entries = [(i, r) for i, r in enumerate(results) if isinstance(r, dict)
               and isinstance(r.get('image_id'), (int, np.integer)) and not isinstance(r.get('image_id'), bool)]
    if not entries:
        return
    gt_ids = set(coco_gt.imgs)
    ids = {int(r['image_id']) for _, r in entries}
    unknown = ids - gt_ids
    gt_range = f'{min(gt_ids)}..{max(gt_ids)}' if gt_ids else 'none'
    if unknown:
        first = next(i for i, r in entries if int(r['image_id']) in unknown)
        for shift in (-1, 1):
            if all(k + shift in gt_ids for k in ids):
                raise ImageNumberingError(
                    f'{source}: field image_id: {len(unknown)} of the {len(ids)} image ids of the results are not '
                    f"in {gt_source} (e.g. entry {first}: image_id {results[first]['image_id']}; its ids run "
                    f'{gt_range}), but every {_shift_words(shift)} is: the results number the images from '
                    f'{min(ids)}, the ground truth from {min(gt_ids)}. They were made against another json of these '
                    f'images; {_FIX}')
        return  # ids of another split or mapping: the loading names the first one

    # the highest-scoring detections of (at most MAX_IMAGES evenly spaced) images, as boxes
    by_image: Dict[int, list] = {}
    for _, res in entries:
        by_image.setdefault(int(res['image_id']), []).append(res)
    chosen = sorted(by_image)
    if len(chosen) > MAX_IMAGES:
        chosen = [chosen[k] for k in np.linspace(0, len(chosen) - 1, MAX_IMAGES).round().astype(int)]
    boxes: Dict[int, np.ndarray] = {}
    outside = checked = 0
    for img_id in chosen:
        top = sorted(by_image[img_id], key=_score, reverse=True)[:TOP_PER_IMAGE]
        dets = [b for b in (_box(r) for r in top) if b is not None]
        if not dets:
            continue
        boxes[img_id] = np.asarray(dets, dtype=np.float64)
        img = coco_gt.imgs[img_id]
        if isinstance(img.get('width'), (int, float)) and isinstance(img.get('height'), (int, float)):
            arr = boxes[img_id]
            checked += len(arr)
            outside += int(np.count_nonzero((arr[:, 0] + arr[:, 2] > img['width'] * 1.01 + 2)
                                            | (arr[:, 1] + arr[:, 3] > img['height'] * 1.01 + 2)))
    if checked >= MIN_BOXES and outside > checked / 2:
        raise ImageNumberingError(
            f'{source}: field image_id: {outside} of {checked} boxes (the top {TOP_PER_IMAGE} per image) reach '
            f'past the width/height of the image their image_id names in {gt_source}: the ids name other images '
            f'than the ones predicted on (another numbering of the images?); {_FIX}')
    hits0, compared0 = _agreement(coco_gt, boxes, 0)
    rate0 = hits0 / compared0 if compared0 else 0.0
    for shift in (-1, 1):
        hits, compared = _agreement(coco_gt, boxes, shift)
        rate = hits / compared if compared else 0.0
        if hits >= MIN_HITS and rate >= MIN_SHIFTED_FRACTION and rate >= RATIO * rate0:
            unused = sorted(gt_ids - ids)
            hint = ''
            if unused and (unused[0] == min(gt_ids) or unused[-1] == max(gt_ids)):
                hint = f'; its image {unused[0] if unused[0] == min(gt_ids) else unused[-1]} has no result'
            raise ImageNumberingError(
                f'{source}: field image_id: the detections fit the objects of {gt_source} when each is read as '
                f'{_shift_words(shift)} ({hits} of {compared} top detections overlap an object there, box IoU >= '
                f'0.5; as they are: {hits0} of {compared0}{hint}): the results number the images one off from the '
                f'ground truth (e.g. from 1 where it numbers from 0) and would score about 0; {_FIX}')
