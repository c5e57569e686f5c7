"""MaxDetsCocoMetric: AP@[.5:.95] over the largest detection budget (iSAID: 1000), hand-checked; the iSAID protocol
and categories by name on the devkit's own val json."""
import json

import numpy as np
import pytest
import torch
from mmdet.evaluation.metrics import CocoMetric
from mmdet.structures.mask import PolygonMasks

import mmdet_custom.register  # noqa: F401
from mmdet_custom.datasets import ISAID_CLASSES, ISAIDInstanceDataset
from mmdet_custom.evaluation.metrics import MaxDetsCocoMetric
from mmdet_custom.utils.errors import UserError

N = 150  # objects in the one image: more than pycocotools' default budget of 100 detections


def _coco_json(tmp_path):
    boxes = [[10.0 * (i % 15), 10.0 * (i // 15), 8.0, 8.0] for i in range(N)]
    coco = dict(images=[dict(id=1, file_name='a.png', width=200, height=200)],
                categories=[dict(id=1, name='Small_Vehicle')],
                annotations=[dict(id=i + 1, image_id=1, category_id=1, bbox=b, area=64.0, iscrowd=0,
                                  segmentation=[[b[0], b[1], b[0] + 8, b[1], b[0] + 8, b[1] + 8, b[0], b[1] + 8]])
                             for i, b in enumerate(boxes)])
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(coco))
    return path, np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float32)


def _evaluate(metric_cls, tmp_path):
    ann_file, xyxy = _coco_json(tmp_path)
    metric = metric_cls(ann_file=str(ann_file), metric='bbox', proposal_nums=(100, 300, 1000))
    metric.dataset_meta = dict(classes=('Small_Vehicle', ))
    # every object detected exactly, scores descending: only the first 100 fit a budget of 100
    pred = dict(bboxes=torch.from_numpy(xyxy), scores=torch.linspace(1.0, 0.5, N),
                labels=torch.zeros(N, dtype=torch.long))
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


# ------------------------------------------------------------------------------------------------------------------
# Protocols and categories by name, on the iSAID devkit's own val json
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def devkit_val(isaid_reference_dir):
    return isaid_reference_dir / 'instancesonly_filtered_val.json'


def _gt_as_predictions(dataset):
    """Data samples as the test loop hands them to the metric, predicting every ground-truth object exactly."""
    samples = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        h, w = info['height'], info['width']
        instances = info['instances']
        polygons = [[np.array(p, float) for p in inst['mask']] for inst in instances]
        masks = PolygonMasks(polygons, h, w).to_ndarray().astype(bool)
        pred = dict(bboxes=torch.tensor([inst['bbox'] for inst in instances], dtype=torch.float32),
                    scores=torch.ones(len(instances)),
                    labels=torch.tensor([inst['bbox_label'] for inst in instances], dtype=torch.long),
                    masks=torch.from_numpy(masks))
        samples.append(dict(img_id=info['img_id'], ori_shape=(h, w), pred_instances=pred))
    return samples


def test_devkit_val_json_given_back_scores_ap_1(devkit_val):
    dataset = ISAIDInstanceDataset(ann_file=str(devkit_val), data_prefix=dict(img=''), test_mode=True, pipeline=[])
    samples = _gt_as_predictions(dataset)
    # plus a 'ship', a class the json does not list (the devkit lists only the classes present): not evaluated
    pred = samples[0]['pred_instances']
    ship_mask = torch.zeros((1, ) + pred['masks'].shape[1:], dtype=torch.bool)
    ship_mask[0, :10, :10] = True
    pred.update(bboxes=torch.cat([pred['bboxes'], torch.tensor([[0., 0., 10., 10.]])]),
                scores=torch.cat([pred['scores'], torch.ones(1)]),
                labels=torch.cat([pred['labels'], torch.tensor([ISAID_CLASSES.index('ship')])]),
                masks=torch.cat([pred['masks'], ship_mask]))
    metric = MaxDetsCocoMetric(ann_file=str(devkit_val), metric=['bbox', 'segm'], classwise=True, protocol='isaid')
    metric.dataset_meta = dataset.metainfo
    metric.process({}, samples)
    metrics = metric.evaluate(len(dataset))
    for iou_type in ('bbox', 'segm'):
        for name in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'AR@1000', 'AR_s@1000'):
            assert metrics[f'coco/{iou_type}_{name}'] == 1.0, (iou_type, name)
        # the per-class table uses the same by-name mapping: every class present scores 1
        for name in ('Large_Vehicle', 'Small_Vehicle', 'storage_tank'):
            assert metrics[f'coco/{iou_type}_{name}_precision'] == 1.0
        assert metrics[f'coco/{iou_type}_AR@1'] < metrics[f'coco/{iou_type}_AR@10'] < 1.0  # 4 images, 139 objects
        assert f'coco/{iou_type}_AR@100' not in metrics  # recalls are named by the budgets they use
    # the same numbers as the offline evaluation of the same predictions
    from mmdet_custom.evaluation.functional import evaluate_coco_results
    # (iSAID's fixed category ids are index + 1; 'ship' has id 1, which this json does not list)
    results = [dict(image_id=s['img_id'], category_id=label + 1, score=1.0, bbox=[x0, y0, x1 - x0, y1 - y0])
               for s in samples for (x0, y0, x1, y1), label in zip(s['pred_instances']['bboxes'].tolist(),
                                                                   s['pred_instances']['labels'].tolist())]
    offline = evaluate_coco_results(str(devkit_val), results, ('bbox', ), classes=ISAID_CLASSES)
    assert all(round(v, 3) == metrics[f'coco/{k}'] for k, v in offline.items())
    # stock CocoMetric pairs labels with the json's category order [8, 9, 2]: label 7 (Large_Vehicle) has no id
    stock = CocoMetric(ann_file=str(devkit_val), metric=['bbox', 'segm'])
    stock.dataset_meta = dataset.metainfo
    stock.process({}, _gt_as_predictions(dataset))
    with pytest.raises(IndexError):
        stock.evaluate(len(dataset))


def test_protocol_options_are_checked(tmp_path, devkit_val):
    ann_file, _ = _coco_json(tmp_path)
    with pytest.raises(ValueError, match='maxDets'):
        MaxDetsCocoMetric(ann_file=str(ann_file), protocol='isaid', proposal_nums=(100, 300, 1000))
    with pytest.raises(ValueError, match='protocol must be one of'):
        MaxDetsCocoMetric(ann_file=str(ann_file), protocol='dota')
    with pytest.raises(ValueError, match='metric_items'):
        MaxDetsCocoMetric(ann_file=str(ann_file), protocol='isaid', metric_items=['AR@100'])
    with pytest.raises(ValueError, match='proposals'):
        MaxDetsCocoMetric(ann_file=str(ann_file), metric='proposal')
    # a json whose names are not the dataset's classes fails when the classes become known (before evaluating)
    metric = MaxDetsCocoMetric(ann_file=str(ann_file), protocol='isaid')
    with pytest.raises(UserError, match=r"(?s)gt.json.*'Small_Vehicle'"):
        metric.dataset_meta = dict(classes=('ship', 'plane'))
    # a segm metric on a json without masks fails at construction, naming the file
    no_masks = json.loads(ann_file.read_text())
    for ann in no_masks['annotations']:
        del ann['segmentation']
    ann_file.write_text(json.dumps(no_masks))
    with pytest.raises(UserError, match="gt.json.*no 'segmentation'"):
        MaxDetsCocoMetric(ann_file=str(ann_file), metric='segm')


def test_isaid_protocol_bands_on_the_metric(tmp_path):
    """8x8 px objects (area 64 < 10^2) are in no iSAID band, in COCO's small band."""
    ann_file, xyxy = _coco_json(tmp_path)
    out = {}
    for protocol in ('isaid', 'coco'):
        metric = MaxDetsCocoMetric(ann_file=str(ann_file), metric='bbox', protocol=protocol)
        metric.dataset_meta = dict(classes=('Small_Vehicle', ))
        pred = dict(bboxes=torch.from_numpy(xyxy), scores=torch.linspace(1.0, 0.5, N),
                    labels=torch.zeros(N, dtype=torch.long))
        metric.process({}, [dict(img_id=1, ori_shape=(200, 200), pred_instances=pred)])
        out[protocol] = metric.evaluate(1)
    assert out['isaid']['coco/bbox_mAP'] == out['coco']['coco/bbox_mAP'] == 1.0
    assert out['isaid']['coco/bbox_mAP_s'] == -1.0 and out['coco']['coco/bbox_mAP_s'] == 1.0
    assert out['isaid']['coco/bbox_AR@1'] == round(1 / N, 3) and out['coco']['coco/bbox_AR@100'] == round(100 / N, 3)
