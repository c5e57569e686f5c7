"""Matching a scene's detections against its ground truth and against each other, by mask IoU: objects found once,
duplicates left and objects lost (:func:`match_counts`), duplicate pairs in one output (:func:`duplicate_pairs`).
Used by the whole-scene benchmark (:mod:`mmdet_custom.apis.scene_bench`) on COCO results of one scene image.

Candidates come from an R-tree on the boxes (shapely ``STRtree``), then the masks' IoU (pycocotools) decides; a
match is the same category at mask IoU >= 0.5. Masks are COCO polygons or RLE (``counts`` as str or bytes).
"""
import numpy as np
import shapely
from pycocotools import mask as mask_utils


def to_rle(segm, height: int, width: int) -> dict:
    """Compressed RLE of COCO polygons or RLE; SAHI can output an empty polygon list (merged masks that lost every
    polygon of 3+ points): an empty mask."""
    if isinstance(segm, dict):
        return dict(segm, counts=segm['counts'].encode() if isinstance(segm['counts'], str) else segm['counts'])
    polygons = [p for p in segm if len(p) >= 6]
    if not polygons:
        return mask_utils.frPyObjects({'size': [height, width], 'counts': [height * width]}, height, width)
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def match_counts(gt_coco: dict, results: list) -> dict:
    """Per ground-truth object, the detections of its class at mask IoU >= 0.5 (R-tree on boxes first)."""
    gts = gt_coco['annotations']
    if not results:
        return dict(exactly_once=0, duplicates=0, lost=len(gts), unmatched_detections=0)
    height, width = gt_coco['images'][0]['height'], gt_coco['images'][0]['width']

    gt_rles = [to_rle(a['segmentation'], height, width) for a in gts]
    dt_rles = [to_rle(r['segmentation'], height, width) for r in results]
    gt_boxes = mask_utils.toBbox(gt_rles)
    dt_boxes = mask_utils.toBbox(dt_rles)
    tree = shapely.STRtree(shapely.box(dt_boxes[:, 0], dt_boxes[:, 1], dt_boxes[:, 0] + dt_boxes[:, 2],
                                       dt_boxes[:, 1] + dt_boxes[:, 3]))
    g_idx, d_idx = tree.query(shapely.box(gt_boxes[:, 0], gt_boxes[:, 1], gt_boxes[:, 0] + gt_boxes[:, 2],
                                          gt_boxes[:, 1] + gt_boxes[:, 3]), predicate='intersects')
    hits = np.zeros(len(gts), int)
    used = np.zeros(len(results), bool)
    for g, d in zip(g_idx, d_idx):
        if gts[g]['category_id'] != results[d]['category_id']:
            continue
        if mask_utils.iou([dt_rles[d]], [gt_rles[g]], [0])[0, 0] >= 0.5:
            hits[g] += 1
            used[d] = True
    return dict(exactly_once=int((hits == 1).sum()), duplicates=int(np.clip(hits - 1, 0, None).sum()),
                lost=int((hits == 0).sum()), unmatched_detections=int((~used).sum()))


def duplicate_pairs(results: list, height: int, width: int) -> int:
    """Pairs of output detections of one class whose masks overlap at IoU >= 0.5 (R-tree on boxes first)."""
    if len(results) < 2:
        return 0
    rles = [to_rle(r['segmentation'], height, width) for r in results]
    boxes = mask_utils.toBbox(rles)
    geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3])
    a, b = shapely.STRtree(geoms).query(geoms, predicate='intersects')
    count = 0
    for i, j in zip(a, b):
        if i < j and results[i]['category_id'] == results[j]['category_id'] and \
                mask_utils.iou([rles[i]], [rles[j]], [0])[0, 0] >= 0.5:
            count += 1
    return count
