"""The model benchmark (tools/benchmarks/bench_models.py) and the output-preserving inference speedups."""
import copy
import json
import runpy

import pytest
import torch
from helpers import REPO_ROOT

from mmdet_custom.analysis import bench_report as br
from mmdet_custom.analysis import benchmark as bm
from mmdet_custom.models import speedups

SMOKE = 'configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py'
FULL = 'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'
# a CPU-sized run: few proposals, few sampled RoIs
SMALL = ['model.test_cfg.rpn.nms_pre=200', 'model.test_cfg.rpn.max_per_img=50',
         'model.train_cfg.rpn_proposal.max_per_img=50', 'model.train_cfg.rcnn.sampler.num=32']


def _run(name, ms_100, ms_1000, img_s, peak, params=10e6, gflops=5.0, train=True):
    """One measurement as measure_model returns it."""
    infer = {n: dict(s_per_img=ms / 1000, cpu_s_per_img=ms / 2000, detections=float(n), peak_mib=peak,
                     parts={p: ms / 4000 for p in br.INFER_PARTS}) for n, ms in (('100', ms_100), ('1000', ms_1000))}
    out = dict(name=name, params=params, gflops=gflops, gflops_at={'100': gflops + 1, '1000': gflops + 10},
               infer=infer, train=None, profile={}, mem_kind='peak RSS')
    if train:
        out['train'] = dict(s_per_iter=2 / img_s, img_per_s=img_s, cpu_s_per_iter=1 / img_s, peak_mib=2 * peak,
                            parts={p: 1 / (3 * img_s) for p in br.TRAIN_PARTS})
    return out


def _report(loads=(0.5, 1.0)):
    specs = [bm.ModelSpec('ref', SMOKE), bm.ModelSpec('other', FULL), bm.ModelSpec('tv', bm.TORCHVISION, train=False)]
    runs = {'ref': [_run('ref', 100, 400, 2.0, 1000), _run('ref', 120, 440, 1.0, 1000),
                    _run('ref', 110, 420, 1.5, 1000)],
            'other': [_run('other', 50, 300, 3.0, 800, params=5e6), _run('other', 60, 320, 3.0, 800, params=5e6),
                      {'error': 'RuntimeError: boom'}],
            'tv': [_run('tv', 90, 500, 0, 900, train=False)] * 3}
    machine = dict(cpu='test cpu', cores=2, usable_cores=2, python='3', torch='2', torch_threads=1, device='cpu')
    return dict(machine=machine, specs=[vars(s) for s in specs], runs=runs, loads=list(loads), started='now',
                wall_s=1.0, data='random', settings=dict(img_size=64, repeats=3, steps=1, warmup=1, device='cpu',
                                                         threads=1, dets=[100, 1000], train_batch=2, profile=False))


def test_summary_medians_ratios_spreads():
    rows = {r['name']: r for r in br.summarize(_report())}
    ref, other, tv = rows['ref'], rows['other'], rows['tv']
    assert ref['values']['infer_ms_100'] == pytest.approx(110)  # median of 100, 120, 110
    assert ref['values']['train_img_s'] == pytest.approx(1.5)
    assert ref['spreads']['infer_ms_100'] == pytest.approx((120 - 100) / 110)
    assert other['repeats_ok'] == 2 and other['errors'] == ['RuntimeError: boom']
    assert other['values']['infer_ms_100'] == pytest.approx(55)
    # every ratio is the value over the reference's value of the same column
    for key in ('params_m', 'gflops_100', 'train_img_s', 'infer_ms_100', 'infer_ms_1000', 'infer_peak_mib',
                'train_peak_mib', 'infer_cpu_ms_1000', 'train_cpu_s'):
        assert other['ratios'][key] == pytest.approx(other['values'][key] / ref['values'][key]), key
    assert other['ratios']['params_m'] == pytest.approx(0.5)
    assert ref['ratios']['infer_ms_100'] == pytest.approx(1.0)
    assert tv['values']['train_img_s'] is None and tv['ratios']['train_img_s'] is None
    # the parts add up to the total (post is the remainder)
    assert sum(ref['infer_parts']['100'].values()) == pytest.approx(ref['values']['infer_ms_100'])


def test_table_columns_and_busy_warning():
    report = _report()
    table = br.table_rows(report)
    assert table[0] == ['model', 'params (M)', 'GFLOPs @100 dets', 'train img/s (batch 2)', 'infer ms/img @100 dets',
                        'infer ms/img @1000 dets', 'train peak MiB', 'infer peak MiB', 'dets kept @1000']
    assert table[1][0] == 'ref (reference)' and table[1][4] == '110'
    assert table[2][4] == '55.0 (0.50x)'
    assert table[3][3] == '-'  # torchvision: inference only
    assert br.busy_warning(report) is None
    busy = _report(loads=(1.0, 3.5))
    assert 'BUSY MACHINE' in br.busy_warning(busy) and '3.5' in br.busy_warning(busy)
    text = br.format_table(busy)
    assert 'WARNING: BUSY MACHINE' in text and 'load average 1.0-3.5' in text
    md = br.format_markdown(busy)
    assert '> **BUSY MACHINE' in md and '| ref (reference) |' in md and 'RuntimeError: boom' in md


def test_parse_spec():
    spec = bm.parse_spec('fast=configs/x.py+fast')
    assert (spec.name, spec.config, spec.speedups, spec.train) == ('fast', 'configs/x.py', True, False)
    spec = bm.parse_spec('torchvision')
    assert spec.config == bm.TORCHVISION and not spec.train
    spec = bm.parse_spec('configs/x.py+fast+compile')
    assert (spec.name, spec.config, spec.speedups, spec.compile, spec.train) == ('x +fast +compile', 'configs/x.py',
                                                                                 True, True, False)
    assert bm.parse_spec('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py').name == 'mask-rcnn_r50_fpn_1x_coco'
    with pytest.raises(FileNotFoundError, match='nope.py'):
        bm.resolve_config('configs/nope.py')


def test_bench_models_cli_tiny(tmp_path, capsys):
    """The whole path: two models in their own processes (random images), the table, the markdown read back."""
    tool = runpy.run_path(str(REPO_ROOT / 'tools' / 'benchmarks' / 'bench_models.py'))
    out_md, out_json = tmp_path / 'bench.md', tmp_path / 'bench.json'
    report = tool['main']([SMOKE, f'fast={SMOKE}+fast', '--img-size', '64', '--repeats', '1', '--warmup', '0',
                           '--threads', '1', '--dets', '5', '10', '--data', 'random', '--out-md', str(out_md),
                           '--out-json', str(out_json), '--cfg-options', *SMALL])
    printed = capsys.readouterr().out
    assert 'infer ms/img @10 dets' in printed and 'dets kept @10' in printed
    ref, fast = (report['runs'][name][0] for name in ('mask-rcnn_r18_fpn_300i_isaid-smoke', 'fast'))
    assert 'error' not in ref and 'error' not in fast
    assert ref['train']['img_per_s'] > 0 and fast['train'] is None  # +fast rows are inference only
    assert ref['params'] > 1e6
    for n in ('5', '10'):
        assert 0 < ref['infer'][n]['detections'] <= int(n)
        parts = ref['infer'][n]['parts']
        assert set(parts) == set(br.INFER_PARTS)
        assert sum(parts.values()) == pytest.approx(ref['infer'][n]['s_per_img'], rel=1e-6)
    assert ref['gflops'] > 0 and ref['gflops_at']['10'] > ref['gflops_at']['5'] > ref['gflops']
    # the files: json = the report; markdown holds the table with the ratios computed from the measured numbers
    assert json.loads(out_json.read_text())['runs'].keys() == report['runs'].keys()
    md = out_md.read_text()
    ratio = fast['infer']['10']['s_per_img'] / ref['infer']['10']['s_per_img']
    assert f'({br.fmt_value(ratio, 2)}x)' in md
    assert 'device cpu' in md and 'load average' in md and '## Inference by part, ms/image at 10 detections' in md


# ----------------------------------------------------------------------------------------------------------------
# Output-preserving speedups
# ----------------------------------------------------------------------------------------------------------------
def test_torchvision_roi_align_matches_mmcv():
    """use_torchvision=True gives mmcv's values, forward and backward, tiny and border-crossing RoIs included."""
    from mmcv.ops import RoIAlign
    torch.manual_seed(0)
    feats = torch.randn(2, 8, 25, 30, requires_grad=True)
    boxes = torch.tensor([[0, 3.2, 4.1, 40.7, 33.3], [1, 10.0, 10.0, 11.5, 12.0],  # < 1 px on the feature map
                          [0, -6.0, 80.0, 30.0, 110.0], [1, 0.0, 0.0, 119.0, 99.0]])  # partly outside / whole map
    grads = []
    outs = []
    for tv in (False, True):
        layer = RoIAlign(output_size=7, spatial_scale=0.25, sampling_ratio=0, aligned=True, use_torchvision=tv)
        out = layer(feats, boxes.clone())
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (grad, ) = torch.autograd.grad((out * weights).sum(), feats)
        outs.append(out.detach())
        grads.append(grad)
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert outs[0].abs().sum() > 0 and grads[0].abs().sum() > 0


def _predict(model, batch):
    with torch.no_grad():
        return model.test_step(batch)[0].pred_instances


def _same_detections(a, b):
    assert len(a) == len(b) > 0
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.bboxes, b.bboxes, atol=1e-4, rtol=0)
    assert torch.allclose(a.scores, b.scores, atol=1e-4, rtol=0)
    assert (a.masks != b.masks).float().mean() <= 1e-4


def test_speedups_keep_the_full_models_detections(one_torch_thread):
    """RoIAlign from torchvision (config), BN folding, channels_last backbone and a chunked channels_last mask head:
    the same detections as the unoptimised full model on a fixed input and seed."""
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from torch.nn.modules.batchnorm import _BatchNorm

    from mmdet_custom.analysis.model_stats import build_detector
    cfg = Config.fromfile(str(REPO_ROOT / FULL))
    assert cfg.model.roi_head.mask_roi_extractor.roi_layer.use_torchvision is True
    cfg.model.test_cfg.rpn.update(nms_pre=300, max_per_img=120)
    cfg.model.test_cfg.rcnn.max_per_img = 40
    batch = pseudo_collate(bm._random_samples(128, 1, seed=3))

    def build(use_torchvision):
        c = copy.deepcopy(cfg)
        for extractor in ('bbox_roi_extractor', 'mask_roi_extractor'):
            c.model.roi_head[extractor].roi_layer.use_torchvision = use_torchvision
        torch.manual_seed(0)
        model = build_detector(c)
        bm.init_weights_quietly(model)
        return model.eval()

    reference = _predict(build(False), batch)  # mmcv RoIAlign, nothing optimised
    fast = build(True)
    _same_detections(reference, _predict(fast, batch))
    assert speedups.fuse_conv_bn(copy.deepcopy(fast)) > 40  # the backbone's and the mask head's BNs fold
    speedups.apply_inference_speedups(fast, mask_chunk=16)  # 40 detections -> 3 chunks
    assert not any(isinstance(m, _BatchNorm) for m in fast.modules())
    assert fast.backbone.timm_model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    _same_detections(reference, _predict(fast, batch))
    with pytest.raises(ValueError, match='already'):
        speedups.apply_inference_speedups(fast)
    with pytest.raises(ValueError, match='eval mode'):
        speedups.apply_inference_speedups(build(True).train())


# ----------------------------------------------------------------------------------------------------------------
# Lighter variants (configs/light): they change the full model on purpose, each only in what its name says
# ----------------------------------------------------------------------------------------------------------------
def _build_light(config):
    """The config's model, random weights (nothing downloaded; no init_weights: mmengine's bookkeeping takes
    seconds), a CPU-sized test_cfg."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from mmdet_custom.models.builder import disable_pretrained
    from mmdet_custom.utils.config import read_config
    register_all_modules(init_default_scope=True)
    cfg = read_config(str(REPO_ROOT / config))
    cfg.model.test_cfg.rpn.update(nms_pre=100, max_per_img=50)
    cfg.model.test_cfg.rcnn.max_per_img = 20
    torch.manual_seed(0)
    return MODELS.build(disable_pretrained(cfg.model))


@pytest.fixture(scope='module')
def full_model_params():
    return sum(p.numel() for p in _build_light(FULL).parameters())


@pytest.mark.parametrize('name', list(bm.LIGHT_MODELS))
def test_light_variant_builds_changes_its_part_and_predicts(name, full_model_params, one_torch_thread):
    from mmengine.dataset import pseudo_collate
    config = bm.LIGHT_MODELS[name]
    assert config in [s.config for s in bm.default_specs()]  # make bench measures it
    model = _build_light(config)
    stem = config.split('/')[-1]
    head = model.roi_head.mask_head
    expected_channels = 128 if 'fpn128' in stem else 256
    assert model.neck.out_channels == model.rpn_head.in_channels == head.in_channels == expected_channels
    assert model.roi_head.bbox_head.in_channels == head.conv_out_channels == expected_channels
    assert len(head.convs) == (2 if 'mask2conv' in stem else 4)
    assert model.rpn_head.num_base_priors == (3 if 'anchors3' in stem else 6)
    frozen = [p.requires_grad for p in model.backbone.timm_model.conv_stem.parameters()]
    assert frozen == ([False] if 'frozen1' in stem else [True])
    assert sum(p.numel() for p in model.parameters()) < full_model_params
    pred = _predict(model.eval(), pseudo_collate(bm._random_samples(64, 1, seed=1)))
    assert pred.masks.shape[1:] == (64, 64) and len(pred) <= 20
