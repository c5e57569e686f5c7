"""tools/analysis_tools/eval_results.py: a saved results file evaluated offline; numbers written under mmdet's keys."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.parametrize('case', ['missing', 'malformed', 'not_a_list', 'unknown_class', 'out_is_input'])
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
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, str(TOOL), gt, str(results), *extra], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
    named = {'unknown_class': 'instancesonly_filtered_val.json'}.get(case, results.name)
    assert named in proc.stderr
    assert not list(tmp_path.glob('*.tmp*'))
