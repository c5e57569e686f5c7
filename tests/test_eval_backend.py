"""faster-coco-eval gives exactly pycocotools' numbers on real iSAID results with 1000 detections per image, through
evaluate_coco_reports and MaxDetsCocoMetric(backend=...); the synthetic results and the eval benchmark."""
import copy
import inspect
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mmdet_custom.analysis.bench_report import fmt_value
from mmdet_custom.analysis.eval_bench import synthetic_coco_results
from mmdet_custom.evaluation.functional import evaluate_coco_reports
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES

pytest.importorskip('faster_coco_eval')
pytestmark = pytest.mark.skipif(
    'backend' not in inspect.signature(evaluate_coco_reports).parameters,
    reason='evaluate_coco_reports has no backend argument yet (coco_eval.py change pending)')
BACKENDS = ('pycocotools', 'faster-coco-eval')
BENCH_EVAL = Path(__file__).resolve().parents[1] / 'tools' / 'benchmarks' / 'bench_eval.py'


@pytest.fixture(scope='module')
def val_json(isaid_reference_dir):
    """The devkit's iSAID val patches (4 patches of P0003, 139 objects) and 1000 detections per patch."""
    path = isaid_reference_dir / 'instancesonly_filtered_val.json'
    gt = json.loads(path.read_text())
    return path, gt, synthetic_coco_results(gt, per_image=1000, seed=0)


def test_synthetic_results_have_the_budget_and_valid_masks(val_json):
    _, gt, results = val_json
    sizes = {img['id']: (img['height'], img['width']) for img in gt['images']}
    assert [sum(r['image_id'] == i for r in results) for i in sizes] == [1000] * len(sizes)
    cat_ids = {c['id'] for c in gt['categories']}
    assert {r['category_id'] for r in results} <= cat_ids
    for r in results[::97]:
        assert r['segmentation']['size'] == list(sizes[r['image_id']])
        assert r['bbox'] == pytest.approx(mask_utils.toBbox(r['segmentation']).tolist())  # the mask's extent
    # a fixed seed gives the same list; another seed another
    assert synthetic_coco_results(gt, per_image=20, seed=0) == synthetic_coco_results(gt, per_image=20, seed=0)
    assert synthetic_coco_results(gt, per_image=20, seed=1) != synthetic_coco_results(gt, per_image=20, seed=0)


def _same(a, b):
    """Two reports with the same summary numbers and per-class APs to 1e-12 (NaN where both are NaN). The two
    backends accumulate precision in different code (numpy vs C++), so a number may differ in its last bit."""
    assert list(a.stats) == list(b.stats)
    assert all(abs(a.stats[k] - b.stats[k]) <= 1e-12 for k in a.stats), (a.stats, b.stats)
    assert [name for name, _ in a.per_class] == [name for name, _ in b.per_class]
    for (_, va), (_, vb) in zip(a.per_class, b.per_class):
        assert all(abs(x - y) <= 1e-12 or (math.isnan(x) and math.isnan(y)) for x, y in zip(va, vb))


@pytest.mark.parametrize('protocol,per_image', [('isaid', 1000), ('coco', 300)])
def test_backends_give_identical_numbers_at_1000_detections(val_json, protocol, per_image):
    path, gt, results = val_json
    if per_image != 1000:  # the second protocol on fewer detections (time)
        results = synthetic_coco_results(gt, per_image=per_image, seed=0)
    reports = {b: evaluate_coco_reports(str(path), copy.deepcopy(results), ('segm', 'bbox'), protocol, ISAID_CLASSES,
                                        backend=b) for b in BACKENDS}
    for ref, other in zip(reports['pycocotools'], reports['faster-coco-eval']):
        _same(ref, other)
        assert ref.num_detections == 4 * per_image
        stats = ref.stats
        # numbers that exercise matching: partly right detections, recall rising with the budget
        assert 0.02 < stats['mAP'] < stats['mAP_50'] < 0.9
        budgets = ref.max_dets
        assert stats[f'AR@{budgets[0]}'] < stats[f'AR@{budgets[1]}'] <= stats[f'AR@{budgets[2]}'] < 1
        if protocol == 'coco':  # COCO's bands split these objects into small and medium
            assert stats['mAP_s'] > 0 and stats['mAP_m'] > 0
    # the results are not trivially equal for any ranking: shuffled scores give other numbers, again identical
    rng = np.random.default_rng(1)
    shuffled = [dict(r, score=float(s)) for r, s in zip(results, rng.permutation([r['score'] for r in results]))]
    again = {b: evaluate_coco_reports(str(path), shuffled, ('bbox', ), protocol, ISAID_CLASSES, backend=b)[0]
             for b in BACKENDS}
    _same(again['pycocotools'], again['faster-coco-eval'])
    assert again['pycocotools'].stats != reports['pycocotools'][1].stats


def _as_predictions(results, gt):
    """COCO results as MaxDetsCocoMetric holds them after ``process``: per image, xyxy boxes, scores, labels (class
    index by name) and RLE masks."""
    name_of = {c['id']: c['name'] for c in gt['categories']}
    preds = []
    for img in gt['images']:
        mine = [r for r in results if r['image_id'] == img['id']]
        preds.append(dict(
            img_id=img['id'],
            bboxes=np.array([[x, y, x + w, y + h] for x, y, w, h in (r['bbox'] for r in mine)], np.float32),
            scores=np.array([r['score'] for r in mine], np.float32),
            labels=np.array([ISAID_CLASSES.index(name_of[r['category_id']]) for r in mine]),
            masks=[dict(size=r['segmentation']['size'], counts=r['segmentation']['counts'].encode()) for r in mine]))
    return preds


def test_metric_backend_option_gives_the_same_metrics(val_json):
    from mmdet_custom.evaluation.metrics import MaxDetsCocoMetric
    path, gt, _ = val_json
    results = synthetic_coco_results(gt, per_image=200, seed=2)
    out = {}
    for backend in BACKENDS:
        metric = MaxDetsCocoMetric(ann_file=str(path), metric=['bbox', 'segm'], classwise=True, protocol='isaid',
                                   backend=backend)
        metric.dataset_meta = dict(classes=ISAID_CLASSES)
        out[backend] = metric.compute_metrics([({}, p) for p in _as_predictions(results, gt)])
    assert out['pycocotools'] == out['faster-coco-eval']
    assert 0 < out['pycocotools']['segm_mAP'] < 1 and 'segm_AR@1000' in out['pycocotools']
    with pytest.raises(ValueError, match='backend must be one of'):
        MaxDetsCocoMetric(protocol='isaid', backend='cocoapi')


def test_bench_eval_cli_times_both_backends(val_json, tmp_path, capsys):
    import runpy
    path, _, _ = val_json
    main = runpy.run_path(str(BENCH_EVAL))['main']
    out_json = tmp_path / 'eval.json'
    out_md = tmp_path / 'eval.md'
    result = main(['--gt', str(path), '--per-image', '50', '--repeats', '2', '--iou-types', 'bbox',
                   '--out-json', str(out_json), '--out-md', str(out_md)])
    text = capsys.readouterr().out
    assert 'faster-coco-eval' in text and 'IDENTICAL' in text and 'load' in text
    assert result['identical'] == {'bbox': True} and result['detections'] == 200
    rows = {r['backend']: r for r in result['rows']}
    assert rows['pycocotools']['ratio'] == 1.0
    # the speed-up is the reference's median time over this backend's, from the same run
    assert rows['faster-coco-eval']['ratio'] == pytest.approx(rows['pycocotools']['wall_s']
                                                              / rows['faster-coco-eval']['wall_s'])
    assert json.loads(out_json.read_text())['stats']['pycocotools']['bbox'] == result['stats']['pycocotools']['bbox']
    # the markdown report the docs copy (make bench): one row per backend with the same figures, the verdict, a date
    md = out_md.read_text().splitlines()
    table = [line.split('|')[1:-1] for line in md if line.startswith('| bbox |')]
    assert [cells[1].strip() for cells in table] == ['pycocotools', 'faster-coco-eval']
    assert table[1][4].strip() == f"{fmt_value(rows['faster-coco-eval']['ratio'], 2)}x"
    assert 'bbox: identical numbers' in md[-1]
    assert re.fullmatch(r'\d{4}-\d{2}-\d{2}', json.loads(out_json.read_text())['date'])
