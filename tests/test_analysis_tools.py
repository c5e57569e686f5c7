"""Analysis tools on real iSAID patches (../shared/data) with a tiny Mask R-CNN trained once for 2 iterations.

The devkit sample is converted once per module into 256 px patches; the model is the CPU smoke config (ResNet-18,
random init) at a 128 px input with few proposals, trained 2 iterations with a validation at the end (so its log has
losses, lr and AP). Every tool then runs on it, through its command line where that is cheap, and its files are
read back. ``model.test_cfg.rcnn.score_thr=0`` makes every image give exactly ``max_per_img`` detections.
"""
import csv
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image

SMOKE_CONFIG = REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r18_fpn_300i_isaid-smoke.py'
SCALE = (128, 128)
MAX_PER_IMG = 20
PATCH = 256


def _tool(name):
    return runpy.run_path(str(REPO_ROOT / 'tools' / 'analysis_tools' / f'{name}.py'))['main']


def _read_csv(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def isaid_patches(isaid_256):
    """train + val in PATCH (256) px patches without overlap (conftest's session conversion; read-only)."""
    return isaid_256.root


@pytest.fixture(scope='module')
def tiny_config(isaid_patches, tmp_path_factory):
    """The smoke config on the converted patches, cut down for speed, dumped to a file (for the command lines)."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(SMOKE_CONFIG))
    root = str(isaid_patches) + '/'
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'), ('test_dataloader', 'val')):
        cfg[loader].update(num_workers=0, persistent_workers=False)
        cfg[loader].dataset.update(data_root=root, ann_file=f'annotations/instances_{split}.json',
                                   data_prefix=dict(img=f'{split}/images/'))
        for t in cfg[loader].dataset.pipeline:
            if t['type'] == 'Resize':
                t['scale'] = SCALE
    cfg.train_dataloader.batch_size = 1
    cfg.val_dataloader.dataset.indices = 1  # validation of the fixture's training: 1 image
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
    cfg.model.backbone.init_cfg = None
    cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    cfg.model.train_cfg.rcnn.sampler.num = 64
    cfg.model.test_cfg.rpn.update(nms_pre=200, max_per_img=100)
    cfg.model.test_cfg.rcnn.update(score_thr=0.0, max_per_img=MAX_PER_IMG)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False, save_best=None)
    cfg.randomness = dict(seed=0)
    cfg.anchor_check = 'warn'  # real patches shrunk to 128 px: below every anchor, accepted for these plumbing runs
    path = tmp_path_factory.mktemp('tiny_config') / 'tiny_mask_rcnn.py'
    cfg.dump(str(path))
    return path


@pytest.fixture(scope='module')
def trained(tiny_config, tmp_path_factory):
    """(work_dir, checkpoint) of the tiny model after 2 iterations and one validation."""
    from mmdet_custom.apis import train
    work_dir = tmp_path_factory.mktemp('tiny_run')
    train(str(tiny_config), work_dir=str(work_dir))
    ckpt = work_dir / 'iter_2.pth'
    assert ckpt.is_file()
    return work_dir, ckpt


def _val_json(isaid_patches):
    with open(isaid_patches / 'annotations' / 'instances_val.json') as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------------------------
# dataset statistics (no model)
# ---------------------------------------------------------------------------------------------------------------
def test_dataset_stats_counts_equal_the_json(isaid_patches, tmp_path, capsys):
    ann_file = isaid_patches / 'annotations' / 'instances_train.json'
    summary = _tool('dataset_stats')([str(ann_file), '--output-dir', str(tmp_path)])
    assert 'instances' in capsys.readouterr().out
    coco = json.loads(ann_file.read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    anns = [a for a in coco['annotations'] if not a.get('iscrowd', 0)]
    direct = {name: sum(a['category_id'] == cid for a in anns) for cid, name in names.items()}
    assert summary['instances_per_class'] == direct
    assert direct['Large_Vehicle'] > 0 and direct['Small_Vehicle'] > 0  # the sample's classes
    rows = _read_csv(tmp_path / 'instances_per_class.csv')
    assert {r['class']: int(r['instances']) for r in rows} == direct
    assert all(int(r['small']) + int(r['medium']) + int(r['large']) == int(r['instances']) for r in rows)

    per_image = _read_csv(tmp_path / 'objects_per_image.csv')
    assert len(per_image) == len(coco['images'])
    counts = np.array([sum(a['image_id'] == img['id'] for a in anns) for img in coco['images']])
    assert [int(r['objects']) for r in per_image] == counts.tolist()
    q1, q3 = np.percentile(counts, [25, 75])
    expected = (counts > q3 + 1.5 * (q3 - q1)) | (counts < q1 - 1.5 * (q3 - q1))
    assert [r['outlier'] == '1' for r in per_image] == expected.tolist()

    sizes = _read_csv(tmp_path / 'box_sizes.csv')
    assert len(sizes) == len(anns)
    small = sum(a['area'] < 32**2 for a in anns)
    assert summary['sizes']['small'] == small == sum(r['size'] == 'small' for r in sizes)
    for name in ('instances_per_class', 'objects_per_image', 'box_sizes'):
        with Image.open(tmp_path / f'{name}.png') as im:
            assert im.format == 'PNG' and min(im.size) > 100
    assert json.loads((tmp_path / 'summary.json').read_text())['instances'] == len(anns)


def test_dataset_stats_marks_a_crowded_image_and_names_bad_fields(isaid_patches, tmp_path):
    from mmdet_custom.analysis.dataset_stats import dataset_stats
    coco = _val_json(isaid_patches)
    first = coco['annotations'][0]
    crowded = coco['images'][-1]['id']
    coco['annotations'] += [dict(first, id=10**6 + i, image_id=crowded) for i in range(60)]
    ann_file = tmp_path / 'crowded.json'
    ann_file.write_text(json.dumps(coco))
    summary = dataset_stats(str(ann_file), str(tmp_path / 'out'))
    rows = _read_csv(tmp_path / 'out' / 'objects_per_image.csv')
    assert [r['image_id'] for r in rows if r['outlier'] == '1'] == [str(crowded)]
    assert summary['objects_per_image']['outlier_images'] == 1

    coco['annotations'].append(dict(first, id=-1, category_id=99))
    ann_file.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r'crowded\.json.*annotation -1.*category_id 99'):
        dataset_stats(str(ann_file), str(tmp_path / 'bad'))
    assert not (tmp_path / 'bad' / 'summary.json').exists()


# ---------------------------------------------------------------------------------------------------------------
# training curves
# ---------------------------------------------------------------------------------------------------------------
def test_train_curves_from_work_dir_and_both_log_files(trained, tmp_path, capsys):
    from mmdet_custom.analysis.train_curves import find_json_log, load_json_log
    work_dir, _ = trained
    out = tmp_path / 'curves.png'
    series = _tool('plot_train_curves')([str(work_dir), '--out', str(out)])
    assert 'training records' in capsys.readouterr().out
    (s, ) = series.values()
    assert s['iters'] == [1, 2]
    records = [json.loads(line) for line in open(s['file'])]
    assert s['losses']['loss'] == [r['loss'] for r in records if 'loss' in r]
    assert {'loss_cls', 'loss_bbox', 'loss_mask', 'loss_rpn_cls'} <= set(s['losses'])
    assert s['val_x'] == 'iter' and s['val_steps'] == [2]
    assert 0 <= s['metrics']['coco/segm_mAP_50'][0] <= 1
    with Image.open(out) as im:
        assert im.format == 'PNG' and im.size[0] > im.size[1] > 100
    # the LoggerHook's <timestamp>.json holds the same records as scalars.json
    vis_data = Path(find_json_log(str(work_dir))).parent
    other = [p for p in vis_data.glob('*.json') if p.name != 'scalars.json']
    assert len(other) == 1
    assert load_json_log(str(other[0]))['train'] == load_json_log(str(vis_data))['train']
    with pytest.raises(FileNotFoundError, match='no scalars.json'):
        find_json_log(str(tmp_path))


def _write_log(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    return path


@pytest.mark.parametrize('kind, val_steps, expected_x, expected_steps', [
    ('epoch', [1, 2], 'epoch', [1, 2]),  # epoch-based loop: step counts epochs
    ('iter', [10, 20], 'iter', [10, 20]),  # LoggerHook(log_metric_by_epoch=False): step is the iteration
    ('iter', [0, 0], 'iter', [10, 20]),  # default LoggerHook in an iteration loop logs epoch 0: use the iterations
])
def test_train_curves_validation_x_axis(tmp_path, kind, val_steps, expected_x, expected_steps):
    from mmdet_custom.analysis.train_curves import plot_train_curves
    records = []
    for it in range(5, 21, 5):
        rec = dict(lr=0.01 * it, loss=1.0 / it, loss_cls=0.5 / it, iter=it, step=it)
        if kind == 'epoch':
            rec['epoch'] = 1 if it <= 10 else 2
        records.append(rec)
        if it % 10 == 0:
            records.append({'coco/segm_mAP_50': it / 100, 'coco/segm_mAP': it / 200, 'step': val_steps[it // 10 - 1]})
    log = _write_log(tmp_path / 'run' / '20260101_000000' / 'vis_data' / 'scalars.json', records)
    (s, ) = plot_train_curves(str(tmp_path / 'run'), str(tmp_path / 'c.png')).values()
    assert s['file'] == str(log) and s['val_x'] == expected_x and s['val_steps'] == expected_steps
    assert s['lr'] == [0.05, 0.1, 0.15, 0.2] and s['losses']['loss_cls'] == [0.1, 0.05, 0.5 / 15, 0.025]
    assert s['metrics'] == {'coco/segm_mAP': [0.05, 0.1], 'coco/segm_mAP_50': [0.1, 0.2]}
    with pytest.raises(ValueError, match='no validation record has "coco/bbox_mAP"'):
        plot_train_curves(str(log), str(tmp_path / 'd.png'), metric_keys=['coco/bbox_mAP'])
    log.write_text(log.read_text() + '{"loss": 1,\n')
    with pytest.raises(ValueError, match=r'scalars\.json:7: not a json line'):
        plot_train_curves(str(log), str(tmp_path / 'e.png'))


# ---------------------------------------------------------------------------------------------------------------
# ground truth vs prediction
# ---------------------------------------------------------------------------------------------------------------
def test_gt_vs_pred_pngs_side_by_side(trained, tiny_config, isaid_patches, tmp_path):
    _, ckpt = trained
    coco = _val_json(isaid_patches)
    names = [img['file_name'] for img in coco['images'][1:3]]  # image 0 of the split has no instance
    files = _tool('visualize_predictions')([str(tiny_config), str(ckpt), '--output-dir', str(tmp_path), '--indices',
                                            '1', '2', '--show-score-thr', '0'])
    assert [Path(f).name for f in files] == [Path(n).stem + '.png' for n in names]
    raw = np.asarray(Image.open(isaid_patches / 'val' / 'images' / names[0]).convert('RGB'))
    for path in files:
        with Image.open(path) as im:
            assert im.size == (2 * PATCH, PATCH)
    drawn = np.asarray(Image.open(files[0]).convert('RGB'))
    assert not np.array_equal(drawn[:, :PATCH], raw)  # ground truth drawn on the left
    assert not np.array_equal(drawn[:, PATCH:], raw)  # MAX_PER_IMG predictions drawn on the right


def test_gt_vs_pred_score_threshold(isaid_patches):
    """Predictions below --show-score-thr are not drawn: the right half stays the raw image."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from mmdet_custom.analysis.visualize import draw_gt_vs_pred, make_visualizer
    from mmdet_custom.datasets import ISAID_CLASSES, ISAID_PALETTE
    raw = np.asarray(Image.open(isaid_patches / 'val' / 'images' / _val_json(isaid_patches)['images'][1]
                                ['file_name']).convert('RGB'))
    masks = torch.zeros(2, PATCH, PATCH, dtype=torch.bool)
    masks[0, 10:40, 20:60] = masks[1, 100:150, 100:120] = True
    sample = DetDataSample()
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[20., 10, 60, 40]]), labels=torch.tensor([7]),
                                       masks=masks[:1].numpy())
    sample.pred_instances = InstanceData(bboxes=torch.tensor([[20., 10, 60, 40], [100., 100, 120, 150]]),
                                         labels=torch.tensor([7, 8]), scores=torch.tensor([0.9, 0.4]),
                                         masks=masks)
    vis = make_visualizer(dict(classes=ISAID_CLASSES, palette=ISAID_PALETTE))
    high = draw_gt_vs_pred(raw, sample, vis, show_score_thr=0.95)
    assert high.shape == (PATCH, 2 * PATCH, 3)
    assert np.array_equal(high[:, PATCH:], raw)
    assert not np.array_equal(high[:, :PATCH], raw)
    mid = draw_gt_vs_pred(raw, sample, vis, show_score_thr=0.5)  # only the 0.9 detection, at rows 10:40
    assert not np.array_equal(mid[10:40, PATCH + 20:PATCH + 60], raw[10:40, 20:60])
    assert np.array_equal(mid[160:, PATCH:], raw[160:])  # nothing drawn below the first box's label
    low = draw_gt_vs_pred(raw, sample, vis, show_score_thr=0.3)
    assert not np.array_equal(low[100:150, PATCH + 100:PATCH + 120], mid[100:150, PATCH + 100:PATCH + 120])


# ---------------------------------------------------------------------------------------------------------------
# score histogram
# ---------------------------------------------------------------------------------------------------------------
def test_score_histogram_files(trained, tiny_config, tmp_path, capsys):
    _, ckpt = trained
    summary = _tool('score_hist')([str(tiny_config), str(ckpt), '--output-dir', str(tmp_path), '--num-images', '2'])
    assert 'detections on 2 images' in capsys.readouterr().out
    rows = _read_csv(tmp_path / 'scores.csv')
    assert len(rows) == summary['detections'] == 2 * MAX_PER_IMG  # score_thr 0 keeps max_per_img per image
    assert len({r['image_id'] for r in rows}) == 2
    data = json.loads((tmp_path / 'scores.json').read_text())
    assert [d['score'] for d in data['detections']] == pytest.approx([float(r['score']) for r in rows], abs=1e-6)
    assert data['score_thr'] == 0.0 and len(data['classes']) == 15
    assert all(0 <= float(r['score']) <= 1 and r['class'] == data['classes'][int(r['label'])] for r in rows)
    with Image.open(tmp_path / 'score_hist.png') as im:
        assert im.format == 'PNG'


# ---------------------------------------------------------------------------------------------------------------
# Grad-CAM
# ---------------------------------------------------------------------------------------------------------------
def test_grad_cam_three_predictions(trained, tiny_config, isaid_patches, tmp_path):
    from mmdet_custom.analysis.gradcam import grad_cam
    from mmdet_custom.datasets import ISAID_CLASSES
    _, ckpt = trained
    img = str(isaid_patches / 'val' / 'images' / _val_json(isaid_patches)['images'][1]['file_name'])
    # with score_thr 0 and up to 1000 kept, every class has at least 3 detections
    opts = {'model.test_cfg.rcnn.max_per_img': 1000}
    results = grad_cam(img, str(tiny_config), str(ckpt), 'Large_Vehicle', str(tmp_path), num_preds=3,
                       target_layer='neck.fpn_convs.0', cfg_options=opts)
    assert len(results) == 3 and len(set(r['out_file'] for r in results)) == 3
    assert [r['score'] for r in results] == sorted((r['score'] for r in results), reverse=True)
    for r in results:
        assert r['label'] == ISAID_CLASSES.index('Large_Vehicle')
        # the 128 px input (padded to a multiple of 32) at stride 4, upsampled to the 256 px image
        assert r['feature_shape'] == (SCALE[0] // 4, SCALE[1] // 4)
        assert r['cam'].shape == (PATCH, PATCH)
        assert r['cam'].min() >= 0 and r['cam'].max() <= 1 and r['cam'].std() > 0
        with Image.open(r['out_file']) as im:
            assert im.size == (PATCH, PATCH) and im.format == 'PNG'
    with pytest.raises(ValueError, match='not one of the model classes'):
        grad_cam(img, str(tiny_config), str(ckpt), 'truck', str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# inference benchmark
# ---------------------------------------------------------------------------------------------------------------
def test_inference_benchmark_table(tiny_config, tmp_path, capsys):
    out = tmp_path / 'bench.json'
    rows = _tool('infer_benchmark')([str(tiny_config), '--batch-sizes', '2', '1', '--num-warmup', '0',
                                     '--max-iter', '1', '--device', 'cpu', '--out', str(out)])
    table = capsys.readouterr().out
    assert [r['batch_size'] for r in rows] == [1, 2]
    for r in rows:
        assert r['ms_per_img'] > 0 and r['img_per_s'] == pytest.approx(1000 / r['ms_per_img'])
        assert r['peak_mem_mib'] >= 0 and r['mem_kind'] == 'cpu peak RSS growth'
    assert json.loads(out.read_text()) == rows
    assert len([line for line in table.splitlines() if line.strip().startswith(('1 ', '2 '))]) == 2


# ---------------------------------------------------------------------------------------------------------------
# overfit check
# ---------------------------------------------------------------------------------------------------------------
def test_stop_at_metric_hook_records_and_stops():
    from types import SimpleNamespace

    from mmengine.hooks import EarlyStoppingHook
    from mmengine.logging import MMLogger

    from mmdet_custom.analysis.overfit import StopAtMetricHook
    from mmdet_custom.utils.errors import UserError
    hook = StopAtMetricHook('coco/segm_mAP_50', 0.5)
    assert isinstance(hook, EarlyStoppingHook) and hook.stopping_threshold == 0.5  # mmengine's rule, inclusive
    runner = SimpleNamespace(iter=10, train_loop=SimpleNamespace(stop_training=False),
                             logger=MMLogger.get_instance('test_stop_hook'))
    hook.after_val_epoch(runner, {'coco/segm_mAP_50': 0.2})
    assert not runner.train_loop.stop_training
    runner.iter = 20
    hook.after_val_epoch(runner, {'coco/segm_mAP_50': 0.5})  # reaching the target counts
    assert runner.train_loop.stop_training and hook.reached_at == 20
    assert hook.history == [(10, 0.2), (20, 0.5)]
    with pytest.raises(KeyError, match='coco/bbox_mAP') as err:
        hook.after_val_epoch(runner, {'coco/bbox_mAP': 0.1})
    assert isinstance(err.value, UserError) and str(err.value).startswith("validation reported no 'coco/segm_mAP_50'")
    runner.iter = 30
    hook.after_val_epoch(runner, {})  # CocoMetric on no detection at all
    assert hook.history[-1] == (30, 0.0)

    timed = StopAtMetricHook('coco/segm_mAP_50', 0.5, max_time_s=0)
    runner.train_loop.stop_training = False
    timed.before_train(runner)
    timed.after_train_iter(runner, 0)
    assert runner.train_loop.stop_training and timed.timed_out and timed.reached_at is None
    untimed = StopAtMetricHook('coco/segm_mAP_50', 0.5)
    runner.train_loop.stop_training = False
    untimed.before_train(runner)
    untimed.after_train_iter(runner, 0)
    assert not runner.train_loop.stop_training and not untimed.timed_out


def test_overfit_stops_at_reached_target_and_saves_figure(tiny_config, isaid_patches, tmp_path):
    from mmdet_custom.analysis.overfit import format_history, overfit
    train_json = json.loads((isaid_patches / 'annotations' / 'instances_train.json').read_text())
    img = train_json['images'][0]
    # any AP reaches 0: the run must stop after the first validation, not run to max_iters
    result = overfit(str(tiny_config), str(tmp_path), num_images=1, target_ap50=0.0, val_interval=1,
                     max_iters=3)
    assert result['reached'] and result['reached_at'] == 1 and result['iters'] == 1
    assert [h['iter'] for h in result['history']] == [1]
    assert result['img_ids'] == [img['id']]
    subset = json.loads((tmp_path / 'overfit_ann.json').read_text())
    assert [i['id'] for i in subset['images']] == [img['id']]
    assert len(subset['annotations']) == sum(a['image_id'] == img['id'] for a in train_json['annotations'])
    (figure, ) = result['figures']
    with Image.open(figure) as im:
        assert im.size == (2 * img['width'], img['height'])
    assert json.loads((tmp_path / 'overfit_history.json').read_text())['reached_at'] == 1
    assert 'reached 0 at iteration 1' in format_history(result)


def test_layer_grad_cams_equal_the_grad_cam_package():
    """One forward pass and layer-only gradients give pytorch_grad_cam's GradCAM maps (toy classifier)."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from mmdet_custom.analysis.gradcam import layer_grad_cams
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4),
        torch.nn.Softmax(dim=1)).eval()
    x = torch.rand(1, 3, 24, 32)
    ours, feature_shape = layer_grad_cams(model, model[2], x)
    assert ours.shape == (4, 24, 32) and feature_shape == (12, 16)
    with GradCAM(model=model, target_layers=[model[2]]) as cam:
        theirs = np.stack([cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])[0] for k in range(4)])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert all(m.std() > 0 and m.min() >= 0 and m.max() <= 1 for m in ours)


# ---------------------------------------------------------------------------------------------------------------
# user mistakes: one `error:` line naming the file and flag, exit 2, no traceback
# ---------------------------------------------------------------------------------------------------------------
def _cli_error(tool, args, capsys):
    """Run ``tool`` as its ``__main__`` block does; return its one ``error:`` line."""
    from mmdet_custom.utils.cli import run_cli
    capsys.readouterr()
    with pytest.raises(SystemExit) as code:
        run_cli(_tool(tool), [str(a) for a in args])
    err = capsys.readouterr().err
    assert code.value.code == 2 and 'Traceback' not in err, err
    (line, ) = [line for line in err.splitlines() if line.startswith('error:')]
    return line


def test_gradcam_mistakes_are_one_error_line(tmp_path, capsys):
    from mmdet_custom.datasets import ISAID_CLASSES
    img = tmp_path / 'scene.png'
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(img)
    common = [img, SMOKE_CONFIG, '--output-dir', tmp_path / 'out', '--device', 'cpu']
    line = _cli_error('gradcam', common + ['--target-class', 'truck'], capsys)
    assert line.startswith("error: --target-class 'truck' is not one of the model classes (from ")
    assert str(SMOKE_CONFIG) in line and 'ISAIDInstanceDataset' in line and 'Small_Vehicle' in line
    line = _cli_error('gradcam', common + ['--target-class', 'ship', '--target-layer', 'backbone.layer9'], capsys)
    assert line.startswith("error: --target-layer 'backbone.layer9': the model of ") and 'backbone, neck' in line
    assert not (tmp_path / 'out').exists()
    from mmdet_custom.analysis.gradcam import GradCAMError, _class_index
    with pytest.raises(GradCAMError, match=r'^--target-class 15 is outside \[0, 15\): config x has 15 classes$'):
        _class_index(ISAID_CLASSES, '15', 'config x')


def test_train_curves_and_overfit_mistakes_name_the_file(tmp_path, capsys):
    from mmdet_custom.analysis.inference import select_indices
    from mmdet_custom.analysis.overfit import write_subset
    from mmdet_custom.utils.errors import UserError
    log = _write_log(tmp_path / 'scalars.json', [dict(lr=0.1, loss=1.0, iter=1, step=1)])
    line = _cli_error('plot_train_curves', [log, '--out', tmp_path / 'c.png', '--keys', 'loss_mask'], capsys)
    assert line == f'error: {log}: no training record has "loss_mask" (--keys; it has [\'iter\', \'loss\', ' \
                   f'\'lr\', \'step\'])'
    line = _cli_error('plot_train_curves', [log, log, '--out', tmp_path / 'c.png', '--legend', 'a'], capsys)
    assert line == 'error: 1 --legend names for 2 logs: give one per log'
    assert not (tmp_path / 'c.png').exists()

    ann = tmp_path / 'ann.json'
    ann.write_text(json.dumps(dict(images=[dict(id=3), dict(id=4)], annotations=[dict(id=1, image_id=4)],
                                   categories=[])))
    with pytest.raises(UserError, match=r'ann\.json: 1 images with instances, 2 asked for \(--num-images\)'):
        write_subset(str(ann), str(tmp_path / 'sub.json'), num_images=2)
    with pytest.raises(ValueError, match=r'ann\.json: image ids \[7\] \(--img-ids\) are not in "images"'):
        write_subset(str(ann), str(tmp_path / 'sub.json'), img_ids=[4, 7])
    ann.write_text('{"images": [')
    with pytest.raises(UserError, match=r'train_dataloader\.dataset\.ann_file\) .*ann\.json is not valid json'):
        write_subset(str(ann), str(tmp_path / 'sub.json'))
    assert not (tmp_path / 'sub.json').exists()
    with pytest.raises(IndexError) as err:
        select_indices([0] * 5, indices=[1, 5])
    assert isinstance(err.value, UserError) and str(err.value) == '--indices 5 is outside the dataset of 5 images'
