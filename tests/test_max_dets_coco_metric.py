"""MaxDetsCocoMetric: AP@[.5:.95] over the largest detection budget (iSAID: 1000), hand-checked."""
import json

import numpy as np
import torch

import mmdet_custom  # noqa: F401
from mmdet.evaluation.metrics import CocoMetric

from mmdet_custom.evaluation.metrics import MaxDetsCocoMetric

N = 150  # objects in the one image: more than pycocotools' default budget of 100 detections


def _coco_json(tmp_path):
    boxes = [[10.0 * (i % 15), 10.0 * (i // 15), 8.0, 8.0] for i in range(N)]
    coco = dict(images=[dict(id=1, file_name='a.png', width=200, height=200)],
                categories=[dict(id=1, name='Small_Vehicle')],
                annotations=[dict(id=i + 1, image_id=1, category_id=1, bbox=b, area=64.0, iscrowd=0)
                             for i, b in enumerate(boxes)])
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(coco))
    return path, np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float32)


def _evaluate(metric_cls, tmp_path):
    ann_file, xyxy = _coco_json(tmp_path)
    metric = metric_cls(ann_file=str(ann_file), metric='bbox', proposal_nums=(100, 300, 1000))
    metric.dataset_meta = dict(classes=('Small_Vehicle', ))
    # every object detected exactly, scores descending: only the first 100 fit a budget of 100
    pred = dict(bboxes=torch.from_numpy(xyxy), scores=torch.linspace(1.0, 0.5, N), labels=torch.zeros(N, dtype=torch.long))
    metric.process({}, [dict(img_id=1, ori_shape=(200, 200), pred_instances=pred)])
    return metric.evaluate(1)


def test_headline_ap_uses_the_largest_budget(tmp_path):
    ours = _evaluate(MaxDetsCocoMetric, tmp_path)
    stock = _evaluate(CocoMetric, tmp_path)
    # 1000 detections: every object found, precision 1 at every recall -> AP 1.0
    assert ours['coco/bbox_mAP'] == 1.0 and ours['coco/bbox_mAP_50'] == 1.0
    # stock: AP@[.5:.95] at 100 detections reaches recall 100/150 only; 101-point interpolation gives 67/101
    assert abs(stock['coco/bbox_mAP'] - round(67 / 101, 3)) < 1e-9
    assert stock['coco/bbox_mAP_50'] == 1.0  # ... while its AP50 already used the 1000 budget


def test_no_prediction_at_all_gives_zero_ap_instead_of_no_metric(tmp_path):
    ann_file, _ = _coco_json(tmp_path)
    metric = MaxDetsCocoMetric(ann_file=str(ann_file), metric=['bbox', 'segm'], proposal_nums=(100, 300, 1000))
    metric.dataset_meta = dict(classes=('Small_Vehicle', ))
    empty = dict(bboxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long),
                 masks=torch.zeros(0, 200, 200, dtype=torch.bool))
    metric.process({}, [dict(img_id=1, ori_shape=(200, 200), pred_instances=empty)])
    metrics = metric.evaluate(1)
    # save_best='coco/segm_mAP' and ReduceOnPlateauLR(monitor='coco/segm_mAP_50') find their keys
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/segm_mAP_50', 'coco/segm_mAP_l'):
        assert metrics[key] == 0.0
