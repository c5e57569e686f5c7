"""DiceIoUMetric against hand-computed values, alone and beside CocoMetric in one mmengine Evaluator."""
import math

import numpy as np
import pytest
import torch
from mmdet.registry import METRICS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.structures import InstanceData

import mmdet_custom.register  # noqa: F401  (registers DiceIoUMetric)

H = W = 16


def square(y: int, x: int, side: int = 4) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y:y + side, x:x + side] = True
    return m


def sample(gt_masks, pred_masks, scores, gt_labels=None, pred_labels=None, img_id=0) -> dict:
    """A DetDataSample as the val loop hands it to the metrics (``to_dict()``), masks at the original size."""
    gt_masks, pred_masks = np.array(gt_masks, bool).reshape(-1, H, W), np.array(pred_masks, bool).reshape(-1, H, W)
    ds = DetDataSample(metainfo=dict(img_id=img_id, ori_shape=(H, W), img_path=f'img{img_id}.png'))
    ds.gt_instances = InstanceData(
        masks=BitmapMasks(gt_masks.astype(np.uint8), H, W),
        labels=torch.as_tensor(gt_labels if gt_labels is not None else [0] * len(gt_masks)))
    ds.pred_instances = InstanceData(
        masks=torch.from_numpy(pred_masks), scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.as_tensor(pred_labels if pred_labels is not None else [0] * len(pred_masks)))
    return ds.to_dict()


def evaluate(samples, **kwargs) -> dict:
    # mmdet's scope whatever scope an earlier test left set (under another scope the name is not found)
    with DefaultScope.overwrite_default_scope('mmdet'):
        metric = METRICS.build(dict(type='DiceIoUMetric', **kwargs))
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_half_overlapping_squares():
    # 4x4 squares shifted by 2 columns: |A n B| = 8, |A u B| = 24 -> IoU 1/3; Dice 2 * 8 / (16 + 16) = 1/2
    res = evaluate([sample([square(0, 0)], [square(0, 2)], [0.9])])
    assert res['dice/mIoU'] == pytest.approx(1 / 3)
    assert res['dice/mDice'] == pytest.approx(1 / 2)


def test_unmatched_gt_counts_zero():
    # GT 1 as above (1/3, 1/2); GT 2 far away overlaps no prediction -> 0, 0
    res = evaluate([sample([square(0, 0), square(10, 10)], [square(0, 2)], [0.9])])
    assert res['dice/mIoU'] == pytest.approx((1 / 3 + 0) / 2)
    assert res['dice/mDice'] == pytest.approx((1 / 2 + 0) / 2)
    res = evaluate([sample([square(0, 0)], np.zeros((0, H, W)), [])])  # no prediction at all
    assert res == {'dice/mIoU': 0.0, 'dice/mDice': 0.0}


def test_best_prediction_is_chosen_above_score_thr():
    gt = [square(4, 4)]
    preds = [square(4, 6), square(4, 4), square(4, 5)]  # IoU 1/3, 1, 12/20
    assert evaluate([sample(gt, preds, [0.9, 0.8, 0.7])])['dice/mIoU'] == pytest.approx(1.0)
    # the exact mask scores below score_thr: the best remaining one is the 1-column shift, IoU 12/20
    res = evaluate([sample(gt, preds, [0.9, 0.4, 0.7])])
    assert res['dice/mIoU'] == pytest.approx(12 / 20)
    assert res['dice/mDice'] == pytest.approx(2 * 12 / 32)
    res = evaluate([sample(gt, preds, [0.9, 0.4, 0.7])], score_thr=0.3)
    assert res['dice/mIoU'] == pytest.approx(1.0)


def test_one_prediction_may_match_several_gts():
    # a 4x8 prediction covering two adjacent 4x4 GTs: each GT has IoU 16/32
    pred = square(0, 0) | square(0, 4)
    res = evaluate([sample([square(0, 0), square(0, 4)], [pred], [0.9])])
    assert res['dice/mIoU'] == pytest.approx(0.5)
    assert res['dice/mDice'] == pytest.approx(2 * 16 / (16 + 32))


def test_match_labels():
    s = sample([square(0, 0)], [square(0, 0), square(0, 2)], [0.9, 0.9], gt_labels=[1], pred_labels=[0, 1])
    assert evaluate([s])['dice/mIoU'] == pytest.approx(1.0)  # class-agnostic by default
    assert evaluate([s], match_labels=True)['dice/mIoU'] == pytest.approx(1 / 3)


def test_mean_over_all_gt_not_per_image():
    # image 0: one GT matched exactly (IoU 1); image 1: three GTs with no prediction (IoU 0)
    samples = [sample([square(0, 0)], [square(0, 0)], [0.9], img_id=0),
               sample([square(0, 0), square(5, 5), square(10, 10)], np.zeros((0, H, W)), [], img_id=1)]
    res = evaluate(samples)
    assert res['dice/mIoU'] == pytest.approx(1 / 4)  # a per-image mean would give 1/2
    assert res['dice/mDice'] == pytest.approx(1 / 4)


def test_no_gt_gives_nan_and_bad_input_raises():
    res = evaluate([sample(np.zeros((0, H, W)), [square(0, 0)], [0.9])])
    assert math.isnan(res['dice/mIoU']) and math.isnan(res['dice/mDice'])
    metric = METRICS.build(dict(type='DiceIoUMetric'))
    bad = sample([square(0, 0)], [square(0, 0)], [0.9])
    bad['pred_instances']['masks'] = torch.zeros(1, H, W + 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r'original image size'):
        metric.process({}, [bad])
    no_gt = sample([square(0, 0)], [square(0, 0)], [0.9])
    del no_gt['gt_instances']
    with pytest.raises(KeyError, match='LoadAnnotations'):
        metric.process({}, [no_gt])


def _polygon(y: int, x: int, side: int = 4) -> list:
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def test_beside_coco_metric_in_one_evaluator():
    """CocoMetric (ground truth from the samples' raw ``instances``) and DiceIoUMetric in one val_evaluator list."""
    init_default_scope('mmdet')
    evaluator = Evaluator([dict(type='CocoMetric', metric=['segm']), dict(type='DiceIoUMetric')])
    evaluator.dataset_meta = dict(classes=('vehicle',))
    # GT 1 predicted exactly (score 0.9); GT 2 only by a shifted mask (IoU 1/3, below COCO's 0.5)
    ds = sample([square(0, 0), square(8, 8)], [square(0, 0), square(8, 10)], [0.9, 0.8])
    ds['instances'] = [dict(bbox=[0, 0, 4, 4], bbox_label=0, ignore_flag=0, mask=_polygon(0, 0)),
                       dict(bbox=[8, 8, 12, 12], bbox_label=0, ignore_flag=0, mask=_polygon(8, 8))]
    ds['pred_instances']['bboxes'] = torch.tensor([[0., 0., 4., 4.], [10., 8., 14., 12.]])
    evaluator.process([ds])
    res = evaluator.evaluate(1)
    assert res['dice/mIoU'] == pytest.approx((1 + 1 / 3) / 2)
    assert res['dice/mDice'] == pytest.approx((1 + 1 / 2) / 2)
    # COCO at IoU 0.5: the 0.9 detection is a TP (recall 1/2 at precision 1), the 0.8 one a FP; 101-point
    # interpolated precision is 1 at recall 0, 0.01, ..., 0.50 and 0 above: AP50 = 51 / 101
    assert res['coco/segm_mAP_50'] == pytest.approx(round(51 / 101, 3))
