"""Per-component parameter counts, sizes, FLOPs and the CSV of ``tools/analysis_tools/model_stats.py``."""
import importlib.util
from pathlib import Path

import pytest
from helpers import REPO_ROOT

ROOT = str(REPO_ROOT / 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py')
ANCHORS_STEP = str(REPO_ROOT / 'configs/mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py')
R50_CBAM = str(REPO_ROOT / 'configs/cbam/mask-rcnn_r50-cbam_fpn_anchors_1x_isaid.py')
R50_BOTH = str(REPO_ROOT / 'configs/cbam/mask-rcnn_r50-cbam_attn-fpn_anchors_1x_isaid.py')
FULL = str(REPO_ROOT / 'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py')


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def cbam_params(channels: int, reduction: int = 16, kernel: int = 7) -> int:
    """One CBAM by hand: shared MLP C -> C/r -> C (1x1 convs with bias) + one k x k conv 2 -> 1 (with bias)."""
    mid = max(channels // reduction, 1)
    return (channels * mid + mid) + (mid * channels + channels) + (2 * kernel * kernel + 1)


@pytest.fixture(scope='module')
def ms():
    from mmdet_custom.analysis import model_stats
    return model_stats


@pytest.fixture(scope='module')
def models(ms):
    built = {}

    def get(config):
        if config not in built:
            built[config] = ms.build_detector(config)
        return built[config]

    return get


def test_cbam_hand_count():
    assert cbam_params(256) == 2 * 256 * 16 + 16 + 256 + 2 * 7 * 7 + 1 == 8563


@pytest.mark.parametrize('config', [ROOT, R50_CBAM, R50_BOTH, FULL], ids=lambda c: Path(c).name)
def test_components_sum_to_total(ms, models, config):
    model = models(config)
    counts = ms.count_parameters(model)
    assert set(counts) == set(ms.COMPONENTS)
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert counts['other'] == 0
    for name in ('backbone', 'neck', 'rpn_head', 'bbox_head', 'bbox_predictor', 'mask_head'):
        assert counts[name] > 0, name


def test_root_counts_by_hand(ms, models):
    """Stock Mask R-CNN R50-FPN, 15 classes: heads counted by hand, no CBAM."""
    counts = ms.count_parameters(models(ROOT))
    assert counts['cbam'] == 0
    # RPN: 3x3 conv 256->256, cls 256->3 anchors (sigmoid), reg 256->3*4
    assert counts['rpn_head'] == (256 * 256 * 9 + 256) + (256 * 3 + 3) + (256 * 12 + 12)
    # two shared FCs 256*7*7 -> 1024 -> 1024
    assert counts['bbox_head'] == (256 * 49 * 1024 + 1024) + (1024 * 1024 + 1024)
    # fc_cls 1024 -> 15 + 1 (background), fc_reg 1024 -> 15 * 4
    assert counts['bbox_predictor'] == (1024 * 16 + 16) + (1024 * 60 + 60)
    # 4 convs 3x3 256->256, deconv 2x2 256->256, 1x1 conv_logits 256->15
    assert counts['mask_head'] == 4 * (256 * 256 * 9 + 256) + (256 * 256 * 4 + 256) + (256 * 15 + 15)
    # the FPN: 4 lateral 1x1 convs + 4 output 3x3 convs to 256 channels (P6 is a max-pool)
    lateral = sum(c * 256 + 256 for c in (256, 512, 1024, 2048))
    assert counts['neck'] == lateral + 4 * (256 * 256 * 9 + 256)


def test_cbam_count_in_backbone(ms, models):
    """ResNet-50 with CBAM after conv3 of every bottleneck of the trainable stages C3-C5 (stage 1 is frozen):
    0 + 4 + 6 + 3 modules at 512..2048 channels."""
    model = models(R50_CBAM)
    expected = sum(n * cbam_params(c) for n, c in zip((0, 4, 6, 3), (256, 512, 1024, 2048)))
    counts = ms.count_parameters(model)
    assert counts['cbam'] == expected
    assert ms.cbam_locations(model) == {'backbone': (13, expected)}
    # the backbone row excludes them: it equals the plain ResNet-50 of the anchors step
    plain = ms.count_parameters(models(ANCHORS_STEP))
    assert counts['backbone'] == plain['backbone']
    assert counts['neck'] == plain['neck']


def test_cbam_counted_in_backbone_and_neck(ms, models):
    """R50 + CBAM + AttentionFPN: the neck's CBAM modules join the cbam row, the neck row excludes them."""
    model = models(R50_BOTH)
    modules = dict(model.named_modules())
    names = ms.find_cbam_modules(model)
    neck_names = [n for n in names if n.startswith('neck.')]
    assert len(names) - len(neck_names) == 13 and neck_names
    neck_cbam = sum(cbam_params(modules[n].in_channels) for n in neck_names)
    counts = ms.count_parameters(model)
    assert counts['cbam'] == ms.count_parameters(models(R50_CBAM))['cbam'] + neck_cbam
    assert counts['neck'] == sum(p.numel() for p in model.neck.parameters()) - neck_cbam


def test_flops_by_hand(ms, models):
    """RPN head and box predictor FLOPs (1 multiply-add = 1 FLOP, bias not counted) at a 128 x 128 input."""
    model = models(ROOT)
    per_image, per_roi = ms.count_flops(model, (128, 128))
    positions = sum((128 // s)**2 for s in (4, 8, 16, 32, 64))
    assert per_image['rpn_head'] == positions * 256 * (256 * 9 + 3 + 12)
    assert per_roi['bbox_predictor'] == 1024 * (16 + 60)
    assert per_roi['bbox_head'] == 256 * 49 * 1024 + 1024 * 1024
    assert per_image['cbam'] == 0
    assert per_image['backbone'] > per_image['neck'] > per_image['rpn_head'] > 0
    # FLOPs grow with the input area: 4x the pixels, 4x the (convolutional) work
    per_image_2x, _ = ms.count_flops(model, (256, 256))
    assert per_image_2x['rpn_head'] == 4 * per_image['rpn_head']


def test_table_and_csv_round_trip(ms, models, tmp_path):
    stats = ms.model_stats(FULL, shape=(128, 128), model=models(FULL))
    rows = {r.component: r for r in stats.rows}
    assert list(rows) == ['backbone', 'cbam', 'neck', 'rpn_head', 'bbox_head', 'bbox_predictor', 'mask_head',
                          'total']
    total = rows['total']
    assert total.params == stats.total_params == sum(r.params for r in stats.rows[:-1])
    assert sum(r.params_pct for r in stats.rows[:-1]) == pytest.approx(100.0)
    assert total.size_mb_fp32 == pytest.approx(total.params * 4 / 2**20)
    assert total.size_mb_fp16 == pytest.approx(total.params * 2 / 2**20)
    assert total.size_mb_int8 == pytest.approx(total.params / 2**20)
    assert rows['cbam'].params > 0 and set(stats.cbam_locations) == {'backbone', 'neck'}
    assert rows['mask_head'].gflops_per_image is None and rows['mask_head'].mflops_per_roi > 0
    assert rows['backbone'].mflops_per_roi is None and rows['backbone'].gflops_per_image > 0

    table = ms.format_table(stats)
    assert Path(FULL).name in table and f'{total.params:,}' in table

    path = tmp_path / 'stats.csv'
    ms.write_csv(stats, str(path))
    back = ms.read_csv(str(path))
    assert [r.component for r in back] == [r.component for r in stats.rows]
    for a, b in zip(back, stats.rows):
        assert a.params == b.params
        assert a.size_mb_fp32 == pytest.approx(b.size_mb_fp32)
        assert a.gflops_per_image == (None if b.gflops_per_image is None else pytest.approx(b.gflops_per_image))
        assert a.mflops_per_roi == (None if b.mflops_per_roi is None else pytest.approx(b.mflops_per_roi))
    assert not [p for p in tmp_path.iterdir() if p.name != 'stats.csv']  # no temporary file left behind


def test_disable_pretrained(ms):
    cfg = dict(
        backbone=dict(type='ResNet', init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'),
                      pretrained='torchvision://resnet50'),
        neck=[dict(type='Timm', pretrained=True, checkpoint_path='/x.pth')],
        head=dict(loss=dict(type='CE')))
    out = ms.disable_pretrained(cfg)
    assert out is cfg
    assert cfg['backbone']['init_cfg'] is None and cfg['backbone']['pretrained'] is None
    assert cfg['neck'][0]['pretrained'] is False and cfg['neck'][0]['checkpoint_path'] is None
    assert cfg['head'] == dict(loss=dict(type='CE'))


def test_one_build_path_random_init_or_checkpoint(ms, tmp_path):
    """models.builder.build_model is the one build path: both analysis names are it; weights come from the
    checkpoint (with its dataset_meta) or nowhere; the config given is not modified; typos in cfg_options refused."""
    import torch
    from mmengine.config import Config

    from mmdet_custom.analysis import inference
    from mmdet_custom.models.builder import build_model
    from mmdet_custom.utils.config import ConfigKeyError
    assert ms.build_detector is build_model and inference.build_detector is build_model

    smoke = REPO_ROOT / 'configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py'
    cfg = Config.fromfile(str(smoke))
    before = cfg.to_dict()
    model = build_model(cfg)
    assert cfg.to_dict() == before, 'build_model modified the config it was given'
    assert not model.training and model.dataset_meta == {} and model.cfg.model == cfg.model
    assert next(model.parameters()).device.type == 'cpu'

    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = tmp_path / 'w.pth'
    torch.save(dict(state_dict=state, meta=dict(dataset_meta=dict(classes=('a', 'b')))), ckpt)
    loaded = build_model(str(smoke), checkpoint=str(ckpt))
    assert loaded.dataset_meta == dict(classes=('a', 'b'))
    assert torch.equal(loaded.backbone.conv1.weight, torch.full_like(loaded.backbone.conv1.weight, 0.5))
    assert not torch.equal(model.backbone.conv1.weight, loaded.backbone.conv1.weight)
    with pytest.raises(ConfigKeyError, match='model.bakbone'):
        build_model(str(smoke), cfg_options={'model.bakbone.depth': 50})


def test_cli_writes_csv(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('model_stats_cli',
                                                  REPO_ROOT / 'tools/analysis_tools/model_stats.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / 'sub' / 'root.csv'
    stats = cli.main([ROOT, '--out-csv', str(out), '--no-flops'])
    printed = capsys.readouterr().out
    assert 'bbox_predictor' in printed and f'{stats.total_params:,}' in printed
    from mmdet_custom.analysis.model_stats import read_csv
    rows = read_csv(str(out))
    assert rows[-1].component == 'total' and rows[-1].params == stats.total_params
    assert all(r.gflops_per_image is None for r in rows)
