"""The iSAID devkit's evaluation protocol (evaluate_coco_results) against pycocotools with the devkit's parameters,
and the devkit's own jsons scored against themselves."""
import copy
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mmdet_custom.evaluation.functional import (
    CategoryMismatchError,
    evaluate_coco_reports,
    evaluate_coco_results,
    load_coco_gt,
)
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES

# The devkit's evaluator (CAPTAIN-WHU/iSAID_Devkit cocoapi/PythonAPI/pycocotools/cocoeval.py, Params.setDetParams),
# written out here independently of mmdet_custom's EvalProtocol
DEVKIT_MAX_DETS = [1, 10, 1000]
DEVKIT_AREA_RNG = [[0, 1e5**2], [10**2, 144**2], [144**2, 512**2], [512**2, 1e5**2]]
STATS_ORDER = ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l', 'AR@1', 'AR@10', 'AR@1000', 'AR_s@1000',
               'AR_m@1000', 'AR_l@1000']
# categories as the devkit writes them: only those present, in order of first appearance, iSAID's fixed ids
DEVKIT_CATEGORIES = [
    dict(id=8, name='Large_Vehicle'), dict(id=9, name='Small_Vehicle'), dict(id=2, name='storage_tank')]


def _shape(x, y, w, h):
    """A pentagon (a box with one corner cut) as a COCO polygon: its mask differs from its box."""
    cut = max(1, min(w, h) // 3)
    return [[x, y, x + w, y, x + w, y + h - cut, x + w - cut, y + h, x, y + h]]


def _constructed_case():
    """Ground truth with objects of every iSAID and COCO band (sides 4..700 px, some under 10 px), predictions with
    jitter, misses, duplicates and false positives of every size; categories out of order with devkit ids."""
    rng = np.random.RandomState(0)
    sides = [4, 6, 8, 9, 11, 14, 20, 31, 33, 40, 64, 97, 100, 120, 143, 146, 200, 300, 511, 515, 700]
    images, anns, dets = [], [], []
    for copy_index in range(3):
        for side in sides:
            img_id = len(images) + 10
            size = side + 60
            images.append(dict(id=img_id, width=size, height=size, file_name=f'{img_id}.png'))
            cat = DEVKIT_CATEGORIES[(img_id + copy_index) % 3]['id']
            w, h = side, max(2, int(side * rng.uniform(0.6, 1.0)))
            poly = _shape(20, 20, w, h)
            rle = mask_utils.merge(mask_utils.frPyObjects(poly, size, size))
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=cat, segmentation=poly,
                             area=float(mask_utils.area(rle)), bbox=[20.0, 20.0, float(w), float(h)], iscrowd=0))
            if rng.rand() < 0.8:  # detected, with a jitter of 0..3 px
                dx, dy = rng.randint(0, 4, size=2)
                dets.append(dict(image_id=img_id, category_id=cat, score=float(rng.rand()),
                                 poly=_shape(20 + dx, 20 + dy, w, h), size=size))
            if rng.rand() < 0.3:  # a duplicate
                dets.append(dict(image_id=img_id, category_id=cat, score=float(rng.rand()) * 0.5,
                                 poly=_shape(21, 21, w, h), size=size))
            fp_side = int(rng.choice([3, 7, 9, 12, 30, 50, 130, 150, 520]))
            if rng.rand() < 0.6 and fp_side + 10 < size:  # a false positive somewhere
                dets.append(dict(image_id=img_id, category_id=cat, score=float(rng.rand()),
                                 poly=_shape(size - fp_side - 5, size - fp_side - 5, fp_side, fp_side), size=size))
    results = []
    for det in dets:
        rle = mask_utils.merge(mask_utils.frPyObjects(det['poly'], det['size'], det['size']))
        rle['counts'] = rle['counts'].decode()
        results.append(dict(image_id=det['image_id'], category_id=det['category_id'], score=det['score'],
                            bbox=[float(v) for v in mask_utils.toBbox(rle)], segmentation=rle))
    gt = dict(images=images, annotations=anns, categories=copy.deepcopy(DEVKIT_CATEGORIES))
    return gt, results


def _pycocotools_devkit_stats(gt: dict, results: list, iou_type: str) -> dict:
    """The 12 numbers straight from pycocotools' COCOeval with the devkit's parameters."""
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    # segm: masks only, so that a detection's area is its mask's (as mmdet's CocoMetric evaluates)
    dets = [{k: v for k, v in r.items() if k != ('bbox' if iou_type == 'segm' else 'segmentation')} for r in results]
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iou_type)
    coco_eval.params.maxDets = DEVKIT_MAX_DETS
    coco_eval.params.areaRng = DEVKIT_AREA_RNG
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    stats = list(coco_eval.stats)
    # pycocotools' stats[0] is AP at a fixed maxDets=100, absent from (1, 10, 1000): -1. The devkit's summary reads
    # it at its default of 1000 detections: the mean precision over all IoUs, recalls and classes, area 'all'
    assert stats[0] == -1
    precision = coco_eval.eval['precision'][:, :, :, 0, 2]
    stats[0] = float(np.mean(precision[precision > -1]))
    return dict(zip(STATS_ORDER, stats))


@pytest.fixture(scope='module')
def constructed():
    return _constructed_case()


@pytest.mark.parametrize('iou_type', ['segm', 'bbox'])
def test_isaid_protocol_equals_pycocotools_with_devkit_parameters(constructed, iou_type):
    gt, results = constructed
    ours = evaluate_coco_results(gt_coco(gt), copy.deepcopy(results), iou_types=(iou_type, ), protocol='isaid')
    reference = _pycocotools_devkit_stats(gt, results, iou_type)
    assert list(ours) == [f'{iou_type}_{name}' for name in STATS_ORDER]
    for name, value in reference.items():
        assert ours[f'{iou_type}_{name}'] == value, name
    # a real evaluation: neither trivial nor degenerate
    assert 0.2 < ours[f'{iou_type}_mAP'] < 0.9 and all(0 <= v <= 1 for v in ours.values())


@pytest.mark.parametrize('iou_type', ['segm', 'bbox'])
def test_isaid_and_coco_protocols_differ_in_the_size_bands_only(constructed, iou_type):
    gt, results = constructed
    isaid = evaluate_coco_results(gt_coco(gt), copy.deepcopy(results), (iou_type, ), protocol='isaid')
    coco = evaluate_coco_results(gt_coco(gt), copy.deepcopy(results), (iou_type, ), protocol='coco')
    p = f'{iou_type}_'
    # same IoUs, same 1000-detection budget, same 'all' band: the headline numbers agree
    for name in ('mAP', 'mAP_50', 'mAP_75', 'AR@1000'):
        assert isaid[p + name] == coco[p + name]
    # the bands differ (iSAID small [10^2, 144^2] vs COCO [0, 32^2] ...): so do APs/m/l and ARs/m/l
    for band in ('s', 'm', 'l'):
        assert isaid[f'{p}mAP_{band}'] != coco[f'{p}mAP_{band}']
        assert isaid[f'{p}AR_{band}@1000'] != coco[f'{p}AR_{band}@1000']
    # the recalls are named by the budgets they use
    assert {p + 'AR@1', p + 'AR@10'} <= set(isaid) and {p + 'AR@100', p + 'AR@300'} <= set(coco)


def test_objects_under_10px_count_in_all_only():
    """A false positive of 7x7 px (area 49 < 10^2) lies in no iSAID band: it costs precision in 'all' but not in
    'small', where COCO ([0, 32^2]) counts it."""
    images = [dict(id=1, width=200, height=200)]
    anns = [dict(id=1, image_id=1, category_id=9, bbox=[10, 10, 20, 20], area=400, iscrowd=0)]
    gt = dict(images=images, annotations=anns, categories=[dict(id=9, name='Small_Vehicle')])
    results = [dict(image_id=1, category_id=9, bbox=[100, 100, 7, 7], score=0.9),  # false positive first
               dict(image_id=1, category_id=9, bbox=[10, 10, 20, 20], score=0.5)]
    isaid = evaluate_coco_results(gt_coco(gt), results, ('bbox', ), protocol='isaid')
    coco = evaluate_coco_results(gt_coco(gt), results, ('bbox', ), protocol='coco')
    # 'all': precision 1/2 at the only recall level 1.0 (interpolated over all 101 thresholds) -> AP 0.5
    assert isaid['bbox_mAP'] == pytest.approx(0.5) and coco['bbox_mAP'] == pytest.approx(0.5)
    assert isaid['bbox_mAP_s'] == pytest.approx(1.0)  # the 49 px^2 false positive is outside [100, 20736]
    assert coco['bbox_mAP_s'] == pytest.approx(0.5)  # ... and inside COCO's [0, 1024]
    assert isaid['bbox_mAP_m'] == -1 and isaid['bbox_mAP_l'] == -1  # no ground truth there


def gt_coco(gt: dict) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    return coco


# ------------------------------------------------------------------------------------------------------------------
# The devkit's own jsons (../shared/data/isaid_devkit_reference), given back as predictions
# ------------------------------------------------------------------------------------------------------------------
def _gt_as_predictions(gt: dict) -> list:
    return [dict(image_id=a['image_id'], category_id=a['category_id'], score=1.0, bbox=a['bbox'],
                 segmentation=a['segmentation']) for a in gt['annotations']]


@pytest.mark.parametrize('split', ['train', 'val'])
def test_devkit_json_given_back_scores_ap_1(isaid_reference_dir, split):
    path = isaid_reference_dir / f'instancesonly_filtered_{split}.json'
    gt = json.loads(path.read_text())
    metrics = evaluate_coco_results(str(path), _gt_as_predictions(gt), classes=ISAID_CLASSES, classwise=True)
    for iou_type in ('segm', 'bbox'):
        for name in ('mAP', 'mAP_50', 'mAP_75', 'AR@1000'):
            assert metrics[f'{iou_type}_{name}'] == 1.0, (iou_type, name)
        present = {a['category_name'] for a in gt['annotations']}
        assert {k for k in metrics if k.startswith(f'{iou_type}_') and k.endswith('_precision')} == {
            f'{iou_type}_{name}_precision' for name in present}
        assert all(metrics[f'{iou_type}_{name}_precision'] == 1.0 for name in present)


def test_annotation_id_0_is_renumbered_so_perfect_predictions_score_1(isaid_reference_dir, tmp_path):
    """The devkit numbers annotations from 0. pycocotools' matching stores the matched ground-truth id per detection
    and reads 0 as "unmatched": the detection of annotation 0 becomes a false positive and that object is never
    recalled. Evaluated as loaded, perfect predictions score below 1; renumbered (load_coco_gt) exactly 1."""
    gt = json.loads((isaid_reference_dir / 'instancesonly_filtered_val.json').read_text())
    for i, ann in enumerate(gt['annotations']):
        ann['id'] = i  # as the full devkit json: ids from 0
    path = tmp_path / 'ids_from_0.json'
    path.write_text(json.dumps(gt))
    predictions = _gt_as_predictions(gt)

    plain = COCO(str(path))
    coco_eval = COCOeval(plain, plain.loadRes([{k: v for k, v in p.items() if k != 'segmentation'}
                                               for p in predictions]), 'bbox')
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert coco_eval.stats[1] < 1.0  # AP50 of perfect predictions, as pycocotools computes it on these ids
    first = next(e for e in coco_eval.evalImgs if e is not None and 0 in e['gtIds'])
    j = first['gtIds'].index(0)
    assert first['gtMatches'][0, j] > 0  # the object was matched ...
    assert 0 in first['dtMatches'][0]  # ... but its detection recorded "matched to 0" = unmatched

    metrics = evaluate_coco_results(str(path), predictions)
    assert metrics['bbox_mAP'] == 1.0 and metrics['segm_mAP'] == 1.0 and metrics['bbox_AR@1000'] == 1.0
    fixed = load_coco_gt(str(path))
    assert sorted(fixed.anns) == list(range(1, len(gt['annotations']) + 1))
    assert json.loads(path.read_text())['annotations'][0]['id'] == 0  # the file is not touched


def test_categories_by_name_whatever_the_ids(isaid_reference_dir):
    """Predictions of 'Large_Vehicle' score against the json's 'Large_Vehicle' whatever ids the json uses; with
    classes, a json name that is none of them is an error naming the file."""
    path = isaid_reference_dir / 'instancesonly_filtered_val.json'
    gt = json.loads(path.read_text())
    reports = evaluate_coco_reports(str(path), _gt_as_predictions(gt), ('bbox', ), classes=ISAID_CLASSES)
    # per-class rows follow the classes' order (storage_tank first), not the json's (Large_Vehicle first)
    assert [name for name, _ in reports[0].per_class] == ['storage_tank', 'Large_Vehicle', 'Small_Vehicle']
    lowered = copy.deepcopy(gt)
    for cat in lowered['categories']:
        cat['name'] = cat['name'].lower()
    with pytest.raises(CategoryMismatchError, match="'large_vehicle'.*did you mean 'Large_Vehicle'") as err:
        evaluate_coco_results(gt_coco(lowered), _gt_as_predictions(gt), classes=ISAID_CLASSES)
    assert 'expected names' in str(err.value)


def test_bad_inputs_name_the_file(tmp_path, constructed):
    gt, results = constructed
    gt_path = tmp_path / 'gt.json'
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(UserError, match='missing.json'):
        evaluate_coco_results(str(tmp_path / 'missing.json'), results)
    broken = tmp_path / 'broken.json'
    broken.write_text('[{"image_id": 1,')
    with pytest.raises(UserError, match='broken.json.*not valid json'):
        evaluate_coco_results(str(gt_path), str(broken))
    other_image = [dict(results[0], image_id=999)]
    with pytest.raises(UserError, match='image_id 999'):
        evaluate_coco_results(str(gt_path), other_image, ('bbox', ))
    no_segm = [{k: v for k, v in r.items() if k != 'segmentation'} for r in results]
    with pytest.raises(UserError, match="entry 0 has no 'segmentation'"):
        evaluate_coco_results(str(gt_path), no_segm, ('segm', ))
    wrong_size = [dict(results[0], segmentation=dict(results[0]['segmentation'], size=[5, 5]))]
    with pytest.raises(UserError, match='RLE has size'):
        evaluate_coco_results(str(gt_path), wrong_size, ('segm', ))
    with pytest.raises(ValueError, match='maxDets'):
        evaluate_coco_results(str(gt_path), results, protocol='isaid', max_dets=(1, 10, 100))


def test_nothing_detected_gives_zero():
    images = [dict(id=1, width=100, height=100)]
    anns = [dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 20, 20], area=400, iscrowd=0)]
    metrics = evaluate_coco_results(gt_coco(dict(images=images, annotations=anns, categories=[
        dict(id=1, name='ship')])), [], ('bbox', ))
    assert set(metrics.values()) == {0.0} and len(metrics) == 12
