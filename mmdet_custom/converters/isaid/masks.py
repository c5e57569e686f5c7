"""Mask tracing and encoding: the devkit's polygons (the default) and exact polygons (``masks='exact'``).

Two definitions of an instance's mask in a patch:

* ``'devkit'``: as the iSAID devkit writes it (``preprocess/preprocess.py`` through cityscapesScripts'
  ``instances2dict_with_polygons``): every external contour of the instance's pixels, traced by ``cv2.findContours``
  (``RETR_EXTERNAL``, ``CHAIN_APPROX_NONE``), is a polygon through the *centres* of the boundary pixels; ``area`` is
  the pixel count and ``bbox`` the polygons' extent with detectron's ``xyxy_to_xywh`` (+1). Rasterised, such a
  polygon loses about half a pixel all around (~6.6% of the area on iSAID), and a one-pixel-wide part rasterises
  to nearly nothing. This is the ground truth of every published iSAID number.
* ``'exact'``: polygons that ``pycocotools`` rasterises back to exactly the instance's pixels (holes filled), or
  RLE with holes; ``area`` and ``bbox`` are those of the rasterised segmentation.
"""
from typing import List, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import shapely

from mmdet_custom.evaluation.functional.masks import encode_mask

# Polygon vertices of clipped json geometries are rounded to this many decimals (pixels).
_DECIMALS = 2


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """Polygons around every connected part of a binary mask (holes filled) that rasterise back to its pixels.

    ``cv2.findContours`` traces the outer borders of the 8-connected parts on the mask upsampled 2x (nearest), so
    the polygons run a quarter pixel inside the pixels' outer edges. In the COCO convention (pixel ``(x, y)`` covers
    ``[x, x+1) x [y, y+1)``, as ``pycocotools`` rasterises by pixel centre) every pixel centre of the mask is then
    strictly inside and every other one strictly outside, so ``pycocotools`` gives back exactly the mask (without
    its holes). Vertices are multiples of 0.25 in ``[0.25, W - 0.25] x [0.25, H - 0.25]``.

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


def devkit_polygons(mask: np.ndarray) -> List[List[int]]:
    """The devkit's polygons of one instance: every external contour through the centres of its boundary pixels.

    As cityscapesScripts' ``instances2dict_with_polygons`` in the iSAID devkit: ``cv2.findContours(mask,
    cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)``, each contour one flat polygon of integer pixel coordinates, in
    OpenCV's order. The mask is traced with one pixel of background around it, so a crop of a patch gives the
    polygons of the whole patch shifted by the crop's offset.

    Args:
        mask (np.ndarray): ``(H, W)`` bool or 0/1 mask.

    Returns:
        list[list[int]]: flat ``[x0, y0, x1, y1, ...]`` polygons; a one-pixel part gives a 1-point polygon.
    """
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [(c.reshape(-1, 2) - 1).ravel().tolist() for c in contours]


def devkit_valid(polygons: List[List[int]]) -> bool:
    """The devkit's contour check: at least one polygon, and every polygon with more than 2 points (> 4 numbers).

    ``preprocess.py`` drops an instance with no contour, or with *any* contour of <= 4 numbers (a part of one or
    two pixels), whatever the size of its other parts.
    """
    return bool(polygons) and min(len(p) for p in polygons) > 4


def devkit_bbox(polygons: List[List[int]]) -> List[float]:
    """The devkit's box of an instance: its polygons' extent through detectron's ``xyxy_to_xywh``.

    Returns:
        list[float]: ``[min_x, min_y, max_x - min_x + 1, max_y - min_y + 1]`` (pixels): the extent of the pixels.
    """
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    x0, y0 = min(xs), min(ys)
    return [float(x0), float(y0), float(max(xs) - x0 + 1), float(max(ys) - y0 + 1)]


def polygons_of(geom, decimals: int = _DECIMALS) -> List[List[float]]:
    """Exterior rings of the polygonal parts of a shapely geometry as flat COCO polygons (holes dropped)."""
    polygons = []
    for part in shapely.get_parts(geom):
        if part.geom_type == 'MultiPolygon' or part.geom_type == 'GeometryCollection':
            polygons.extend(polygons_of(part, decimals))
            continue
        if part.geom_type != 'Polygon' or part.area <= 0:
            continue
        ring = np.round(np.asarray(part.exterior.coords)[:-1], decimals)
        ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)]  # drop repeats made by rounding
        if len(ring) >= 3:
            polygons.append(ring.ravel().tolist())
    return polygons


def _rle_of_polygons(polygons: List[List[float]], height: int, width: int) -> dict:
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def exact_annotation(category_id: int, height: int, width: int, polygons: Optional[List[List[float]]] = None,
                     mask: Optional[np.ndarray] = None, rle: bool = False, iscrowd: int = 0) -> Optional[dict]:
    """A COCO annotation (without ids) whose area and bbox are those of its encoded segmentation; None if empty.

    The segmentation is given as ``polygons`` (patch coordinates, kept as they are) or as a ``(height, width)``
    binary ``mask`` (written as :func:`mask_to_polygons`, or exactly as RLE with ``rle=True``).
    """
    if mask is not None:
        if rle:
            segmentation = encoded = encode_mask(mask)
        else:
            polygons = mask_to_polygons(mask)
    if polygons is not None:
        if not polygons:
            return None
        encoded = _rle_of_polygons(polygons, height, width)
        segmentation = dict(size=[height, width], counts=encoded['counts'].decode('ascii')) if rle else polygons
    area = int(mask_utils.area(encoded))
    if area == 0:
        return None
    bbox = [float(v) for v in mask_utils.toBbox(encoded)]
    return dict(category_id=category_id, segmentation=segmentation, area=area, bbox=bbox, iscrowd=int(iscrowd))


def devkit_annotation(category_id: int, crop: np.ndarray, offset: Tuple[int, int], height: int, width: int,
                      rle: bool = False, iscrowd: int = 0) -> Optional[dict]:
    """A COCO annotation (without ids) of one instance as the devkit writes it; None if the devkit drops it.

    Args:
        category_id (int): the category id to write.
        crop (np.ndarray): ``(h, w)`` bool mask of the instance within its box in the patch.
        offset (tuple[int, int]): ``(x, y)`` of the crop's top-left pixel in the patch.
        height (int): patch height (for ``rle``).
        width (int): patch width (for ``rle``).
        rle (bool): write the polygons rasterised as compressed RLE (``area`` and ``bbox`` stay the devkit's).

    Returns:
        dict | None: ``category_id``, ``segmentation`` (the devkit's polygons in patch coordinates), ``area`` (pixel
        count), ``bbox`` (:func:`devkit_bbox`), ``iscrowd``; None when :func:`devkit_valid` fails (the caller
        applies the area threshold).
    """
    dx, dy = offset
    polygons = [(np.asarray(p).reshape(-1, 2) + (dx, dy)).ravel().tolist() for p in devkit_polygons(crop)]
    if not devkit_valid(polygons):
        return None
    segmentation = polygons
    if rle:
        encoded = _rle_of_polygons(polygons, height, width)
        segmentation = dict(size=[height, width], counts=encoded['counts'].decode('ascii'))
    return dict(category_id=category_id, segmentation=segmentation, area=int(np.count_nonzero(crop)),
                bbox=devkit_bbox(polygons), iscrowd=int(iscrowd))
