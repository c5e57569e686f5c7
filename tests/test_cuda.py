"""Every device path on CUDA: the custom modules (forward and backward, equal to their CPU results), the sparse
assigner (equal to mmdet's on CUDA and to its own CPU result), an AMP training step of the full model and of R50 at
800 px, the dense-scene step (1,239 objects per patch), whole-scene inference and ``tools/test.py --device cuda``.

The ``cuda`` cases are skipped with the reason where no GPU is usable (tests/conftest.py); each has a ``cpu`` twin
running the same test body at CPU size (small inputs, no AMP: mmengine's ``AmpOptimWrapper`` is GPU-only) in the
ordinary suite, so the bodies are known to work before a GPU ever runs them. Nothing here reads ../shared/data (it
does not travel to a lent GPU machine): data are generated.
"""
import copy
import os
import runpy

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, SMOKE_CONFIG, load_config, shrink_for_cpu
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmdet_custom.register  # noqa: F401  (registers the modules)
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES

FULL_MODEL = 'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'
R50 = 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'
#: each test runs on the CPU (the ordinary suite) and on CUDA (skipped without a GPU)
DEVICES = [pytest.param('cpu', id='cpu'), pytest.param('cuda', id='cuda', marks=pytest.mark.cuda)]

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(autouse=True)
def _no_tf32():
    """Full fp32 in the CUDA convolutions and matmuls (cuDNN allows TF32 by default): the CPU comparisons hold to
    1e-4 rather than TF32's ~1e-3."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ----------------------------------------------------------------------------------------------------------------
# Custom modules: forward and backward on the device equal the CPU's
# ----------------------------------------------------------------------------------------------------------------
def _fpn_inputs(channels, side, batch=2):
    return [(batch, c, (side + 2**k - 1) // 2**k, (side + 2**k - 1) // 2**k) for k, c in enumerate(channels)]


#: name -> (module config, input shapes: one shape, or a list of shapes for a multi-level input)
MODULES = {
    'CBAM': (dict(type='CBAM', in_channels=32, reduction=16), (2, 32, 9, 11)),
    'ECA': (dict(type='ECA', channels=64), (2, 64, 7, 9)),
    'AttentionFPN': (dict(type='AttentionFPN', in_channels=[8, 16, 32, 64], out_channels=16, num_outs=5),
                     _fpn_inputs([8, 16, 32, 64], 32)),
    'TransformerFPN': (dict(type='TransformerFPN', in_channels=[8, 16, 32, 64], out_channels=16, num_outs=5,
                            embed_dims=32, num_heads=8, pool_size=6, dropout=0.0), _fpn_inputs([8, 16, 32, 64], 48)),
    'TimmCBAMBackbone': (dict(type='TimmCBAMBackbone', model_name='efficientnet_b0'), (2, 3, 64, 64)),
    'RegularizedShared2FCBBoxHead': (dict(type='RegularizedShared2FCBBoxHead', in_channels=16, fc_out_channels=64,
                                          roi_feat_size=7, num_classes=15, dropout_p=0.3), (6, 16, 7, 7)),
    'ResidualFCNMaskHead': (dict(type='ResidualFCNMaskHead', num_convs=2, in_channels=16, conv_out_channels=16,
                                 num_classes=15), (5, 16, 14, 14)),
    'ECADCNMaskHead': (dict(type='ECADCNMaskHead', in_channels=16, conv_out_channels=16, num_classes=15),
                       (5, 16, 14, 14)),
}


def _flat(output):
    """Every tensor of a module's output (tensor, tuple, list; None entries dropped)."""
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for item in output if item is not None for t in _flat(item)]


def _forward_backward(module, inputs, weights=None):
    """Outputs, input gradients and parameter gradients of ``sum(w * out)`` (fixed random ``w`` per output)."""
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    outputs = _flat(module(inputs if len(inputs) > 1 else inputs[0]))
    if weights is None:
        generator = torch.Generator().manual_seed(1)
        weights = [torch.randn(o.shape, generator=generator) for o in outputs]
    loss = sum((o * w.to(o.device)).sum() for o, w in zip(outputs, weights))
    loss.backward()
    params = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    return [o.detach().cpu() for o in outputs], [x.grad.cpu() for x in inputs], \
        {n: g.cpu() for n, g in params.items()}, weights


@pytest.mark.parametrize('name', sorted(MODULES))
@pytest.mark.parametrize('device', DEVICES)
def test_custom_module_forward_backward_matches_cpu(name, device):
    """In eval mode (dropout off, BatchNorm on its running statistics) outputs and all gradients equal the CPU
    module's to 1e-4 of their largest value; in train mode (dropout, batch statistics) forward and backward run
    with finite results."""
    init_default_scope('mmdet')
    cfg, shapes = MODULES[name]
    torch.manual_seed(0)
    reference = MODELS.build(copy.deepcopy(cfg)).eval()
    module = copy.deepcopy(reference).to(device)
    shapes = shapes if isinstance(shapes, list) else [shapes]
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(s, generator=generator) for s in shapes]
    out_ref, in_grads_ref, grads_ref, weights = _forward_backward(reference, inputs)
    out, in_grads, grads, _ = _forward_backward(module, [x.to(device) for x in inputs], weights)
    assert len(out) == len(out_ref) and grads.keys() == grads_ref.keys() and len(grads) > 0
    named = [(f'output {i}', a, b) for i, (a, b) in enumerate(zip(out, out_ref))] + \
        [(f'input {i} grad', a, b) for i, (a, b) in enumerate(zip(in_grads, in_grads_ref))] + \
        [(f'{key} grad', grads[key], grads_ref[key]) for key in grads]
    for what, a, b in named:
        # relative to the tensor's largest value: a sum of many products (a weight's gradient) differs by its
        # accumulation order on the GPU, element by element near zero too
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-4 * max(1.0, float(b.abs().max())), what
    module.train()
    module.zero_grad()
    out, in_grads, grads, _ = _forward_backward(module, [x.to(device) for x in inputs], weights)
    assert all(torch.isfinite(t).all() for t in out + in_grads + list(grads.values()))


@pytest.mark.parametrize('device', DEVICES)
def test_per_level_anchor_generator_on_device_equals_cpu(device):
    from mmdet_custom.models.task_modules import PerLevelAnchorGenerator
    generator = PerLevelAnchorGenerator(strides=[4, 8, 16, 32, 64],
                                        sizes=[[8, 16], [16, 32], [32, 64], [64, 128], [128, 256]],
                                        ratios=[0.5, 1.0, 2.0])
    shapes = [(200, 200), (100, 100), (50, 50), (25, 25), (13, 13)]
    on_cpu, on_device = generator.grid_priors(shapes, device='cpu'), generator.grid_priors(shapes, device=device)
    assert [a.device.type for a in on_device] == [torch.device(device).type] * 5
    for a, b in zip(on_device, on_cpu):
        assert torch.equal(a.cpu(), b)
    flags, flags_cpu = (generator.valid_flags(shapes, (790, 770), device=d) for d in (device, 'cpu'))
    assert [f.cpu().tolist() for f in flags] == [f.tolist() for f in flags_cpu]
    indices = torch.tensor([0, 7, 1234, 200 * 200 * 6 - 1], device=device)
    sparse = generator.sparse_priors(indices, shapes[0], 0, device=device)
    assert torch.equal(sparse.cpu(), on_cpu[0][indices.cpu()])


# the CPU twin runs one setting: tests/test_sparse_assigner.py holds every setting against mmdet on the CPU
@pytest.mark.parametrize('device,name', [('cpu', 'rpn')] + [
    pytest.param('cuda', name, marks=pytest.mark.cuda) for name in ('rpn', 'rcnn', 'min_pos_iou_0', 'ignore')])
def test_sparse_assigner_on_device_equals_mmdet_and_its_cpu_result(device, name):
    """600 dense objects, the full model's 6 anchors per location at 320 px, small ``max_pairs`` (many groups and
    chunks): on the device, gt_inds, max_overlaps and labels equal mmdet's MaxIoUAssigner's there and this
    assigner's on the CPU, bit for bit."""
    from mmdet.models.task_modules.assigners import MaxIoUAssigner
    from test_sparse_assigner import SETTINGS, dense_boxes, full_model_anchors

    from mmdet_custom.models.task_modules import SparseMaxIoUAssigner
    priors = full_model_anchors(320)
    boxes, labels = dense_boxes(600, 320)
    ignore = torch.tensor([[30., 30., 90., 80.], [200., 10., 260., 40.]]) if name == 'ignore' else None
    settings = SETTINGS[name]

    def assign(assigner, dev):
        ign = None if ignore is None else InstanceData(bboxes=ignore.to(dev))
        return assigner.assign(InstanceData(priors=priors.to(dev)),
                               InstanceData(bboxes=boxes.to(dev), labels=labels.to(dev)), ign)

    sparse = SparseMaxIoUAssigner(**settings, max_pairs=20_000, group_size=32)
    ours, on_cpu = assign(sparse, device), assign(sparse, 'cpu')
    ref = assign(MaxIoUAssigner(**settings), device)
    assert ours.gt_inds.device.type == torch.device(device).type
    for field in ('gt_inds', 'max_overlaps', 'labels'):
        a, b, c = getattr(ours, field), getattr(ref, field), getattr(on_cpu, field)
        assert a.dtype == b.dtype == c.dtype and a.shape == b.shape == c.shape, field
        assert torch.equal(a, b), (field, 'vs mmdet', int((a != b).sum()))
        assert torch.equal(a.cpu(), c), (field, 'vs cpu', int((a.cpu() != c).sum()))
    assert (ours.gt_inds > 0).sum() > 500


# ----------------------------------------------------------------------------------------------------------------
# Training steps
# ----------------------------------------------------------------------------------------------------------------
def _step_config(config, device):
    """``config`` with random weights; on the CPU cut to seconds (tests/helpers.py: ResNet-18, 100 proposals, 16
    sampled RoIs), on CUDA as shipped."""
    cfg = load_config(config)
    if device == 'cpu':
        shrink_for_cpu(cfg, iters=None, rois=16)
    return cfg


# the CPU twin runs the full model only (the R50 config cut to CPU size is tests/test_configs.py's ResNet-18 step)
@pytest.mark.parametrize('device,config', [pytest.param('cpu', FULL_MODEL, id='cpu-full_model')] + [
    pytest.param('cuda', config, id=f'cuda-{name}', marks=pytest.mark.cuda)
    for name, config in (('full_model', FULL_MODEL), ('r50', R50))])
def test_training_step(device, config):
    """One ``train_step`` (forward, backward, optimizer) of the config's model with random weights on mmdet's demo
    batch: on CUDA at 800 px, batch 2, with mmengine's AmpOptimWrapper (the backbone's convolutions run in fp16,
    dynamic loss scaling); on the CPU at 128 px, batch 1, fp32. Losses finite; the parameters change, unless the
    loss scaler skipped the step for an overflow (then the scale drops)."""
    from mmdet.testing import demo_mm_inputs
    from mmengine.optim import build_optim_wrapper

    from mmdet_custom.models.builder import build_model
    cuda = device.startswith('cuda')
    size, batch = (800, 2) if cuda else (128, 1)
    cfg = _step_config(config, device)
    torch.manual_seed(0)
    model = build_model(cfg, device=device).train()
    wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
    if cuda:
        wrapper_cfg.update(type='AmpOptimWrapper', loss_scale='dynamic')
    optim_wrapper = build_optim_wrapper(model, wrapper_cfg)
    dtypes = []
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first_conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    data = demo_mm_inputs(batch_size=batch, image_shapes=(3, size, size), num_items=[20] * batch, num_classes=15,
                          with_mask=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    scale = optim_wrapper.loss_scaler.get_scale() if cuda else None
    log_vars = model.train_step(data, optim_wrapper)
    hook.remove()
    assert {'loss', 'loss_rpn_cls', 'loss_cls', 'loss_mask'} <= set(log_vars)
    assert all(np.isfinite(float(v.detach())) for v in log_vars.values()), log_vars
    assert dtypes == [torch.float16 if cuda else torch.float32]
    assert next(model.parameters()).device.type == torch.device(device).type
    changed = any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    if cuda and not changed:  # an fp16 overflow on the first step: skipped, scale lowered
        assert optim_wrapper.loss_scaler.get_scale() < scale
    else:
        assert changed


@pytest.mark.parametrize('device', DEVICES)
def test_dense_scene_training_step(device, tmp_path):
    """iSAID's densest reported patch: on CUDA one training step of the full model with 1,239 objects per 800 px
    patch (batch 2) through the config's own dataset and pipeline (``measure_dense_step``); on the CPU the same with
    the smoke model, 60 objects per 128 px patch."""
    from mmdet_custom.analysis.dense_bench import measure_dense_step, write_dense_dataset
    cuda = device.startswith('cuda')
    if cuda:
        config, objects, size = FULL_MODEL, 1239, 800
    else:
        cfg = shrink_for_cpu(load_config(SMOKE_CONFIG), iters=None, rois=16, image_size=(128, 128))
        config, objects, size = str(tmp_path / 'smoke_128.py'), 60, 128
        cfg.dump(config)
    data = write_dense_dataset(str(tmp_path / 'dense'), objects, img_size=size, num_images=2)
    result = measure_dense_step(config, data['ann_file'], data['img_dir'], device=device)
    assert result['instances'] >= 2 * objects * 0.95
    assert all(np.isfinite(v) for v in result['losses'].values()), result['losses']
    assert result['mem_kind'] == ('cuda max_memory_allocated' if cuda else 'peak RSS') and result['peak_gib'] > 0


# ----------------------------------------------------------------------------------------------------------------
# Inference paths
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def random_smoke_checkpoint(tmp_path_factory):
    """The smoke config (ResNet-18 Mask R-CNN, 256 px) with random weights, as (config path, checkpoint path)."""
    from mmdet_custom.models.builder import build_model
    torch.manual_seed(0)
    model = build_model(str(SMOKE_CONFIG), device='cpu')
    path = tmp_path_factory.mktemp('smoke_random') / 'random.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=ISAID_CLASSES))), path)
    return str(SMOKE_CONFIG), str(path)


@pytest.mark.parametrize('device', DEVICES)
def test_scene_inferencer(device, tmp_path, random_smoke_checkpoint):
    """A 1000 x 900 scene (4 windows of 800 px) through :class:`SceneInferencer` on the device: the model is there,
    detections come back in scene pixels, merged."""
    import cv2

    from mmdet_custom.apis.scene import SceneInferencer
    config, checkpoint = random_smoke_checkpoint
    image = np.random.default_rng(0).integers(0, 255, (900, 1000, 3), dtype=np.uint8)
    cv2.rectangle(image, (100, 100), (160, 130), (255, 255, 255), -1)
    path = str(tmp_path / 'scene.png')
    cv2.imwrite(path, image)
    inferencer = SceneInferencer.from_config(
        config, checkpoint, device=device, num_workers=0, progress=False, score_thr=0.0, batch_size=2,
        cfg_options={'model.test_cfg.rcnn.max_per_img': 20, 'model.test_cfg.rcnn.score_thr': 0.0})
    assert next(inferencer.model.parameters()).device.type == torch.device(device).type
    result = inferencer(path)
    result.reader.close()
    dets = result.detections
    assert result.num_windows == 4 and 0 < len(dets) <= result.merge.before <= 80
    assert (dets.bboxes[:, :2] >= 0).all() and (dets.bboxes[:, 2] <= 1000).all() and (dets.bboxes[:, 3] <= 900).all()


@pytest.mark.parametrize('device', DEVICES)
def test_tools_test_runs_on_the_device(device, tmp_path, random_smoke_checkpoint, monkeypatch, capsys):
    """``tools/test.py --device`` sets where mmengine's runner puts the model: on the CPU twin, mmengine is made to
    believe a GPU is there (``get_device() == 'cuda'``) and ``--device cpu`` must still keep the model on the CPU."""
    import mmengine.device.utils as mmengine_device
    from mmengine.runner import Runner

    from mmdet_custom.analysis.dense_bench import write_dense_dataset
    config, checkpoint = random_smoke_checkpoint
    if device == 'cpu':
        monkeypatch.setattr(mmengine_device, 'DEVICE', 'cuda')
    mmengine_device_before = mmengine_device.get_device()
    data = write_dense_dataset(str(tmp_path / 'data'), 15, img_size=128, num_images=1)
    cfg = shrink_for_cpu(load_config(config), iters=None, image_size=(128, 128))
    cfg.test_dataloader.dataset.update(data_root='', ann_file=data['ann_file'],
                                       data_prefix=dict(img=data['img_dir'] + '/'))
    cfg.test_evaluator.ann_file = data['ann_file']
    cfg.dump(str(tmp_path / 'test_cfg.py'))
    seen = []
    original = Runner.test

    def test_and_record(self):
        seen.append(next(self.model.parameters()).device.type)
        return original(self)

    monkeypatch.setattr(Runner, 'test', test_and_record)
    tool = runpy.run_path(str(REPO_ROOT / 'tools' / 'test.py'))
    metrics = tool['main']([str(tmp_path / 'test_cfg.py'), checkpoint, '--work-dir', str(tmp_path / 'work'),
                            '--device', device, '--max-per-img', '20'])
    assert seen == [torch.device(device).type]
    assert 'coco/segm_mAP' in metrics and os.path.isfile(metrics.metrics_file)
    assert mmengine_device.get_device() == mmengine_device_before  # restored after the run
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith('written: metrics ')
