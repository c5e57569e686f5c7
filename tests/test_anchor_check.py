"""The check of a config's RPN anchors against its training boxes before training (anchor_search.check), and the
real-data demo config it motivated.

The smoke config trained on real iSAID shrank 800 px patches to 256 px: no anchor reached any of the 427 training
boxes of the shared samples, the RPN never saw a positive (``loss_rpn_bbox: 0.0000`` all run) and nothing said so.
"""
import json
import runpy
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import load_config, shrink_for_cpu

from mmdet_custom.anchor_search import (
    AnchorRecallError,
    anchor_setting_from_cfg,
    check_anchor_recall,
    max_iou_brute_force,
    measure_anchor_recall,
)
from mmdet_custom.datasets.utils import set_data_root

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE = 'configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py'
ROOT = 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'
ANCHORS_STEP = 'configs/mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py'
DEMO = 'configs/mask_rcnn/mask-rcnn_r18_fpn_anchors_crop256_300i_isaid.py'


class Log:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(('info', msg))

    def warning(self, msg):
        self.lines.append(('warning', msg))


def _config_and_dataset(path, data_root):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = load_config(path)
    set_data_root(cfg, str(data_root))
    return cfg, DATASETS.build(cfg.train_dataloader.dataset)


def _train_boxes(data_root):
    """(xyxy boxes in patch pixels, image (h, w)) of the converted train json, read here without mmdet."""
    ann = json.loads((Path(data_root) / 'annotations' / 'instances_train.json').read_text())
    sizes = {im['id']: (im['height'], im['width']) for im in ann['images']}
    boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]]
                      for a in ann['annotations'] if not a.get('iscrowd')], dtype=float)
    shapes = np.array([sizes[a['image_id']] for a in ann['annotations'] if not a.get('iscrowd')])
    return boxes, shapes


def test_smoke_config_on_real_isaid_is_refused_naming_classes_and_sizes(isaid_converted):
    cfg, dataset = _config_and_dataset(SMOKE, isaid_converted.root)
    with pytest.raises(AnchorRecallError) as info:
        check_anchor_recall(cfg, dataset)
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith("RPN anchor recall@0.7 (the assigner's pos_iou_thr) is 0.000 on 427 training boxes of "
                              "4 images in network-input pixels (Resize to (256, 256), keep_ratio=True); 100.0% get "
                              "no positive anchor at all (best IoU < min_pos_iou 0.3)")
    assert 'Large_Vehicle 0/366 (unmatched median 22x7 px), Small_Vehicle 0/61' in message
    assert 'by size: small 0/427' in message and 'the smallest anchor is 45x23 px (P2, stride 4)' in message
    assert message.endswith('--anchor-check warn trains anyway.')
    # the same boxes scaled by hand as the pipeline's Resize scales them (800 -> 256) and measured by brute force
    boxes, shapes = _train_boxes(isaid_converted.root)
    assert (shapes == 800).all()
    scale = 256 / 800
    ious = max_iou_brute_force(boxes * scale, np.full((len(boxes), 2), 256),
                               anchor_setting_from_cfg(cfg.model.rpn_head.anchor_generator))
    assert len(boxes) == 427 and ious.max() < 0.3
    # warn: the same finding, as a warning, and training may go on
    log = Log()
    found = check_anchor_recall(cfg, dataset, mode='warn', logger=log)
    assert found.recall == found.recall_any == 0.0 and log.lines[0][0] == 'warning'
    assert check_anchor_recall(cfg, dataset, mode='off') is None


def test_isaid_configs_at_their_scale(isaid_converted):
    """Root config (stock anchors, positives from IoU 0.7): a warning; anchors step and the real-data demo config
    (stride-adjusted anchors, 0.5): passes. Each recall equals the brute force on the boxes at 800 px."""
    boxes, shapes = _train_boxes(isaid_converted.root)
    for path, expected, level in ((ROOT, 0.241, 'warning'), (ANCHORS_STEP, 0.707, 'info'), (DEMO, 0.707, 'info')):
        cfg, dataset = _config_and_dataset(path, isaid_converted.root)
        log = Log()
        found = check_anchor_recall(cfg, dataset, logger=log)
        assert round(found.recall, 3) == expected and found.num_boxes == 427
        assert log.lines[0][0] == level, log.lines
        brute = max_iou_brute_force(boxes, shapes, anchor_setting_from_cfg(cfg.model.rpn_head.anchor_generator))
        assert found.recall == pytest.approx((brute >= found.pos_iou_thr).mean(), abs=1e-12)
    assert 'Large_Vehicle 74/366 (unmatched median 72x23 px)' in check_anchor_recall(
        *_config_and_dataset(ROOT, isaid_converted.root), logger=None).unmatched(0.5)


class _FakeDataset:
    """28,000 patches of 800 px with 25 small boxes each (the size of iSAID's train split), as data infos."""
    metainfo = dict(classes=('Small_Vehicle', 'Large_Vehicle'))

    def __init__(self, n=28000, per_image=25, seed=0):
        rng = np.random.default_rng(seed)
        self.n, self.per_image, self.rng = n, per_image, rng
        self.xy = rng.uniform(0, 760, (n, per_image, 2))
        self.wh = rng.uniform(8, 40, (n, per_image, 2))

    def __len__(self):
        return self.n

    def get_data_info(self, i):
        return dict(img_id=i, width=800, height=800, instances=[
            dict(bbox=[*self.xy[i, k], *(self.xy[i, k] + self.wh[i, k])], bbox_label=k % 2, ignore_flag=0)
            for k in range(self.per_image)])


def test_cheap_on_an_isaid_sized_training_set():
    cfg = load_config(ANCHORS_STEP)
    dataset = _FakeDataset()
    start = time.perf_counter()
    found = measure_anchor_recall(cfg, dataset)
    took = time.perf_counter() - start
    assert found.num_images == 2000 and found.total_images == 28000 and found.num_boxes == 2000 * 25
    assert 'a sample of 28000' in found.summary()
    assert took < 3.0, took


def test_not_applicable_is_skipped(isaid_converted):
    cfg, dataset = _config_and_dataset(ANCHORS_STEP, isaid_converted.root)
    cfg.train_dataloader.dataset.pipeline.insert(2, dict(type='RandomResize', scale=(800, 800)))
    cfg.train_dataloader.dataset.pipeline.pop(3)  # the fixed Resize: boxes have no single input size now
    assert measure_anchor_recall(cfg, dataset) is None
    cfg.model.pop('rpn_head')  # a single-stage model
    assert measure_anchor_recall(cfg, dataset) is None


def test_train_refuses_before_the_first_iteration_and_cli_says_it_in_one_line(isaid_converted, tmp_path,
                                                                             monkeypatch, capsys):
    from mmengine.runner import Runner

    from mmdet_custom.apis import train
    from mmdet_custom.utils.cli import run_cli
    cfg = load_config(SMOKE)
    shrink_for_cpu(cfg, tmp_path / 'work', image_size=(256, 256), iters=2)
    cfg.anchor_check = 'refuse'   # shrink_for_cpu's tests accept the shrink; this one does not
    set_data_root(cfg, str(isaid_converted.root))
    monkeypatch.setattr(Runner, 'train', lambda self: pytest.fail('training started'))
    with pytest.raises(AnchorRecallError, match='is 0.000 on 427 training boxes'):
        train(cfg)
    path = tmp_path / 'smoke_on_real.py'
    cfg.dump(str(path))
    main = runpy.run_path(str(REPO_ROOT / 'tools' / 'train.py'))['main']
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [str(path), '--work-dir', str(tmp_path / 'cli')])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'RPN anchor recall@0.7' in errors[0] and 'Small_Vehicle 0/61' in errors[0]


@pytest.mark.slow  # two training steps of each config at 256 px: ~20 s on a free 2-core machine
def test_demo_config_gives_the_rpn_positives_the_smoke_config_never_gets(isaid_converted, tmp_path,
                                                                         one_torch_thread):
    """Two iterations on the shared samples: loss_rpn_bbox is exactly 0 for the smoke config (no positive anchor at
    256 px) and positive for the real-data demo config."""
    from mmdet_custom.apis import train
    losses = {}
    for name, path in (('smoke', SMOKE), ('demo', DEMO)):
        cfg = load_config(path)
        shrink_for_cpu(cfg, tmp_path / name, image_size=None, iters=2, batch_size=2, proposals=100)
        set_data_root(cfg, str(isaid_converted.root))
        runner = train(cfg)
        scalars = Path(runner.log_dir, 'vis_data', 'scalars.json').read_text().splitlines()
        losses[name] = [json.loads(line)['loss_rpn_bbox'] for line in scalars if 'loss_rpn_bbox' in line]
    assert losses['smoke'] == [0.0, 0.0]
    assert len(losses['demo']) == 2 and min(losses['demo']) > 0.05, losses
