"""tools/analysis_tools/eval_results.py: a saved results file evaluated offline; numbers written under mmdet's keys."""
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT

TOOL = REPO_ROOT / 'tools' / 'analysis_tools' / 'eval_results.py'


@pytest.fixture(scope='module')
def main():
    return runpy.run_path(str(TOOL))['main']


@pytest.fixture(scope='module')
def devkit_val(isaid_reference_dir):
    return isaid_reference_dir / 'instancesonly_filtered_val.json'


def _results(gt: dict, drop_every: int = 0) -> list:
    """The ground truth as detections (score 1), dropping every ``drop_every``-th object."""
    return [dict(image_id=a['image_id'], category_id=a['category_id'], score=1.0, bbox=a['bbox'],
                 segmentation=a['segmentation'])
            for i, a in enumerate(gt['annotations']) if not drop_every or i % drop_every]


def test_writes_mmdet_keys_and_null_for_nan(main, devkit_val, tmp_path, capsys):
    gt = json.loads(devkit_val.read_text())
    # the json also lists 'ship' without any object: its per-class AP is NaN, which json cannot hold
    gt['categories'].append(dict(id=1, name='ship'))
    gt_path = tmp_path / 'gt.json'
    gt_path.write_text(json.dumps(gt))
    results = tmp_path / 'results.segm.json'
    results.write_text(json.dumps(_results(gt, drop_every=4)))
    out = tmp_path / 'metrics' / 'metrics.json'
    metrics = main([str(gt_path), str(results), '--out', str(out)])
    printed = capsys.readouterr().out
    assert '| metric' in printed and 'Large_Vehicle' in printed and 'maxDets=1000' in printed

    text = out.read_text()
    assert 'NaN' not in text
    written = json.loads(text)
    for iou_type in ('segm', 'bbox'):
        for name in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l', 'AR@1', 'AR@10', 'AR@1000'):
            assert f'{iou_type}_{name}' in written
        # a quarter of the objects missed: recall 3/4 (rounded per class), precision 1 -> AP ~0.75
        assert written[f'{iou_type}_mAP_50'] == pytest.approx(0.75, abs=0.02)
        assert written[f'{iou_type}_ship_precision'] is None and metrics[f'{iou_type}_ship_precision'] != 0
        assert written[f'{iou_type}_mAP_m'] == -1  # no medium object in these patches (pycocotools' -1)
    assert written['segm_mAP'] == metrics['segm_mAP']


def test_protocols_and_iou_types(main, devkit_val, tmp_path):
    gt = json.loads(devkit_val.read_text())
    bbox_only = [{k: v for k, v in r.items() if k != 'segmentation'} for r in _results(gt)]
    results = tmp_path / 'bbox.json'
    results.write_text(json.dumps(bbox_only))
    isaid = main([str(devkit_val), str(results)])  # no segmentation: bbox only
    assert set(isaid) >= {'bbox_mAP', 'bbox_AR@1', 'bbox_AR@1000'} and not any(k.startswith('segm') for k in isaid)
    assert isaid['bbox_mAP'] == 1.0
    coco = main([str(devkit_val), str(results), '--protocol', 'coco', '--max-dets', '1', '10', '100'])
    assert {'bbox_AR@1', 'bbox_AR@100', 'bbox_AR_s@100'} <= set(coco)
    with pytest.raises(Exception, match="no 'segmentation'"):
        main([str(devkit_val), str(results), '--iou-type', 'segm'])


def _renumbered(results: list, shift: int) -> list:
    return [dict(r, image_id=r['image_id'] + shift) for r in results]


def test_results_numbered_from_1_against_the_devkit_json_are_refused(main, devkit_val, tmp_path):
    """Results exported against a json numbering the patches 1..N, scored against the devkit's (0..N-1)."""
    from mmdet_custom.evaluation.functional import ImageNumberingError
    gt = json.loads(devkit_val.read_text())
    assert sorted(img['id'] for img in gt['images']) == [0, 1, 2, 3]
    results = tmp_path / 'results.json'
    # every patch has detections: the last one's id (4) is none of the ground truth's
    results.write_text(json.dumps(_renumbered(_results(gt), 1)))
    with pytest.raises(ImageNumberingError, match=r'results\.json: field image_id: \d+ of the 4 image ids .* not in '
                       r'.*instancesonly_filtered_val\.json .*every image_id - 1 is: the results number the images '
                       r'from 1, the ground truth from 0'):
        main([str(devkit_val), str(results)])


def test_shifted_numbering_without_results_on_the_last_patch_is_refused(main, devkit_val, tmp_path, monkeypatch):
    """The silent variant: the last patch has no detection, so every shifted id still names a patch."""
    from mmdet_custom.evaluation.functional import ImageNumberingError, coco_eval, evaluate_coco_results
    gt = json.loads(devkit_val.read_text())
    perfect = [r for r in _results(gt) if r['image_id'] != 3]  # perfect on patches 0..2, nothing on patch 3
    shifted = _renumbered(perfect, 1)
    assert {r['image_id'] for r in shifted} == {1, 2, 3}
    results = tmp_path / 'results.json'
    results.write_text(json.dumps(shifted))
    with pytest.raises(ImageNumberingError, match=r'results\.json: field image_id: the detections fit the objects of '
                       r'.*when each is read as image_id - 1 \((\d+) of \1 top detections .*; as they are: \d+ of '
                       r'\d+; its image 0 has no result\)'):
        main([str(devkit_val), str(results)])
    # the same results numbered as the ground truth: evaluated, precision 1 and the objects of patches 0..2 found
    # (those of patch 3 missed)
    assert evaluate_coco_results(str(devkit_val), perfect, ['bbox'])['bbox_mAP_50'] == pytest.approx(0.75, abs=0.03)
    # what the check prevents: without it the shifted results score ~0, without a word
    monkeypatch.setattr(coco_eval, 'check_result_image_ids', lambda *args: None)
    assert evaluate_coco_results(str(devkit_val), shifted, ['segm', 'bbox'])['segm_mAP'] < 0.01


def test_boxes_outside_their_image_are_refused(devkit_val, tmp_path):
    """Ids that name images of another size: most boxes reach past the image their id names."""
    from mmdet_custom.evaluation.functional import ImageNumberingError, evaluate_coco_results
    gt = json.loads(devkit_val.read_text())
    far = [dict(image_id=0, category_id=8, score=0.9, bbox=[900.0 + 10 * k, 1000.0, 20.0, 10.0]) for k in range(12)]
    with pytest.raises(ImageNumberingError, match=r'field image_id: 10 of 10 boxes .* reach past the width/height'):
        evaluate_coco_results(str(devkit_val), far, ['bbox'])
    # a model's random boxes inside the images, on the right ids: evaluated (no refusal), AP ~0
    rng = np.random.default_rng(0)
    noise = [dict(image_id=img['id'], category_id=9, score=float(rng.random()),
                  bbox=[float(v) for v in (*rng.uniform(0, 700, 2), *rng.uniform(5, 90, 2))])
             for img in gt['images'] for _ in range(100)]
    assert evaluate_coco_results(str(devkit_val), noise, ['bbox'])['bbox_mAP'] < 0.05


@pytest.mark.parametrize('case', ['missing', 'malformed', 'not_a_list', 'unknown_class', 'out_is_input',
                                  'shifted_ids'])
def test_bad_input_is_one_error_line_naming_the_file(devkit_val, tmp_path, case):
    gt, results = str(devkit_val), tmp_path / 'results.json'
    results.write_text('[]')
    extra = []
    if case == 'missing':
        results = tmp_path / 'nowhere.json'
    elif case == 'malformed':
        results.write_text('[{"image_id": 0, ')
    elif case == 'not_a_list':
        results.write_text('{"image_id": 0}')
    elif case == 'unknown_class':
        extra = ['--classes', 'ship', 'plane']
    elif case == 'out_is_input':
        extra = ['--out', str(results)]
    elif case == 'shifted_ids':  # numbered 1..N against the devkit's 0..N-1
        results.write_text(json.dumps(_renumbered(_results(json.loads(devkit_val.read_text())), 1)))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, str(TOOL), gt, str(results), *extra], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
    named = {'unknown_class': 'instancesonly_filtered_val.json'}.get(case, results.name)
    assert named in proc.stderr
    assert not list(tmp_path.glob('*.tmp*'))


def test_corrupt_numbers_are_refused_naming_file_entry_and_field(tmp_path):
    """NaN/inf/string/null scores, NaN or negative-size boxes, garbage RLE counts and counts that do not cover the
    RLE's size (pycocotools can hang on them) in the results; a NaN box in the ground truth (it "matched" any
    detection); NaN boxes and missing segmentations in coco_subset's input: refused before any computation."""
    import threading

    import pycocotools.mask as mask_utils

    from mmdet_custom.converters.coco_subset import CocoSubsetError, check_coco
    from mmdet_custom.evaluation.functional import evaluate_coco_results
    from mmdet_custom.utils.errors import UserError
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    gt = dict(images=[dict(id=1, height=100, width=100, file_name='a.png')],
              categories=[dict(id=1, name='ship')],
              annotations=[dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 20, 20], area=400,
                                segmentation=square, iscrowd=0)])
    rle = mask_utils.merge(mask_utils.frPyObjects(square, 100, 100))
    rle['counts'] = rle['counts'].decode()
    good = dict(image_id=1, category_id=1, score=0.9, bbox=[10, 10, 20, 20], segmentation=rle)
    gt_path = tmp_path / 'gt.json'
    gt_path.write_text(json.dumps(gt))
    cases = [(dict(score=float('nan')), r"entry 0 'score': nan is not a finite number"),
             (dict(score=float('inf')), r"entry 0 'score': inf is not a finite number"),
             (dict(score='0.9'), r"entry 0 'score': '0.9' is not a number"),
             (dict(score=None), r"entry 0 'score': None is not a number"),
             (dict(bbox=[10, 10, float('nan'), 20]), r"entry 0 'bbox': .*nan is not a finite number"),
             (dict(bbox=[10, 10, -5, 20]), r"entry 0 'bbox': .*negative width or height"),
             (dict(segmentation=dict(rle, counts='garbage!!')), r"entry 0 'segmentation': its counts are not a "
                                                                r"compressed RLE"),
             (dict(segmentation=dict(rle, counts=[5, 3])), r"entry 0 'segmentation': its counts cover 8 pixels, "
                                                          r'its size 100 x 100 = 10000')]
    for change, message in cases:
        results = tmp_path / 'results.json'
        results.write_text(json.dumps([dict(good, **change), good]))
        done = []
        worker = threading.Thread(target=lambda done=done, results=results: done.append(
            _raises(evaluate_coco_results, str(gt_path), str(results))), daemon=True)
        worker.start()
        worker.join(30)
        assert done, f'{change}: the evaluation hangs'
        assert isinstance(done[0], UserError) and str(results) in str(done[0]), (change, done[0])
        assert __import__('re').search(message, str(done[0])), (message, str(done[0]))
    gt_nan = dict(gt, annotations=[dict(gt['annotations'][0], bbox=[float('nan'), 10, 20, 20])])
    gt_path.write_text(json.dumps(gt_nan))
    with pytest.raises(UserError, match=r"gt\.json: annotations\[0\] 'bbox': .*nan is not a finite number"):
        evaluate_coco_results(str(gt_path), [good], ('bbox', ))
    with pytest.raises(CocoSubsetError, match=r'annotations\[0\] \(id 1\) "bbox": .*nan'):
        check_coco(gt_nan, 'in.json')
    no_segm = dict(gt, annotations=[{k: v for k, v in gt['annotations'][0].items() if k != 'segmentation'}])
    with pytest.raises(CocoSubsetError, match=r'annotations\[0\] \(id 1\) has no "segmentation"'):
        check_coco(no_segm, 'in.json')


def _raises(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        return e
    return None
