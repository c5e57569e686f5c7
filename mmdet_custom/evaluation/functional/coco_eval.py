"""COCO-style AP/AR of saved results under the iSAID devkit's protocol or COCO's, as a thin layer over pycocotools.

The official iSAID evaluator (CAPTAIN-WHU/iSAID_Devkit, ``cocoapi/PythonAPI/pycocotools/cocoeval.py``; Waqas Zamir
et al., iSAID, CVPR-W 2019, Sec. 5) is pycocotools' ``COCOeval`` with two parameters changed and the summary read at
its own budget:

* ``maxDets = (1, 10, 1000)``: iSAID patches hold up to thousands of objects;
* ``areaRng`` (object area in pixels^2): all [0, 1e10], small [10^2, 144^2], medium [144^2, 512^2], large
  [512^2, 1e10], instead of COCO's 32^2 / 96^2; an object under 10^2 px counts only in "all";
* its 12 summary numbers: AP@[.5:.95], AP50, AP75, APs, APm, APl at 1000 detections, AR at 1, 10 and 1000
  detections, ARs/ARm/ARl at 1000. (Stock pycocotools reads AP@[.5:.95] at a fixed 100 detections, which does not
  exist among these budgets.)

Compared line by line with pycocotools 2.0.11's ``cocoeval.py``, the devkit's file differs in exactly these three
things (and ``np.float``, gone from numpy): ``Params.maxDets``, ``Params.areaRng`` and the default budget of
``summarize``'s helper (1000 instead of 100). Matching, accumulation and interpolation are the same code.

This module sets those parameters on the installed pycocotools' ``COCOeval`` (:class:`EvalProtocol`), runs its
``evaluate`` and ``accumulate`` unchanged, and reads the 12 numbers (and the per-class APs) from
``COCOeval.eval['precision' | 'recall']`` exactly as the devkit's summary does: the mean of the entries that are
not -1, or -1 when there are none (no ground truth in that band).

What is done here that plain pycocotools does not do, and why:

* **Annotation ids.** pycocotools' matching stores the matched ground truth's *id* per detection and treats 0 as
  "unmatched", so a detection matching a ground truth of id 0 counts as a false positive and that object is never
  recalled. The devkit numbers annotations from 0, so perfect predictions on its jsons score below 1.0. Ground truth
  whose annotation ids are not all positive and unique (duplicates collapse in pycocotools' index) is evaluated on a
  copy numbered 1..N; the ids play no other part in the evaluation.
* **Categories by name.** With ``classes``, the json's categories are matched to the class names (see
  :mod:`.categories`): unknown names are an error, and the per-class table follows the classes' order.
* **Mask area for segm.** Like mmdet's ``CocoMetric``, a segm detection's area (which decides whether an unmatched
  detection falls in a size band) is its mask's area; pycocotools' ``loadRes`` would take the box area whenever an
  entry also carries a ``bbox`` (as in the devkit's ``evaluate/evaluate.py``, which loads Detectron's segm results
  as they are). That choice moves APs/APm/APl only: the 'all' band holds every area, and recall ignores it.
* **Backends.** ``backend='faster-coco-eval'`` runs the same parameters through faster-coco-eval's
  ``COCOeval_faster`` (C++ matching and accumulation; PyPI ``faster-coco-eval``) instead of pycocotools'
  ``COCOeval``: the same ``eval['precision' | 'recall']`` arrays, checked equal on real iSAID results with 1000
  detections per image (``tests/test_eval_backend.py``; ``make bench-eval`` times both).
* **Inputs are checked**: a malformed file or entry, a detection on an image the ground truth does not have, or an
  RLE of another size than its image raises :class:`~mmdet_custom.utils.errors.UserError` naming the file; so do
  results numbered against another numbering of the images (ids one off, which pycocotools scores ~0 without a
  word when every id still names an image; see :mod:`.image_ids`).

Nothing here imports torch or mmdet (importing this costs about a second).
"""
import contextlib
import io
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mmdet_custom.utils.coco_fields import bbox_problem, number_problem, segmentation_problem
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import load_json

from .categories import category_ids_by_name
from .image_ids import check_result_image_ids

#: Labels of the four size bands, in ``areaRng`` order.
AREA_LABELS = ('all', 'small', 'medium', 'large')
#: mmdet's ``CocoMetric`` names of the six AP numbers (keys are ``f'{iou_type}_{name}'``).
AP_NAMES = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')


class CocoEvalInputError(UserError, ValueError):
    """A ground-truth or results file (or list) that cannot be evaluated as it is."""


@dataclass(frozen=True)
class EvalProtocol:
    """The ``COCOeval`` parameters that define a benchmark's numbers.

    Args:
        name (str): ``'isaid'`` or ``'coco'``.
        max_dets (tuple[int, int, int]): detections per image for AR at ``max_dets[0]``, ``[1]``, ``[2]``; every AP
            and the per-band ARs use ``max_dets[2]``.
        area_ranges (tuple): ``(lo, hi)`` object areas in pixels^2 of the bands all, small, medium, large (bounds
            inclusive, as pycocotools compares them).
        source (str): where the numbers come from.
    """
    name: str
    max_dets: Tuple[int, int, int]
    area_ranges: Tuple[Tuple[float, float], ...]
    source: str = ''

    def configure(self, coco_eval: COCOeval, max_dets: Optional[Sequence[int]] = None,
                  iou_thrs: Optional[Sequence[float]] = None) -> None:
        """Set ``maxDets``, ``areaRng`` and ``areaRngLbl`` (and optionally ``iouThrs``) on ``coco_eval.params``."""
        params = coco_eval.params
        params.maxDets = list(check_max_dets(self.max_dets if max_dets is None else max_dets))
        params.areaRng = [list(band) for band in self.area_ranges]
        params.areaRngLbl = list(AREA_LABELS)
        if iou_thrs is not None:
            params.iouThrs = np.atleast_1d(np.asarray(iou_thrs, dtype=np.float64))


#: The ``COCOeval`` implementations :func:`evaluate_coco_reports` can run (``backend=``).
BACKENDS = ('pycocotools', 'faster-coco-eval')


def coco_eval_class(backend: str = 'pycocotools') -> Callable:
    """The ``COCOeval`` constructor ``(coco_gt, coco_dt, iou_type)`` of ``backend`` (one of :data:`BACKENDS`).

    ``'faster-coco-eval'`` gives faster-coco-eval's ``COCOeval_faster`` (its C++ ``evaluate`` + ``accumulate``),
    silent, with pycocotools' separate evaluate/accumulate steps.

    Raises:
        ValueError: an unknown backend.
        UserError: ``'faster-coco-eval'`` without the package installed.
    """
    if backend == 'pycocotools':
        return COCOeval
    if backend == 'faster-coco-eval':
        try:
            from faster_coco_eval import COCOeval_faster
        except ImportError as e:
            raise UserError(f"backend='faster-coco-eval' needs the faster-coco-eval package "
                            f'(pip install -r requirements/runtime.txt): {e}') from e
        return lambda coco_gt, coco_dt, iou_type: COCOeval_faster(
            coco_gt, coco_dt, iou_type, print_function=lambda *args, **kwargs: None, separate_eval=True)
    raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')


#: The benchmarks this module knows.
PROTOCOLS: Dict[str, EvalProtocol] = {
    'isaid': EvalProtocol(
        'isaid', (1, 10, 1000), ((0, 1e10), (10**2, 144**2), (144**2, 512**2), (512**2, 1e10)),
        'iSAID devkit cocoapi/PythonAPI/pycocotools/cocoeval.py (CAPTAIN-WHU/iSAID_Devkit)'),
    # COCO's size bands with mmdet CocoMetric's default budgets (what mmdet's logs report); every AP at the largest
    'coco': EvalProtocol(
        'coco', (100, 300, 1000), ((0, 1e10), (0, 32**2), (32**2, 96**2), (96**2, 1e10)),
        "COCO's area ranges (pycocotools Params), mmdet CocoMetric's proposal_nums"),
}


def size_band(area: float, protocol: Union[str, 'EvalProtocol'] = 'coco') -> str:
    """Size band of an object of ``area`` pixels^2 under ``protocol``'s thresholds, as half-open intervals:
    'small' below the medium band's lower bound, 'medium' below the large band's, else 'large' (for COCO:
    small < 32^2 <= medium < 96^2 <= large). ``COCOeval`` itself compares inclusively, so an object exactly on a
    bound counts in both bands there; statistics need one band per object.

    Example:
        >>> size_band(31 * 31), size_band(32 * 32), size_band(96 * 96), size_band(100, 'isaid')
        ('small', 'medium', 'large', 'small')
    """
    bands = get_protocol(protocol).area_ranges
    return 'small' if area < bands[2][0] else 'medium' if area < bands[3][0] else 'large'


def get_protocol(protocol: Union[str, EvalProtocol]) -> EvalProtocol:
    """The :class:`EvalProtocol` named ``protocol`` (``'isaid'`` or ``'coco'``). Raises ValueError otherwise."""
    if isinstance(protocol, EvalProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f'protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}')
    return PROTOCOLS[protocol]


def check_max_dets(max_dets: Sequence[int]) -> Tuple[int, int, int]:
    """Three strictly increasing positive detection budgets (the summary reads AR at each). Raises ValueError."""
    max_dets = tuple(int(m) for m in max_dets)
    if len(max_dets) != 3 or not 0 < max_dets[0] < max_dets[1] < max_dets[2]:
        raise ValueError(f'max_dets (proposal_nums) must be 3 strictly increasing positive numbers, got {max_dets}')
    return max_dets


def summary_items(max_dets: Sequence[int]) -> List[Tuple[str, bool, Optional[float], str, int]]:
    """The 12 summary numbers as ``(name, is_ap, iou_thr, area, max_det)``, in pycocotools' ``stats`` order.

    Names are mmdet's for the APs (``mAP`` ... ``mAP_l``) and name their budget for the ARs (``AR@1``, ``AR@10``,
    ``AR@1000``, ``AR_s@1000``, ...; with budgets (100, 300, 1000) they are mmdet's ``AR@100`` ... as well).
    """
    m0, m1, m2 = check_max_dets(max_dets)
    return [('mAP', True, None, 'all', m2), ('mAP_50', True, .5, 'all', m2), ('mAP_75', True, .75, 'all', m2),
            ('mAP_s', True, None, 'small', m2), ('mAP_m', True, None, 'medium', m2),
            ('mAP_l', True, None, 'large', m2), (f'AR@{m0}', False, None, 'all', m0),
            (f'AR@{m1}', False, None, 'all', m1), (f'AR@{m2}', False, None, 'all', m2),
            (f'AR_s@{m2}', False, None, 'small', m2), (f'AR_m@{m2}', False, None, 'medium', m2),
            (f'AR_l@{m2}', False, None, 'large', m2)]


def summary_names(max_dets: Sequence[int]) -> List[str]:
    """The names of the 12 summary numbers for these budgets (see :func:`summary_items`)."""
    return [item[0] for item in summary_items(max_dets)]


# ----------------------------------------------------------------------------------------------------------------
# Loading ground truth and results
# ----------------------------------------------------------------------------------------------------------------
def _quiet():
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress lines


def _check_list(data: dict, key: str, source: str) -> list:
    value = data.get(key, [] if key == 'annotations' else None)
    if not isinstance(value, list):
        raise CocoEvalInputError(f"{source}: '{key}' must be a list, got {type(value).__name__}")
    return value


def load_coco_gt(gt: Union[str, os.PathLike, COCO], iou_types: Sequence[str] = ('bbox', ),
                 what: str = 'ground-truth json') -> COCO:
    """Ground truth ready for ``COCOeval``: checked, and with annotation ids 1..N when they are not usable.

    Args:
        gt (str | PathLike | COCO): a COCO instances json, or a loaded ``COCO`` (not modified).
        iou_types (Sequence[str]): ``'bbox'`` and/or ``'segm'``; segm needs a ``segmentation`` on every
            annotation.
        what (str): what ``gt`` is, for messages.

    Returns:
        COCO: ``gt`` itself when it is a ``COCO`` needing no change, else a new pycocotools ``COCO``. Annotation
        ids that are not all positive and unique (the devkit's start at 0; pycocotools treats a matched id 0 as
        unmatched) are replaced by 1..N in file order; annotations without ``iscrowd`` get ``iscrowd=0``.

    Raises:
        UserError: the file is missing or not valid json; ``images``/``annotations``/``categories`` is not a list;
            an annotation lacks a needed field, or points to an image or category the json does not list.
    """
    if isinstance(gt, COCO):
        data, source = gt.dataset, what
    else:
        source = os.fspath(gt)
        data = load_json(source, what)
    if not isinstance(data, dict):
        raise CocoEvalInputError(f'{source}: a COCO json is an object with images, annotations and categories, '
                                 f'got a {type(data).__name__}')
    images = _check_list(data, 'images', source)
    categories = _check_list(data, 'categories', source)
    annotations = _check_list(data, 'annotations', source)
    image_ids = {img.get('id') for img in images if isinstance(img, dict)}
    if len(image_ids) != len(images) or None in image_ids:
        raise CocoEvalInputError(f"{source}: every entry of 'images' needs a unique 'id'")
    cat_ids = {cat.get('id') for cat in categories if isinstance(cat, dict)}
    needed = ['image_id', 'category_id', 'bbox', 'area'] + (['segmentation'] if 'segm' in iou_types else [])
    for i, ann in enumerate(annotations):
        missing = [key for key in needed if not isinstance(ann, dict) or key not in ann]
        if missing:
            raise CocoEvalInputError(f'{source}: annotations[{i}] has no {missing[0]!r} (needed for '
                                     f'{"/".join(iou_types)} evaluation)')
        if ann['image_id'] not in image_ids:
            raise CocoEvalInputError(f"{source}: annotations[{i}] has image_id {ann['image_id']!r}, which 'images' "
                                     f'does not list')
        if ann['category_id'] not in cat_ids:
            raise CocoEvalInputError(f"{source}: annotations[{i}] has category_id {ann['category_id']!r}, which "
                                     f"'categories' does not list")
    sizes = {img['id']: (img.get('height'), img.get('width')) for img in images}
    for i, ann in enumerate(annotations):
        _check_fields(ann, sizes.get(ann['image_id'], (None, None)), iou_types, source, f'annotations[{i}]',
                      ('bbox', 'area'))
    ids = [ann.get('id') for ann in annotations]
    ids_usable = all(isinstance(i, int) and i > 0 for i in ids) and len(set(ids)) == len(ids)
    has_iscrowd = all('iscrowd' in ann for ann in annotations)
    if isinstance(gt, COCO) and ids_usable and has_iscrowd:
        return gt
    if not (ids_usable and has_iscrowd):
        annotations = [dict(ann, id=i + 1 if not ids_usable else ann['id'], iscrowd=ann.get('iscrowd', 0))
                       for i, ann in enumerate(annotations)]
    coco = COCO()
    coco.dataset = dict(data, annotations=annotations)
    with _quiet():
        coco.createIndex()
    return coco


def _check_fields(entry: dict, size: Tuple[Optional[int], Optional[int]], iou_types: Sequence[str], source: str,
                  where: str, numbers: Sequence[str]) -> None:
    """Refuse non-finite or non-numeric ``numbers`` fields (score, area), a bbox that is not four finite numbers of
    non-negative size, and (for segm) a segmentation whose polygons or RLE are malformed; the message names ``source``,
    ``where`` (the entry) and the field. See :mod:`mmdet_custom.utils.coco_fields`."""
    for key in numbers:
        if key == 'bbox':
            problem = bbox_problem(entry['bbox']) if 'bbox' in entry else None
        else:
            problem = number_problem(entry[key]) if key in entry else None
            if problem is None and key == 'area' and entry[key] < 0:
                problem = f'{entry[key]!r} is negative'
        if problem:
            raise CocoEvalInputError(f'{source}: {where} {key!r}: {problem}')
    if 'segm' in iou_types and 'segmentation' in entry:
        problem = segmentation_problem(entry['segmentation'], *size) if None not in size else \
            segmentation_problem(entry['segmentation'])
        if problem:
            raise CocoEvalInputError(f'{source}: {where} \'segmentation\': {problem}')


def check_results(coco_gt: COCO, results: Sequence[Any], iou_types: Sequence[str], source: str = 'results') -> None:
    """Check every result entry of ``results`` for ``iou_types`` before any computation: the fields present, a finite
    numeric ``score``, a ``bbox`` of four finite numbers with non-negative size (when present, needed for bbox), a
    segmentation (for segm) whose polygons are finite or whose RLE counts cover its ``size``, the image's.

    Raises:
        UserError: naming ``source``, the entry and the field.
    """
    needed = ['image_id', 'category_id', 'score'] + (['bbox'] if 'bbox' in iou_types else []) + (
        ['segmentation'] if 'segm' in iou_types else [])
    for i, res in enumerate(results):
        missing = [key for key in needed if not isinstance(res, dict) or key not in res]
        if missing:
            raise CocoEvalInputError(f'{source}: entry {i} has no {missing[0]!r} (needed for '
                                     f'{"/".join(iou_types)} evaluation)')
        img = coco_gt.imgs.get(res['image_id']) if isinstance(res['image_id'], Hashable) else None
        size = (img.get('height'), img.get('width')) if img else (None, None)
        _check_fields(res, size, iou_types, source, f'entry {i}', ('score', 'bbox'))


def _to_rle(segm, height: int, width: int, source: str, index: int) -> dict:
    """A compressed RLE of ``segm`` (compressed/uncompressed RLE or polygons) on an ``height x width`` image."""
    try:
        if isinstance(segm, dict):
            size = list(segm.get('size', []))
            if size != [height, width]:
                raise CocoEvalInputError(f"{source}: entry {index}'s RLE has size {size}, its image is "
                                         f'[{height}, {width}] (height, width)')
            if isinstance(segm.get('counts'), list):
                return mask_utils.frPyObjects(segm, height, width)
            return segm
        if isinstance(segm, list) and segm:
            return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    except (TypeError, ValueError, IndexError) as e:
        if isinstance(e, CocoEvalInputError):
            raise
        raise CocoEvalInputError(f"{source}: entry {index}'s segmentation cannot be read: {e}") from e
    raise CocoEvalInputError(f"{source}: entry {index}'s segmentation must be an RLE or polygons, got {segm!r:.60}")


def read_results(results: Union[str, os.PathLike, Sequence[dict]], what: str = 'results json') -> Tuple[list, str]:
    """The list of COCO result dicts in ``results`` (a file or the list) and a name for messages.

    Raises:
        UserError: missing or malformed file, or not a json list.
    """
    if isinstance(results, (str, os.PathLike)):
        source = os.fspath(results)
        results = load_json(source, what)
    else:
        source = what
    if not isinstance(results, (list, tuple)):
        raise CocoEvalInputError(f'{source}: a COCO results file is a json list of {{image_id, category_id, '
                                 f'bbox, score[, segmentation]}}, got a {type(results).__name__}')
    return list(results), source


def load_coco_results(coco_gt: COCO, results: Sequence[dict], iou_type: str, source: str = 'results') -> COCO:
    """COCO results for one IoU type, loaded with pycocotools' ``loadRes`` from checked copies of ``results``.

    bbox: the entries' ``bbox`` (xywh, pixels); area = w * h. segm: the ``segmentation`` as a compressed RLE
    (uncompressed RLE and polygons are encoded on the image's size), without the ``bbox``, so that its area is the
    mask's (mmdet's ``CocoMetric`` does the same). An empty list gives a results object with no detections.

    Raises:
        UserError: an entry lacks a field or has a malformed one, names an image that ``coco_gt`` lacks, or has an
            RLE of another size than its image.
    """
    if iou_type not in ('bbox', 'segm'):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    needed = ('image_id', 'category_id', 'score', 'bbox' if iou_type == 'bbox' else 'segmentation')
    dets = []
    for i, res in enumerate(results):
        missing = [key for key in needed if not isinstance(res, dict) or key not in res]
        if missing:
            raise CocoEvalInputError(f'{source}: entry {i} has no {missing[0]!r} (needed for {iou_type} '
                                     f'evaluation)')
        img = coco_gt.imgs.get(res['image_id'])
        if img is None:
            raise CocoEvalInputError(f"{source}: entry {i} has image_id {res['image_id']!r}, which the ground "
                                     f'truth does not list (results of another split or another id mapping?)')
        det = dict(image_id=res['image_id'], category_id=res['category_id'], score=float(res['score']))
        if iou_type == 'bbox':
            bbox = res['bbox']
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise CocoEvalInputError(f'{source}: entry {i} has bbox {bbox!r}; expected [x, y, w, h]')
            det['bbox'] = [float(v) for v in bbox]
        else:
            if 'height' not in img or 'width' not in img:
                raise CocoEvalInputError(f"the ground truth's image {res['image_id']!r} has no height/width, "
                                         f'needed for segm evaluation')
            det['segmentation'] = _to_rle(res['segmentation'], img['height'], img['width'], source, i)
        dets.append(det)
    if not dets:
        coco_dt = COCO()
        coco_dt.dataset = dict(images=list(coco_gt.dataset['images']),
                               categories=list(coco_gt.dataset['categories']), annotations=[])
        with _quiet():
            coco_dt.createIndex()
        return coco_dt
    with _quiet():
        return coco_gt.loadRes(dets)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class CocoEvalReport:
    """The numbers of one IoU type.

    Attributes:
        iou_type (str): ``'bbox'`` or ``'segm'``.
        protocol (EvalProtocol): the parameters used.
        max_dets (tuple[int, int, int]): the detection budgets used.
        stats (OrderedDict[str, float]): the 12 summary numbers in [0, 1] by :func:`summary_names` (-1: no ground
            truth in that band).
        per_class (list[tuple[str, list[float]]]): ``(name, [mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l])`` per
            evaluated category at ``max_dets[2]`` (NaN: no ground truth of that class in that band).
        num_detections (int): detections evaluated.
        num_ignored_detections (int): detections of categories the ground truth does not list (not evaluated).
    """
    iou_type: str
    protocol: EvalProtocol
    max_dets: Tuple[int, int, int]
    stats: 'OrderedDict[str, float]'
    per_class: List[Tuple[str, List[float]]] = field(default_factory=list)
    num_detections: int = 0
    num_ignored_detections: int = 0


def _read(coco_eval: COCOeval, is_ap: bool, iou_thr: Optional[float], area: str, max_det: int,
          class_index: Optional[int] = None) -> float:
    """Mean of ``eval['precision' | 'recall']`` at one IoU (or all), band and budget, over the entries > -1."""
    params = coco_eval.params
    values = coco_eval.eval['precision' if is_ap else 'recall']  # (T, R, K, A, M) / (T, K, A, M)
    if iou_thr is not None:
        values = values[np.isclose(params.iouThrs, iou_thr)]
    values = values[..., params.areaRngLbl.index(area), list(params.maxDets).index(max_det)]
    if class_index is not None:
        values = values[..., class_index]
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


def evaluate_coco(gt: Union[str, os.PathLike, COCO], results: Union[str, os.PathLike, Sequence[dict]],
                  iou_type: str = 'segm', protocol: Union[str, EvalProtocol] = 'isaid',
                  classes: Optional[Sequence[str]] = None, max_dets: Optional[Sequence[int]] = None,
                  iou_thrs: Optional[Sequence[float]] = None, backend: str = 'pycocotools') -> CocoEvalReport:
    """Evaluate one IoU type; see :func:`evaluate_coco_results` for the arguments. Returns a
    :class:`CocoEvalReport` (summary, per-class APs and detection counts)."""
    return evaluate_coco_reports(gt, results, (iou_type, ), protocol, classes, max_dets=max_dets,
                                 iou_thrs=iou_thrs, backend=backend)[0]


def _evaluate_loaded(coco_gt: COCO, gt_source: str, results: Sequence[dict], res_source: str, iou_type: str,
                     proto: EvalProtocol, classes: Optional[Sequence[str]], budgets: Tuple[int, int, int],
                     iou_thrs: Optional[Sequence[float]], backend: str = 'pycocotools') -> CocoEvalReport:
    categories = coco_gt.dataset['categories']
    if classes is not None:
        ids = category_ids_by_name(categories, classes, gt_source)
        evaluated = [(name, cat_id) for name, cat_id in zip(classes, ids) if cat_id is not None]
        if not evaluated:
            raise CocoEvalInputError(f'{gt_source}: lists none of the classes {list(classes)}')
    else:
        evaluated = [(cat['name'], cat['id']) for cat in sorted(categories, key=lambda c: c['id'])]
    coco_dt = load_coco_results(coco_gt, results, iou_type, res_source)
    cat_ids = [cat_id for _, cat_id in evaluated]
    coco_eval = coco_eval_class(backend)(coco_gt, coco_dt, iou_type)
    proto.configure(coco_eval, budgets, iou_thrs)
    coco_eval.params.catIds = cat_ids
    coco_eval.params.imgIds = sorted(coco_gt.getImgIds())
    with _quiet():
        coco_eval.evaluate()
        coco_eval.accumulate()
    items = summary_items(budgets)
    stats = OrderedDict((name, _read(coco_eval, *item)) for name, *item in items)
    num_dets = len(coco_dt.dataset['annotations'])
    if num_dets == 0:
        # nothing detected: every number 0 (pycocotools says -1 for bands without ground truth), so that
        # checkpoint selection and LR schedules that read them still find a number
        stats = OrderedDict((name, 0.0) for name in stats)
    sorted_ids = list(coco_eval.params.catIds)  # evaluate() sorted them: the K axis of eval['precision']
    per_class = []
    for name, cat_id in evaluated:
        k = sorted_ids.index(cat_id)
        values = [_read(coco_eval, True, iou_thr, area, budgets[2], k) for _, _, iou_thr, area, _ in items[:6]]
        per_class.append((name, [float('nan') if v == -1 else v for v in values]))
    evaluated_ids = set(cat_ids)
    ignored = sum(1 for det in coco_dt.dataset['annotations'] if det['category_id'] not in evaluated_ids)
    return CocoEvalReport(iou_type, proto, budgets, stats, per_class, num_dets, ignored)


def reports_to_dict(reports: Sequence[CocoEvalReport], classwise: bool = False) -> 'OrderedDict[str, float]':
    """Flatten reports into mmdet ``CocoMetric``-style keys: ``segm_mAP``, ``segm_mAP_50`` ..., ``segm_AR@1000``,
    and with ``classwise`` the per-class AP ``segm_<class>_precision`` (mmdet's suffix; NaN without ground truth)."""
    out = OrderedDict()
    for report in reports:
        out.update((f'{report.iou_type}_{name}', value) for name, value in report.stats.items())
        if classwise:
            out.update((f'{report.iou_type}_{name}_precision', values[0]) for name, values in report.per_class)
    return out


def evaluate_coco_results(gt: Union[str, os.PathLike, COCO], results: Union[str, os.PathLike, Sequence[dict]],
                          iou_types: Sequence[str] = ('segm', 'bbox'), protocol: Union[str, EvalProtocol] = 'isaid',
                          classes: Optional[Sequence[str]] = None, classwise: bool = False, *,
                          max_dets: Optional[Sequence[int]] = None,
                          iou_thrs: Optional[Sequence[float]] = None,
                          backend: str = 'pycocotools') -> 'OrderedDict[str, float]':
    """COCO-style AP and AR of saved results, under the iSAID devkit's protocol (default) or COCO's.

    Args:
        gt (str | PathLike | COCO): ground truth: a COCO instances json (e.g. the devkit's
            ``instancesonly_filtered_val.json``) or a loaded pycocotools ``COCO`` (not modified, except that
            pycocotools' evaluation converts its segmentations to RLE in place, as always).
        results (str | PathLike | list[dict]): COCO results: a json list (as written by ``tools/test.py
            --format-only``) or the list itself, each ``{image_id, category_id, score, bbox: [x, y, w, h]}`` and,
            for segm, ``segmentation`` (RLE or polygons). ``category_id`` uses the ground truth's ids.
        iou_types (Sequence[str]): ``'segm'`` and/or ``'bbox'``.
        protocol (str): ``'isaid'``: the devkit's maxDets (1, 10, 1000) and size bands 10^2 / 144^2 / 512^2 px^2;
            ``'coco'``: COCO's bands 32^2 / 96^2 with mmdet's budgets (100, 300, 1000). Both report every AP at the
            largest budget.
        classes (Sequence[str], optional): class names; the json's categories are matched to them by name (a name
            that is none of them raises), and the per-class numbers follow their order. Default: every category
            of the json, by id.
        classwise (bool): also return each class's AP as ``<iou_type>_<class>_precision``.
        max_dets (Sequence[int], keyword, optional): other budgets for the ``'coco'`` protocol (e.g. COCO's
            official (1, 10, 100)).
        iou_thrs (Sequence[float], keyword, optional): other IoU thresholds (default 0.50:0.05:0.95).
        backend (str, keyword): ``'pycocotools'`` (default) or ``'faster-coco-eval'`` (the same numbers from C++
            matching and accumulation; see :func:`coco_eval_class`).

    Returns:
        OrderedDict[str, float]: mmdet ``CocoMetric`` keys per IoU type, unrounded: ``segm_mAP``, ``segm_mAP_50``,
        ``segm_mAP_75``, ``segm_mAP_s``, ``segm_mAP_m``, ``segm_mAP_l``, then the recalls ``segm_AR@1``,
        ``segm_AR@10``, ``segm_AR@1000``, ``segm_AR_s@1000``, ``segm_AR_m@1000``, ``segm_AR_l@1000`` (named by the
        protocol's budgets), the same for ``bbox_``. -1 marks a band without ground truth (pycocotools'
        convention); when nothing at all was detected every number is 0.

    Raises:
        UserError: missing or malformed files or entries, unknown category names, results whose image ids follow
            another numbering than the ground truth's (see :func:`load_coco_gt`, :func:`load_coco_results`,
            :func:`~.categories.category_ids_by_name`, :func:`~.image_ids.check_result_image_ids`).
        ValueError: an unknown protocol or IoU type, or budgets other than (1, 10, 1000) with ``'isaid'``.

    Example:
        >>> from mmdet_custom.evaluation.functional import evaluate_coco_results
        >>> metrics = evaluate_coco_results('instancesonly_filtered_val.json', 'results.segm.json')  # doctest: +SKIP
        >>> metrics['segm_mAP'], metrics['segm_AR@1000']  # doctest: +SKIP
    """
    reports = evaluate_coco_reports(gt, results, iou_types, protocol, classes, max_dets=max_dets,
                                    iou_thrs=iou_thrs, backend=backend)
    return reports_to_dict(reports, classwise)


def evaluate_coco_reports(gt, results, iou_types: Sequence[str] = ('segm', 'bbox'),
                          protocol: Union[str, EvalProtocol] = 'isaid', classes: Optional[Sequence[str]] = None, *,
                          max_dets: Optional[Sequence[int]] = None, iou_thrs: Optional[Sequence[float]] = None,
                          gt_name: Optional[str] = None, results_name: Optional[str] = None,
                          backend: str = 'pycocotools') -> List[CocoEvalReport]:
    """As :func:`evaluate_coco_results`, but one :class:`CocoEvalReport` per IoU type (for tables and logs);
    ``gt_name`` and ``results_name`` name a ``COCO`` ground truth and a results list in messages (e.g. the files
    they came from)."""
    iou_types = [iou_types] if isinstance(iou_types, str) else list(iou_types)
    if not iou_types or any(t not in ('bbox', 'segm') for t in iou_types):
        raise ValueError(f"iou_types must hold 'bbox' and/or 'segm', got {iou_types!r}")
    proto = get_protocol(protocol)
    if proto.name == 'isaid' and max_dets is not None and tuple(max_dets) != proto.max_dets:
        raise ValueError(f'the iSAID protocol evaluates maxDets {proto.max_dets}, got max_dets={tuple(max_dets)}; '
                         f"use protocol='coco' for other budgets")
    budgets = check_max_dets(proto.max_dets if max_dets is None else max_dets)
    coco_eval_class(backend)  # an unknown or missing backend fails before any loading
    results, res_source = read_results(results, results_name or 'results json')
    gt_source = gt_name or ('ground truth' if isinstance(gt, COCO) else os.fspath(gt))
    coco_gt = load_coco_gt(gt, iou_types, what=gt_source)
    check_results(coco_gt, results, iou_types, res_source)  # every number checked before any computation
    check_result_image_ids(coco_gt, results, res_source, gt_source)
    return [_evaluate_loaded(coco_gt, gt_source, results, res_source, iou_type, proto, classes, budgets, iou_thrs,
                             backend) for iou_type in iou_types]


# ----------------------------------------------------------------------------------------------------------------
# Text output
# ----------------------------------------------------------------------------------------------------------------
def format_summary(report: CocoEvalReport) -> str:
    """The 12 numbers as pycocotools prints them, with the protocol's band limits, e.g.
    `` Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=1000 ] = 0.412``."""
    bands = dict(zip(AREA_LABELS, report.protocol.area_ranges))
    lines = [f'{report.iou_type} ({report.protocol.name} protocol; areas in px^2: ' + ', '.join(
        f'{label} [{lo:g}, {hi:g}]' for label, (lo, hi) in bands.items()) + ')']
    for name, is_ap, iou_thr, area, max_det in summary_items(report.max_dets):
        title, kind = ('Average Precision', '(AP)') if is_ap else ('Average Recall', '(AR)')
        iou = '0.50:0.95' if iou_thr is None else f'{iou_thr:0.2f}'
        lines.append(f' {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_det:>4d} ] = '
                     f'{report.stats[name]:0.3f}')
    return '\n'.join(lines)


def _fmt(value: float) -> str:
    return 'nan' if value != value else f'{value:0.3f}'


def format_tables(reports: Sequence[CocoEvalReport], classwise: bool = True) -> str:
    """One terminaltables table of the summary numbers (a column per IoU type) and, with ``classwise``, a per-class
    AP table per IoU type (mmdet's columns: category, mAP, mAP_50, mAP_75, mAP_s, mAP_m, mAP_l)."""
    from terminaltables import AsciiTable
    if not reports:
        return ''
    names = list(reports[0].stats)
    rows = [['metric'] + [r.iou_type for r in reports]]
    rows += [[name] + [_fmt(r.stats.get(name, float('nan'))) for r in reports] for name in names]
    table = AsciiTable(rows, title=f' {reports[0].protocol.name} protocol ')
    parts = [table.table]
    if classwise:
        for report in reports:
            rows = [['category'] + list(AP_NAMES)]
            rows += [[name] + [_fmt(v) for v in values] for name, values in report.per_class]
            parts.append(AsciiTable(rows, title=f' {report.iou_type} per class ').table)
    return '\n'.join(parts)


def metrics_to_json(metrics: Dict[str, float]) -> Dict[str, Optional[float]]:
    """``metrics`` with NaN and infinities as None (json ``null``): ``json.dump`` would write ``NaN``, which is
    not valid json."""
    return OrderedDict((key, None if isinstance(value, float) and not np.isfinite(value) else value)
                       for key, value in metrics.items())
