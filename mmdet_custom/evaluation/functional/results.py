"""Instance predictions -> a COCO results list (the ``loadRes`` / submission format), and image-name -> id maps.

Each result is ``{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score', 'segmentation': RLE}`` with the RLE
``counts`` as ``str``, so the list is json-serialisable and loads with ``pycocotools.coco.COCO.loadRes``.
Torch-free (a tensor is read through its ``detach()``): used by the ``CocoResultsExport`` metric, by
``mmdet_custom.apis.export`` (``tools/test.py``) and by the cells converter (its test-image map).
"""
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type, Union

import numpy as np
import pycocotools.mask as mask_utils

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import load_json

from .masks import encode_mask, touches_border

__all__ = ['load_name_to_ids', 'parse_name_to_ids', 'predictions_to_coco_results']


def parse_name_to_ids(data: Any, source: str, error: Type[Exception] = UserError) -> Dict[str, int]:
    """Check and normalise an image file name -> image id map (the one parser for every such map).

    Args:
        data: a json object ``{"<file name>": <id>, ...}`` or a list of records
            ``[{"file_name": ..., "id": ..., ...}, ...]`` (the form of the cells ``test_image_name_to_ids.json``).
        source (str): what the map is and where it came from, for messages (e.g. ``'--name-to-ids map x.json'``).
        error (type): the exception raised (a :class:`UserError` subclass). Defaults to :class:`UserError`.

    Returns:
        dict[str, int]: file name -> image id. An id may be an integer or a string of digits.

    Raises:
        error: ``data`` has another structure, a record lacks ``file_name`` or ``id``, an id is not an integer,
            a file name is listed twice or two names share an id; the message names ``source`` and the entry.

    Example:
        >>> parse_name_to_ids([{'file_name': 'a.tif', 'id': 7}, {'file_name': 'b.tif', 'id': '9'}], 'map')
        {'a.tif': 7, 'b.tif': 9}
    """
    if isinstance(data, list):
        bad = next((i for i, rec in enumerate(data) if not isinstance(rec, Mapping) or 'file_name' not in rec
                    or 'id' not in rec), None)
        if bad is not None:
            raise error(f'{source}: entry {bad} ({data[bad]!r:.80}) is not a record with "file_name" and "id"')
        items = [(rec['file_name'], rec['id']) for rec in data]
    elif isinstance(data, Mapping):
        items = list(data.items())
    else:
        raise error(f'{source} must be a json object {{"<file name>": <image id>}} or a list of '
                    f'{{"file_name", "id"}} records, not a {type(data).__name__}')
    mapping = {}
    for name, img_id in items:
        if isinstance(img_id, bool) or not isinstance(img_id, (int, str)) or not str(img_id).lstrip('-').isdigit():
            raise error(f'{source}: the id of {name!r} is {img_id!r}, not an integer')
        if str(name) in mapping:
            raise error(f'{source}: duplicate file name {name!r}')
        mapping[str(name)] = int(img_id)
    if len(set(mapping.values())) != len(mapping):
        raise error(f'{source}: image ids are not unique')
    return mapping


def load_name_to_ids(path: str, what: str = '--name-to-ids map',
                     error: Type[Exception] = UserError) -> Dict[str, int]:
    """Read an image name -> image id map (``--name-to-ids``, ``test_image_name_to_ids.json``), checking its form
    before any inference or conversion runs.

    Args:
        path (str): a json object ``{"<file name>": <id>, ...}`` or a list of records
            ``[{"file_name": ..., "id": ...}, ...]`` (the form of the cells ``test_image_name_to_ids.json``).
        what (str): what the file is, for messages. Defaults to ``'--name-to-ids map'``.
        error (type): the exception raised for a malformed map (see :func:`parse_name_to_ids`).

    Returns:
        dict[str, int]: file name -> image id.

    Raises:
        UserError: the file is missing or not valid json (with line and column).
        error: an entry is not a name with an integer id, or a name or id is repeated; the message names the
            file and the first bad entry.
    """
    return parse_name_to_ids(load_json(path, what), f'{what} {path}', error)


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
        ValueError: ``name_to_id`` records are malformed (see :func:`parse_name_to_ids`).
    """
    if isinstance(name_to_id, (list, tuple)):
        name_to_id = parse_name_to_ids(list(name_to_id), 'name_to_id', ValueError)
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
