"""CocoResultsExport (tools/test.py --format-only): every instance of every image reaches the json."""
import json

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.coco import COCO

from mmdet_custom.evaluation.metrics import CocoResultsExport


def _sample(img_id, n, size=(20, 30)):
    masks = torch.zeros(n, *size, dtype=torch.bool)
    for k in range(n):
        masks[k, 2 + k:6 + k, 3:9] = True  # 4 x 6 = 24 px each
    return dict(img_id=img_id, img_path=f'/x/P{img_id}.png', ori_shape=size,
                pred_instances=dict(masks=masks, scores=torch.linspace(0.9, 0.1, n), labels=torch.ones(n).long(),
                                    bboxes=torch.tensor([[3., 2. + k, 9., 6. + k] for k in range(n)])))


def test_all_instances_of_all_images_are_exported(tmp_path):
    gt = dict(images=[dict(id=i, file_name=f'P{i}.png', width=30, height=20) for i in (1, 2, 3)],
              annotations=[], categories=[dict(id=7, name='a'), dict(id=9, name='b')])
    ann = tmp_path / 'test.json'
    ann.write_text(json.dumps(gt))
    out = tmp_path / 'results.json'
    metric = CocoResultsExport(out_file=str(out), score_thr=0.3, ann_file=str(ann))
    metric.dataset_meta = dict(classes=('a', 'b'))
    metric.process({}, [_sample(1, 5), _sample(2, 5)])
    metric.process({}, [_sample(3, 5)])
    assert metric.evaluate(3) == {'export/num_instances': 9}  # scores 0.9, 0.7, 0.5 of 5 per image pass 0.3
    results = json.loads(out.read_text())
    assert sorted({r['image_id'] for r in results}) == [1, 2, 3] and len(results) == 9
    assert {r['category_id'] for r in results} == {9}  # label 1 -> class 'b' -> id 9 of the json, by name
    dt = COCO(str(ann)).loadRes(str(out))
    first = dt.loadAnns(dt.getAnnIds(imgIds=[1]))[0]
    assert first['bbox'] == [3.0, 2.0, 6.0, 4.0] and mask_utils.decode(first['segmentation']).sum() == 24
    assert np.isclose(first['score'], 0.9)


def test_devkit_style_categories_map_by_name(tmp_path):
    """A devkit json lists only the classes present, out of order, with iSAID's fixed ids: labels map by name, an
    unlisted class keeps id i + 1, and a json naming no class of the dataset is refused with the file's name."""
    import pytest

    from mmdet_custom.utils.errors import UserError
    gt = dict(images=[dict(id=1, file_name='P1.png', width=30, height=20)], annotations=[],
              categories=[dict(id=3, name='c'), dict(id=1, name='a')])
    ann = tmp_path / 'devkit.json'
    ann.write_text(json.dumps(gt))
    metric = CocoResultsExport(out_file=str(tmp_path / 'r.json'), ann_file=str(ann))
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    assert list(metric._category_ids()) == [1, 2, 3]
    ann.write_text(json.dumps(dict(gt, categories=[dict(id=1, name='A')])))
    metric = CocoResultsExport(out_file=str(tmp_path / 'r.json'), ann_file=str(ann))
    metric.dataset_meta = dict(classes=('a', 'b'))
    with pytest.raises(UserError, match=r"(?s)devkit\.json.*'A'"):
        metric._category_ids()
