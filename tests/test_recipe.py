"""Training recipe fragments (configs/_base_/recipes/), the NaN-skip hook and the augmentation pipeline."""
import copy
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys
import uuid

import cv2
import numpy as np
import pytest
import torch
from helpers import load_config
from mmdet.registry import HOOKS, METRICS, PARAM_SCHEDULERS, TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch import nn

import mmdet_custom  # noqa: F401  (registers NanSkipHook, DiceIoUMetric)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RECIPES = osp.join(REPO, 'configs', '_base_', 'recipes')
VARIANT_COSINE = osp.join(REPO, 'configs', 'recipes', 'mask-rcnn_r50_fpn_cosine-1x_isaid.py')
VARIANT_AUG = osp.join(REPO, 'configs', 'recipes', 'mask-rcnn_r50_fpn_hv-color-cutout-plateau-1x_isaid.py')


def fragment(name: str) -> Config:
    return load_config(osp.join(RECIPES, name), resolved=False)


# --------------------------------------------------------------------------------------------------------------
# a tiny model trained by mmengine's Runner; the loss of iteration i is multiplied by scales[i] (1, nan or inf)
class ScaledLossModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, scale=None, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=(out ** 2).mean() * scale.mean())
        return out


class Recorder(Hook):
    """After each iteration: parameters, Adam's step count and the message-hub skip count."""
    priority = 'LOWEST'

    def __init__(self):
        self.weights, self.adam_steps, self.hub_skips = [], [], []

    def before_train(self, runner):
        self.weights.append(torch.cat([p.detach().clone().flatten() for p in runner.model.parameters()]))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.weights.append(torch.cat([p.detach().clone().flatten() for p in runner.model.parameters()]))
        state = runner.optim_wrapper.optimizer.state.get(runner.model.linear.weight, {})
        self.adam_steps.append(int(state['step']) if 'step' in state else 0)
        self.hub_skips.append(runner.message_hub.get_scalar('train/nan_skips').current())


def make_runner(work_dir, scales, hooks=(), optim_wrapper=None, log_interval=10, checkpoint=None, **kwargs):
    dataset = [dict(inputs=torch.tensor([1.0, 2.0]), scale=torch.tensor(s)) for s in scales]
    return Runner(
        model=ScaledLossModel(),
        work_dir=str(work_dir),
        experiment_name=f'recipe_{uuid.uuid4().hex[:8]}',  # Runner/visualizer/logger names must not collide
        train_dataloader=dict(dataset=dataset, batch_size=1, num_workers=0, collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=len(scales)),
        optim_wrapper=optim_wrapper or dict(optimizer=dict(type='Adam', lr=0.1)),
        custom_hooks=list(hooks),
        default_hooks=dict(checkpoint=checkpoint, logger=dict(type='LoggerHook', interval=log_interval)),
        log_processor=dict(by_epoch=False),
        default_scope='mmdet',
        **kwargs)


def test_nan_skip_hook_skips_updates_and_counts(tmp_path):
    nan, inf = float('nan'), float('inf')
    recorder = Recorder()
    hook = HOOKS.build(dict(type='NanSkipHook', max_consecutive_skips=3))
    runner = make_runner(tmp_path, [1.0, nan, 1.0, inf, nan, 1.0], hooks=[hook, recorder], log_interval=1)
    runner.train()  # two skips in a row < 3: no error

    w = recorder.weights  # w[i] = after iteration i (w[0]: initial)
    assert all(torch.isfinite(x).all() for x in w)
    finite_iters, skipped_iters = (1, 3, 6), (2, 4, 5)
    for i in finite_iters:
        assert not torch.equal(w[i], w[i - 1]), f'iteration {i} has a finite loss and must update'
    for i in skipped_iters:
        assert torch.equal(w[i], w[i - 1]), f'iteration {i} has a non-finite loss and must not update'
    assert recorder.adam_steps == [1, 1, 2, 2, 2, 3]
    assert recorder.hub_skips == [0, 1, 1, 2, 3, 3]
    assert hook.total_skips == 3 and hook.consecutive_skips == 0
    assert 'update_params' not in vars(runner.optim_wrapper)  # the wrap is removed after training
    log = open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()
    assert 'loss is nan at iteration 2; parameter update skipped (1 in a row, 1 in total)' in log
    assert 'loss is inf at iteration 4' in log and '(2 in a row, 3 in total)' in log
    assert 'nan_skips: 3' in log  # the running total in the log line


def test_nan_skip_count_survives_resume(tmp_path):
    nan = float('nan')
    runner = make_runner(tmp_path, [1.0, nan, 1.0], hooks=[dict(type='NanSkipHook')],
                         checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False))
    runner.train()
    ckpt = osp.join(str(tmp_path), 'iter_3.pth')
    assert osp.isfile(ckpt)
    hook = HOOKS.build(dict(type='NanSkipHook'))
    resumed = make_runner(tmp_path, [1.0, nan, 1.0, nan], hooks=[hook], resume=True, load_from=ckpt)
    resumed.train()  # iteration 4 only
    assert hook.total_skips == 2
    assert resumed.message_hub.get_scalar('train/nan_skips').current() == 2


def test_nan_skip_hook_stops_after_consecutive_skips(tmp_path):
    nan = float('nan')
    hook = dict(type='NanSkipHook', max_consecutive_skips=3)
    runner = make_runner(tmp_path, [1.0, nan, nan, nan, 1.0], hooks=[hook])
    with pytest.raises(RuntimeError, match=r'NaN or Inf at 3 consecutive iterations \(2 to 4, 1-based'):
        runner.train()
    with pytest.raises(ValueError, match='max_consecutive_skips'):
        HOOKS.build(dict(type='NanSkipHook', max_consecutive_skips=0))


def test_nan_skip_hook_drops_accumulation_window(tmp_path):
    # accumulative_counts=2: iterations (1, 2) and (3, 4) form windows; the NaN at 2 drops window 1 entirely
    recorder = Recorder()
    optim_wrapper = dict(optimizer=dict(type='Adam', lr=0.1), accumulative_counts=2)
    runner = make_runner(tmp_path, [1.0, float('nan'), 1.0, 1.0], hooks=[dict(type='NanSkipHook'), recorder],
                         optim_wrapper=optim_wrapper)
    runner.train()
    assert recorder.adam_steps == [0, 0, 0, 1]
    assert torch.equal(recorder.weights[2], recorder.weights[0]) and not torch.equal(recorder.weights[4],
                                                                                     recorder.weights[0])
    assert all(p.grad is None or not p.grad.any() for p in runner.model.parameters())


def test_nan_skip_hook_with_amp_optim_wrapper(tmp_path, monkeypatch):
    """AmpOptimWrapper overrides backward/step (GradScaler); the loss check sits in front of them."""
    if not torch.cuda.is_available():
        # mmengine refuses AMP without an accelerator; the GradScaler then disables itself and passes through
        import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module
        monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    recorder = Recorder()
    optim_wrapper = dict(type='AmpOptimWrapper', optimizer=dict(type='Adam', lr=0.1), loss_scale='dynamic')
    runner = make_runner(tmp_path, [1.0, float('nan'), 1.0], hooks=[dict(type='NanSkipHook'), recorder],
                         optim_wrapper=optim_wrapper)
    runner.train()
    assert type(runner.optim_wrapper).__name__ == 'AmpOptimWrapper'
    assert recorder.adam_steps == [1, 1, 2] and recorder.hub_skips == [0, 1, 1]
    assert torch.equal(recorder.weights[2], recorder.weights[1])


# --------------------------------------------------------------------------------------------------------------
def test_variant_configs_merge_fragments():
    init_default_scope('mmdet')
    cfg = load_config(VARIANT_COSINE, resolved=False)
    assert cfg.param_scheduler == fragment('warmup_cosine.py')._warmup_cosine_param_scheduler
    assert [h.type for h in cfg.custom_hooks] == ['NanSkipHook', 'EarlyStoppingHook']
    assert [b.type for b in cfg.visualizer.vis_backends] == ['LocalVisBackend', 'TensorboardVisBackend']
    assert cfg.visualizer.type == 'DetLocalVisualizer'  # merged into the parent's visualizer, not replacing it
    assert [m.type for m in cfg.val_evaluator] == ['MaxDetsCocoMetric', 'DiceIoUMetric']
    root = load_config(osp.join(REPO, 'configs', 'mask_rcnn', 'mask-rcnn_r50_fpn_1x_isaid.py'), resolved=False)
    assert cfg.val_evaluator[0] == root.val_evaluator  # the parent's COCO metric, unchanged
    assert cfg.test_evaluator == cfg.val_evaluator
    assert cfg.model.roi_head.mask_head.num_classes == 15  # the rest comes from the root config
    hooks = [HOOKS.build(h) for h in cfg.custom_hooks]
    assert hooks[0].max_consecutive_skips == 10
    assert (hooks[1].monitor, hooks[1].rule, hooks[1].patience) == ('coco/segm_mAP', 'greater', 5)
    METRICS.build(cfg.val_evaluator[1])

    cfg = load_config(VARIANT_AUG, resolved=False)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == ['LoadImageFromFile', 'LoadCompactAnnotations', 'Resize', 'RandomFlip', 'Albu',
                                          'RandomApply', 'PackDetInputs']
    assert [t.type for t in cfg.train_pipeline] == [t.type for t in pipeline]
    root = load_config(osp.join(REPO, 'configs', 'mask_rcnn', 'mask-rcnn_r50_fpn_1x_isaid.py'), resolved=False)
    assert cfg.val_dataloader.dataset.pipeline == root.val_dataloader.dataset.pipeline
    for t in pipeline:
        TRANSFORMS.build(t)
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'ReduceOnPlateauLR']


def test_schedule_fragments_build_and_behave():
    init_default_scope('mmdet')

    def optimizer():
        return torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.02)

    warmup, cosine = fragment('warmup_cosine.py')._warmup_cosine_param_scheduler
    opt = optimizer()
    PARAM_SCHEDULERS.build(dict(warmup, optimizer=opt))
    assert opt.param_groups[0]['lr'] == pytest.approx(0.02 * 0.001)
    # the cosine part, converted to iterations as the Runner does (10 iterations per epoch): ends at 1% of the lr
    opt = optimizer()
    args = {k: v for k, v in cosine.items() if k not in ('type', 'convert_to_iter_based')}
    sched = PARAM_SCHEDULERS.get(cosine.type).build_iter_from_epoch(opt, epoch_length=10, **args)
    lrs = [opt.param_groups[0]['lr']]
    for _ in range(119):
        sched.step()
        lrs.append(opt.param_groups[0]['lr'])
    eta_min = 0.02 * 0.01
    assert lrs[60] == pytest.approx(eta_min + (0.02 - eta_min) / 2)  # half way through the 12 epochs
    # last iteration (t = 119 of T_max = 120): eta_min + (lr - eta_min) * (1 + cos(pi * 119 / 120)) / 2
    assert lrs[119] == pytest.approx(eta_min + (0.02 - eta_min) * (1 + math.cos(math.pi * 119 / 120)) / 2)

    warmup, plateau = fragment('plateau_segm-ap50.py')._plateau_segm_ap50_param_scheduler
    opt = optimizer()
    sched = PARAM_SCHEDULERS.build(dict(plateau, optimizer=opt))
    lrs = []
    for ap50 in (0.30, 0.31, 0.31, 0.30, 0.31, 0.40):  # best 0.31 at validation 2; 3 without improvement after it
        sched.step(metrics={'coco/segm_mAP_50': ap50})
        lrs.append(opt.param_groups[0]['lr'])
    assert lrs == pytest.approx([0.02] * 6)  # 3 validations without improvement are tolerated (patience=3)
    for expected in (0.02, 0.02, 0.02, 0.01):  # the 4th in a row without improvement over 0.40 halves the lr
        sched.step(metrics={'coco/segm_mAP_50': 0.1})
        assert opt.param_groups[0]['lr'] == pytest.approx(expected)
    for _ in range(200):
        sched.step(metrics={'coco/segm_mAP_50': 0.1})
    assert opt.param_groups[0]['lr'] == pytest.approx(1e-6)  # min_value


# --------------------------------------------------------------------------------------------------------------
def _read_isaid_sample(raw_dir, name='P0003', split='val', window=(300, 700, 200, 760)):
    """A crop (y0, y1, x0, x1) of a real iSAID image, as LoadImageFromFile + LoadAnnotations would give it."""
    y0, y1, x0, x1 = window
    img = cv2.imread(str(raw_dir / split / 'images' / f'{name}.png'))[y0:y1, x0:x1]
    ids_rgb = cv2.imread(str(raw_dir / split / 'images' / f'{name}_instance_id_RGB.png'))[y0:y1, x0:x1, ::-1]
    ids = ids_rgb[..., 0].astype(np.int64) * 65536 + ids_rgb[..., 1].astype(np.int64) * 256 + ids_rgb[..., 2]
    masks = np.stack([ids == i for i in np.unique(ids) if i != 0]).astype(np.uint8)
    h, w = ids.shape
    return dict(img=img, img_shape=(h, w), ori_shape=(h, w), gt_bboxes=HorizontalBoxes(tight_boxes(masks)),
                gt_bboxes_labels=np.zeros(len(masks), np.int64), gt_ignore_flags=np.zeros(len(masks), bool),
                gt_masks=BitmapMasks(masks, h, w))


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) masks -> (N, 4) x1, y1, x2, y2 boxes in pixel-edge coordinates (x2 = last column + 1)."""
    boxes = []
    for m in masks.astype(bool):
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return np.array(boxes, np.float32)


def test_aug_fragment_on_real_isaid_sample(isaid_raw_dir):
    init_default_scope('mmdet')
    from mmcv.transforms import Compose
    sample = _read_isaid_sample(isaid_raw_dir)
    h, w = sample['img_shape']
    boxes = sample['gt_bboxes'].numpy().copy()
    n = len(boxes)
    assert (h, w) == (400, 560) and n == 27
    x1, y1, x2, y2 = boxes.T
    expected = {  # flips of x1, y1, x2, y2 in pixel-edge coordinates
        None: boxes,
        'horizontal': np.stack([w - x2, y1, w - x1, y2], 1),
        'vertical': np.stack([x1, h - y2, x2, h - y1], 1),
        'diagonal': np.stack([w - x2, h - y2, w - x1, h - y1], 1),
    }
    augs = fragment('aug_flip-hv_color_cutout.py')._aug_flip_hv_color_cutout
    pipeline, no_cutout = Compose(augs), Compose(augs[:2])
    seen, changed, cut = set(), [], []
    for seed in range(8):
        np.random.seed(seed)  # RandomFlip, RandomApply, CutOut
        pipeline.transforms[1].aug.set_random_seed(seed)  # Albumentations has its own generator
        out = pipeline(copy.deepcopy(sample))  # RandomFlip flips boxes in place
        direction = out['flip_direction'] if out['flip'] else None
        seen.add(direction)
        assert out['img'].shape == (h, w, 3) and out['img'].dtype == np.uint8
        assert len(out['gt_bboxes']) == len(out['gt_masks']) == len(out['gt_bboxes_labels']) == n
        assert out['gt_masks'].masks.shape == (n, h, w)
        np.testing.assert_allclose(out['gt_bboxes'].numpy(), expected[direction])
        np.testing.assert_allclose(out['gt_bboxes'].numpy(), tight_boxes(out['gt_masks'].masks))  # still agree
        flipped = {None: sample['img'], 'horizontal': sample['img'][:, ::-1], 'vertical': sample['img'][::-1],
                   'diagonal': sample['img'][::-1, ::-1]}[direction]
        changed.append((out['img'] != flipped).mean())
        # the same seeds without the CutOut step: the images differ exactly in the hole
        np.random.seed(seed)
        no_cutout.transforms[1].aug.set_random_seed(seed)
        ys, xs = np.nonzero((no_cutout(copy.deepcopy(sample))['img'] != out['img']).any(-1))
        if len(ys):
            assert np.ptp(ys) < 50 and np.ptp(xs) < 50 and not out['img'][ys.min():ys.max() + 1,
                                                                   xs.min():xs.max() + 1].any()
        cut.append(len(ys) > 0)
    assert 'vertical' in seen and len(seen) >= 3
    assert min(changed) > 0.3  # brightness/contrast jitter touched every image
    assert 0 < sum(cut) < len(cut)  # CutOut (p=0.5) blanked a square of at most 50x50 px in some images only
    # by hand: the 2nd instance by id, a vehicle at x 331..430, y 280..304 in the 560x400 crop, flipped
    # vertically lies at y 400 - 304 = 96 .. 400 - 280 = 120
    assert boxes[1].tolist() == [331, 280, 430, 304]
    vflip = TRANSFORMS.build(dict(type='RandomFlip', prob=1.0, direction='vertical'))
    out = vflip(copy.deepcopy(sample))
    assert out['gt_bboxes'].numpy()[1].tolist() == [331, 96, 430, 120]
    assert out['gt_masks'].masks[1, 96:120, 331:430].any(0).all() and not out['gt_masks'].masks[1, 280:304].any()


def test_aug_fragment_cutout_is_one_50px_square():
    init_default_scope('mmdet')
    random_apply = TRANSFORMS.build(fragment('aug_flip-hv_color_cutout.py')._aug_flip_hv_color_cutout[2])
    assert random_apply.prob == 0.5
    np.random.seed(3)
    img = np.full((300, 300, 3), 255, np.uint8)
    out = random_apply.transforms(dict(img=img.copy(), img_shape=(300, 300)))  # the CutOut itself
    ys, xs = np.nonzero((out['img'] == 0).all(-1))
    assert len(ys) > 0
    hole = (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    assert len(ys) == hole[0] * hole[1] and max(hole) <= 50  # one rectangle, clipped at the border at most
    applied = 0
    for seed in range(40):
        np.random.seed(seed)
        applied += int((random_apply(dict(img=img.copy(), img_shape=(300, 300)))['img'] == 0).any())
    assert 10 <= applied <= 30


# --------------------------------------------------------------------------------------------------------------
def test_tensorboard_fragment_writes_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    backends = fragment('tensorboard.py')._tensorboard_vis_backends
    runner = make_runner(tmp_path, [1.0, float('nan')], hooks=[dict(type='NanSkipHook')], log_interval=1,
                         visualizer=dict(type='Visualizer', vis_backends=backends))
    runner.train()
    events = glob.glob(osp.join(runner.log_dir, 'vis_data', 'events.out.tfevents.*'))
    assert len(events) == 1
    acc = EventAccumulator(events[0])
    acc.Reload()
    assert [e.step for e in acc.Scalars('loss')] == [1, 2]
    assert math.isnan(acc.Scalars('loss')[1].value)
    assert [e.value for e in acc.Scalars('nan_skips')] == [0.0, 1.0]
    assert osp.isfile(osp.join(runner.log_dir, 'vis_data', 'scalars.json'))  # LocalVisBackend kept


def test_wandb_fragment_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip('wandb', reason='wandb is optional; install requirements/tests.txt to test it')
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_DIR', str(tmp_path))
    monkeypatch.setenv('WANDB_SILENT', 'true')
    backends = fragment('wandb.py')._wandb_vis_backends
    runner = make_runner(tmp_path / 'work', [1.0, 1.0], log_interval=1,
                         visualizer=dict(type='Visualizer', vis_backends=backends))
    runner.train()  # closes the run (wandb.finish)
    wandb.teardown()  # wandb-core writes the run file asynchronously: wait until it has flushed and exited
    # mmengine passes the visualizer's save_dir as wandb's `dir`: the run lies beside the json logs
    runs = glob.glob(osp.join(runner.log_dir, 'vis_data', 'wandb', 'offline-run-*'))
    assert len(runs) == 1
    records = glob.glob(osp.join(runs[0], 'run-*.wandb'))
    assert len(records) == 1
    # the run's record file holds the logged history with its values json-encoded: find both logged losses
    logged = [json.loads(line) for line in open(osp.join(runner.log_dir, 'vis_data', 'scalars.json'))]
    record = open(records[0], 'rb').read()
    assert len(logged) == 2 and b'loss' in record
    assert all(json.dumps(entry['loss']).encode() in record for entry in logged)


@pytest.mark.slow  # a fresh interpreter importing torch + mmdet + mmdet_custom without wandb: 10-17 s
def test_package_and_configs_work_without_wandb():
    code = ("import sys; sys.modules['wandb'] = None\n"
            "import mmdet_custom\n"
            "from mmengine.config import Config\n"
            "from mmengine.registry import VISBACKENDS\n"
            f"Config.fromfile({VARIANT_COSINE!r}); Config.fromfile({VARIANT_AUG!r})\n"
            f"b = Config.fromfile({osp.join(RECIPES, 'wandb.py')!r})._wandb_vis_backends[1]\n"
            "VISBACKENDS.build(dict(b, save_dir='unused'))  # wandb is imported only when a run starts\n"
            "print('ok')\n")
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('ok'), proc.stderr[-2000:]
