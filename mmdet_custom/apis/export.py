"""Export mmdet instance predictions as a COCO results list (the ``loadRes`` / submission format).

Each result is ``{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score', 'segmentation': RLE}`` with the RLE
``counts`` as ``str``, so the list is json-serialisable and loads with ``pycocotools.coco.COCO.loadRes``.
Used by ``tools/test.py`` for the cells test set (ids from ``test_image_name_to_ids.json``) and for iSAID.
"""
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pycocotools.mask as mask_utils

from mmdet_custom.converters.cells import encode_mask, touches_border
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import dump_json_atomic, load_json

__all__ = ['predictions_to_coco_results', 'load_name_to_ids', 'dump_json_atomic']


def load_name_to_ids(path: str) -> Dict[str, int]:
    """Read an image name -> image id map (``--name-to-ids``), checking its form before any inference runs.

    Args:
        path (str): a json object ``{"<file name>": <id>, ...}`` or a list of records
            ``[{"file_name": ..., "id": ...}, ...]`` (the form of the cells ``test_image_name_to_ids.json``).

    Returns:
        dict[str, int]: file name -> image id.

    Raises:
        UserError: the file is missing or not valid json (with line and column), or an entry is not a name with an
            integer id; the message names the file and the first bad entry.
    """
    data = load_json(path, '--name-to-ids map')
    if isinstance(data, list):
        bad = next((i for i, rec in enumerate(data) if not isinstance(rec, Mapping) or 'file_name' not in rec
                    or 'id' not in rec), None)
        if bad is not None:
            raise UserError(f'--name-to-ids map {path}: entry {bad} ({data[bad]!r:.80}) is not a record with '
                            f'"file_name" and "id"')
        data = {rec['file_name']: rec['id'] for rec in data}
    if not isinstance(data, Mapping):
        raise UserError(f'--name-to-ids map {path} must be a json object {{"<file name>": <image id>}} or a list of '
                        f'{{"file_name", "id"}} records, not a {type(data).__name__}')
    for name, img_id in data.items():
        if isinstance(img_id, bool) or not isinstance(img_id, (int, str)) or not str(img_id).lstrip('-').isdigit():
            raise UserError(f'--name-to-ids map {path}: the id of {name!r} is {img_id!r}, not an integer')
    return {str(name): int(img_id) for name, img_id in data.items()}


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Field of a dict or of an mmengine data element (``DetDataSample``, ``InstanceData``)."""
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, 'detach'):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _image_id(sample: Any, name_to_id: Optional[Mapping[str, int]], stem_to_id: Dict[str, int]) -> int:
    if name_to_id is None:
        img_id = _get(sample, 'img_id')
        if img_id is None:
            raise KeyError('prediction has no img_id; pass name_to_id to map img_path to image ids')
        return int(img_id)
    img_path = _get(sample, 'img_path')
    if img_path is None:
        raise KeyError('prediction has no img_path, needed to look up its id in name_to_id')
    name = osp.basename(img_path)
    if name in name_to_id:
        return int(name_to_id[name])
    stem = osp.splitext(name)[0]
    if stem in stem_to_id:
        return stem_to_id[stem]
    raise KeyError(f'{img_path}: neither {name!r} nor its stem {stem!r} is in name_to_id')


def predictions_to_coco_results(samples: Sequence[Any],
                                cat_ids: Sequence[int],
                                name_to_id: Union[Mapping[str, int], Sequence[dict], None] = None,
                                score_thr: float = 0.0,
                                drop_border: bool = False) -> List[dict]:
    """Build the COCO results list of instance predictions.

    Args:
        samples (Sequence[DetDataSample | dict]): predictions as returned by mmdet's model ``predict`` /
            ``Runner.test`` (masks at the original image size), or dicts with the same fields:
            ``img_id`` or ``img_path``, and ``pred_instances`` with ``scores`` ``(N,)``, ``labels`` ``(N,)``
            (0-based class index), ``masks`` ``(N, H, W)`` bool (tensor or array) or a list of N COCO RLE
            dicts, and optionally ``bboxes`` ``(N, 4)`` as ``x1, y1, x2, y2`` pixels (else the mask's tight box).
        cat_ids (Sequence[int]): COCO category id of each class index (``label i -> cat_ids[i]``).
        name_to_id (Mapping[str, int] | list[dict], optional): image file name -> image id, or the records
            ``[{'file_name': ..., 'id': ...}, ...]`` of a ``test_image_name_to_ids.json``. A sample's id is looked
            up by the base name of its ``img_path``,
            then by its stem (so ``x.png`` converted from ``x.tif`` finds ``x.tif``). If None, ``img_id`` is used.
        score_thr (float): keep instances with ``score >= score_thr``. Defaults to 0.0 (keep all).
        drop_border (bool): drop instances whose mask has a pixel in the first/last row or column of the
            image. Defaults to False.

    Returns:
        list[dict]: one dict per kept instance, in sample order then prediction order, with ``image_id``,
        ``category_id``, ``bbox`` ``[x, y, w, h]`` (pixels), ``score`` and ``segmentation``
        (``{'size': [H, W], 'counts': str}``).

    Raises:
        KeyError: a sample has no usable image id (see ``name_to_id``) or no ``pred_instances.masks``.
        IndexError: a label has no entry in ``cat_ids``.
    """
    if isinstance(name_to_id, (list, tuple)):
        name_to_id = {rec['file_name']: rec['id'] for rec in name_to_id}
    stem_to_id = {} if name_to_id is None else {osp.splitext(k)[0]: int(v) for k, v in name_to_id.items()}
    results = []
    for sample in samples:
        image_id = _image_id(sample, name_to_id, stem_to_id)
        pred = _get(sample, 'pred_instances')
        masks = None if pred is None else _get(pred, 'masks')
        if masks is None:
            raise KeyError(f'prediction for image {image_id} has no pred_instances.masks')
        scores = _to_numpy(_get(pred, 'scores')).reshape(-1)
        labels = _to_numpy(_get(pred, 'labels')).reshape(-1)
        bboxes = _get(pred, 'bboxes')
        bboxes = None if bboxes is None else _to_numpy(bboxes).reshape(-1, 4)
        rle_input = isinstance(masks, (list, tuple))
        if not rle_input:
            masks = _to_numpy(masks)
        for i in range(len(scores)):
            score = float(scores[i])
            if score < score_thr:
                continue
            label = int(labels[i])
            if not 0 <= label < len(cat_ids):
                raise IndexError(f'label {label} of image {image_id} has no category id (cat_ids: {list(cat_ids)})')
            if rle_input:
                rle = dict(masks[i])
                if isinstance(rle['counts'], bytes):
                    rle['counts'] = rle['counts'].decode('ascii')
                if drop_border and touches_border(mask_utils.decode(rle)):
                    continue
            else:
                if drop_border and touches_border(masks[i]):
                    continue
                rle = encode_mask(masks[i])
            if bboxes is not None:
                x1, y1, x2, y2 = (float(v) for v in bboxes[i])
                bbox = [x1, y1, x2 - x1, y2 - y1]
            else:
                bbox = [float(v) for v in mask_utils.toBbox(rle)]
            results.append(dict(image_id=image_id, category_id=int(cat_ids[label]), bbox=bbox, score=score,
                                segmentation=rle))
    return results
