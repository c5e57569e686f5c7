"""The cells study's attention family (ECA, ECADCNMaskHead, TransformerFPN, EfficientNetV2 backbones, configs).

Module tests check values against hand-computed results or mmdet's own modules (FPN, BFP); the config tests run
every new config forward + backward on a real shared image (a DSB2018 cell image for the cells configs, an iSAID
crop for the iSAID configs), and the R101 + attention cells config trains 2 iterations on the converted DSB images.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import REPO_ROOT, load_config
from mmdet.models.necks import BFP, FPN
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmdet_custom.register  # noqa: F401  (registers the modules)
from mmdet_custom.models.backbones import TimmCBAMBackbone
from mmdet_custom.models.layers import ECA, eca_kernel_size
from mmdet_custom.models.necks import TransformerFPN
from mmdet_custom.models.roi_heads import ECADCNMaskHead

FAMILY = REPO_ROOT / 'configs' / 'attention'
CELLS_CONFIGS = [
    'mask-rcnn_r101_fpn_1x_cells.py',
    'mask-rcnn_r101_trans-fpn_eca-dcn-mask_1x_cells.py',
    'mask-rcnn_effv2m_fpn_1x_cells.py',
    'mask-rcnn_effv2m_trans-fpn_eca-dcn-mask_1x_cells.py',
]
ISAID_CONFIGS = [
    'mask-rcnn_r101_trans-fpn_eca-dcn-mask_anchors_1x_isaid.py',
    'mask-rcnn_effv2m_fpn_anchors_1x_isaid.py',
    'mask-rcnn_effv2m_trans-fpn_eca-dcn-mask_anchors_1x_isaid.py',
    'mask-rcnn_effv2m-cbam_trans-fpn_eca-dcn-mask_anchors_1x_isaid.py',
]
ISAID_R101 = REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r101_fpn_anchors_1x_isaid.py'
EFFV2_FRAGMENT = REPO_ROOT / 'configs' / '_base_' / 'models' / 'effv2_backbones.py'

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _load(path: Path, resolved: bool = True) -> Config:
    """The config at ``path`` as the tools see it (fragments' private ``_name`` parts dropped; raw with
    ``resolved=False``), parsed once per session (tests/helpers.py); a copy, free to modify."""
    return load_config(path, resolved)


def _build(cfg: dict) -> nn.Module:
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


# ----------------------------------------------------------------------------------------------------------- ECA
def test_eca_kernel_size_follows_the_paper():
    # k = |(log2 C + 1) / 2|_odd (Wang et al., CVPR 2020, Eq. 12, the authors' rounding)
    assert [eca_kernel_size(c) for c in (16, 64, 128, 256, 512, 1024, 2048)] == [3, 3, 5, 5, 5, 5, 7]
    with pytest.raises(ValueError, match='channels'):
        eca_kernel_size(0)
    with pytest.raises(ValueError, match='kernel_size'):
        ECA(8, kernel_size=4)


def test_eca_is_a_1d_conv_over_the_pooled_channels():
    torch.manual_seed(0)
    eca = ECA(6, kernel_size=3)
    nn.init.constant_(eca.conv.weight, 0.0)
    eca.conv.weight.data[0, 0] = torch.tensor([1.0, -2.0, 0.5])
    x = torch.randn(2, 6, 5, 7)
    pooled = x.mean(dim=(2, 3))  # (N, C), zero-padded at both ends of the channel axis
    padded = F.pad(pooled, (1, 1))
    logits = 1.0 * padded[:, :-2] - 2.0 * padded[:, 1:-1] + 0.5 * padded[:, 2:]
    expected = x * torch.sigmoid(logits)[:, :, None, None]
    torch.testing.assert_close(eca(x), expected)
    assert sum(p.numel() for p in eca.parameters()) == 3  # k weights, no bias


# ------------------------------------------------------------------------------------------------- mask head
@pytest.mark.parametrize('size', [14, 7, 9])
def test_eca_dcn_mask_head_shapes(size):
    torch.manual_seed(0)
    head = _build(dict(type='ECADCNMaskHead', in_channels=16, conv_out_channels=8, num_classes=3))
    head.init_weights()
    assert head.eca.kernel_size == 3 and head.ffn[0].out_channels == 64  # ffn_ratio 4
    x = torch.randn(4, 16, size, size)
    assert head.entrance(x).shape == x.shape
    assert head(x).shape == (4, 3, 2 * size, 2 * size)
    agnostic = _build(dict(type='ECADCNMaskHead', in_channels=16, conv_out_channels=8, class_agnostic=True))
    assert agnostic(x).shape == (4, 1, 2 * size, 2 * size)


def test_deformable_conv_runs_on_cpu_and_its_offsets_learn():
    """mmcv's DCNv2 on the CPU: zero offsets at init (a plain conv whose taps are modulated by sigmoid(0) = 0.5);
    after one backward the offset/modulation conv has gradients, and non-zero offsets change the output."""
    from mmcv.ops import ModulatedDeformConv2dPack
    torch.manual_seed(0)
    head = ECADCNMaskHead(in_channels=8, conv_out_channels=8, num_classes=2)
    head.init_weights()
    dcn = head.dcn
    assert isinstance(dcn, ModulatedDeformConv2dPack) and dcn.conv_offset.weight.abs().sum() == 0
    x = torch.randn(3, 8, 9, 9)
    torch.testing.assert_close(dcn(x), 0.5 * F.conv2d(x, dcn.weight, padding=1), rtol=1e-4, atol=1e-5)

    head.train()
    head(torch.randn(3, 8, 14, 14)).square().mean().backward()
    grad = dcn.conv_offset.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert head.eca.conv.weight.grad.abs().sum() > 0 and head.ffn[3].weight.grad.abs().sum() > 0

    with torch.no_grad():
        dcn.conv_offset.bias[:18] = 0.5  # shift every sampling point by half a pixel
    assert not torch.allclose(dcn(x), 0.5 * F.conv2d(x, dcn.weight, padding=1), atol=1e-3)


def test_eca_dcn_mask_head_entrance_and_checkpoint_names():
    torch.manual_seed(0)
    head = ECADCNMaskHead(in_channels=8, conv_out_channels=8, num_classes=2, ffn_dropout=0.0).eval()
    x = torch.randn(2, 8, 14, 14)
    a = head.eca(x)
    b = a + head.dcn_norm(head.dcn(a))
    torch.testing.assert_close(head.entrance(x), b + head.ffn[3](F.gelu(head.ffn[0](b))))
    # every FCNMaskHead weight keeps its name: mmdet's Mask R-CNN checkpoints load into the head
    plain = FCNMaskHead(in_channels=8, conv_out_channels=8, num_classes=2)
    assert set(plain.state_dict()) < set(head.state_dict())
    plain_conv = _build(dict(type='ECADCNMaskHead', in_channels=8, conv_out_channels=8, dcn_cfg=dict(type='Conv2d')))
    assert type(plain_conv.dcn) is nn.Conv2d
    with pytest.raises(ValueError, match='ffn_dropout'):
        ECADCNMaskHead(ffn_dropout=1.0)


# ------------------------------------------------------------------------------------------------------ neck
IN_CHANNELS = [8, 16, 24, 32]


def _inputs(size, batch=2, seed=0):
    """C2-C5 maps of a ``size`` (side, or (height, width)) image: strides 4..32, sizes rounded up as strided convs
    with padding round them."""
    generator = torch.Generator().manual_seed(seed)
    h, w = (size, size) if isinstance(size, int) else size
    sides = [(h, w)]
    for _ in range(5):
        sides.append(((sides[-1][0] + 1) // 2, (sides[-1][1] + 1) // 2))
    return [torch.randn(batch, c, *s, generator=generator) for c, s in zip(IN_CHANNELS, sides[2:])]


def _neck(**kwargs):
    cfg = dict(type='TransformerFPN', in_channels=IN_CHANNELS, out_channels=16, num_outs=5, embed_dims=32,
               num_heads=8, pool_size=6, dropout=0.0)
    neck = _build(dict(cfg, **kwargs))
    neck.init_weights()  # FPN's Xavier init must leave the zero-initialised branches at zero
    return neck


@pytest.mark.parametrize('size', [64, 97, (131, 75), 256])
def test_transformer_fpn_shapes_match_fpn(size):
    torch.manual_seed(0)
    neck = _neck(zero_init_branches=False).eval()
    inputs = _inputs(size)
    outs = neck(inputs)
    fpn_outs = FPN.forward(neck, inputs)
    assert [o.shape for o in outs] == [o.shape for o in fpn_outs]
    assert [o.shape[-2:] for o in outs][:4] == [x.shape[-2:] for x in inputs]
    # levels smaller than pool_size keep their own grid; both branches are active
    assert all(not torch.allclose(o, f) for o, f in zip(outs, fpn_outs))


def test_zero_init_transformer_fpn_equals_fpn_exactly():
    torch.manual_seed(0)
    neck = _neck().train()
    assert neck.fusion_scale.item() == 0.0
    assert all(p.abs().sum() == 0 for proj in neck.output_projs for p in proj.parameters())
    assert neck.gate.weight.abs().sum() > 0  # FPN's Xavier init reached the gate conv
    for size in (64, 97, (75, 131)):
        inputs = _inputs(size)
        for out, fpn_out in zip(neck(inputs), FPN.forward(neck, inputs)):
            assert torch.equal(out, fpn_out)
    # every FPN weight keeps its name: mmdet FPN checkpoints load into the neck
    plain = FPN(IN_CHANNELS, 16, 5)
    assert set(plain.state_dict()) < set(neck.state_dict())

    # the zero-initialised branches still learn: their scale and back-projections receive gradients
    sum(o.square().mean() for o in neck(_inputs(64))).backward()
    assert neck.fusion_scale.grad.abs() > 0
    assert all(proj.weight.grad.abs().sum() > 0 for proj in neck.output_projs)


def test_level_gates_are_positive_and_sum_to_one():
    torch.manual_seed(0)
    neck = _neck()
    nn.init.normal_(neck.gate.weight, std=1.0)
    nn.init.normal_(neck.gate.bias, std=1.0)
    feats = FPN.forward(neck, _inputs(97, batch=3))
    gates = neck.level_gates(feats)
    assert gates.shape == (3, 5)
    assert (gates > 0).all()
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(3))
    assert not torch.allclose(gates, torch.full_like(gates, 0.2))  # image- and level-dependent
    # one 1x1 conv per level on its own pooled descriptor, then a softmax over the levels
    logits = torch.stack([
        F.conv2d(feat.mean(dim=(2, 3), keepdim=True), neck.gate.weight[level:level + 1],
                 neck.gate.bias[level:level + 1]).flatten(1)[:, 0] for level, feat in enumerate(feats)
    ], dim=1)
    torch.testing.assert_close(gates, logits.softmax(dim=1))


def test_uniform_gated_fusion_equals_mmdet_bfp():
    """With all gates equal (zero gate conv), alpha = 1 and the transformer branch at zero, the neck is FPN
    followed by Libra R-CNN's balanced feature fusion: mmdet's BFP without refinement."""
    torch.manual_seed(0)
    neck = _neck().eval()
    nn.init.zeros_(neck.gate.weight)
    nn.init.zeros_(neck.gate.bias)
    with torch.no_grad():
        neck.fusion_scale.fill_(1.0)
    bfp = BFP(in_channels=16, num_levels=5, refine_level=2, refine_type=None).eval()
    for size in (64, 131):
        inputs = _inputs(size)
        for out, expected in zip(neck(inputs), bfp(FPN.forward(neck, inputs))):
            torch.testing.assert_close(out, expected)


def test_transformer_mixes_all_levels():
    """The encoder attends over the tokens of all levels: changing one level's map changes the transformer's
    residual on every other level; images of a batch do not mix."""
    torch.manual_seed(0)
    neck = _neck(zero_init_branches=False).eval()
    inputs = _inputs(64)
    feats = FPN.forward(neck, inputs)
    residuals = neck.transformer_residuals(feats)
    # perturb only P6's map: the other levels' residuals change through attention alone
    changed = list(feats)
    changed[4] = changed[4] + 3.0
    residuals_changed = neck.transformer_residuals(changed)
    for level in range(4):
        assert not torch.allclose(residuals[level], residuals_changed[level], atol=1e-4)
    # batch items do not mix
    single = neck.transformer_residuals([f[:1] for f in feats])
    for level in range(5):
        torch.testing.assert_close(single[level], residuals[level][:1], rtol=1e-4, atol=1e-5)


def test_transformer_fpn_rejects_bad_arguments():
    with pytest.raises(ValueError, match='embed_dims'):
        TransformerFPN(IN_CHANNELS, 16, 5, embed_dims=30, num_heads=8)
    with pytest.raises(ValueError, match='refine_level'):
        TransformerFPN(IN_CHANNELS, 16, 5, refine_level=5)


# ------------------------------------------------------------------------------------------------ backbones
@pytest.fixture(scope='module')
def effv2m():
    torch.manual_seed(0)
    return TimmCBAMBackbone('tf_efficientnetv2_m', use_cbam=False).eval()


def test_efficientnetv2_m_strides_and_channels(effv2m):
    fragment = _load(EFFV2_FRAGMENT, resolved=False)  # the fragment's private parts
    assert effv2m.out_indices == (1, 2, 3, 4) == fragment._effv2m_backbone.out_indices
    assert effv2m.strides == [4, 8, 16, 32]
    assert effv2m.out_channels == [48, 80, 176, 512] == fragment._effv2m_channels
    with torch.no_grad():
        outs = effv2m(torch.rand(1, 3, 67, 67))  # TF 'same' padding: ceil(67 / stride)
    assert [tuple(o.shape) for o in outs] == [(1, 48, 17, 17), (1, 80, 9, 9), (1, 176, 5, 5), (1, 512, 3, 3)]

    small = TimmCBAMBackbone('tf_efficientnetv2_s', use_cbam=False)
    assert small.strides == [4, 8, 16, 32] and small.out_channels == fragment._effv2s_channels == [48, 64, 160, 256]
    assert sum(p.numel() for p in small.parameters()) < 0.5 * sum(p.numel() for p in effv2m.parameters())


# ------------------------------------------------------------------------------------------------- configs
def _cells_sample(cells_dir, size=128):
    """The first DSB2018 image (top-left ``size`` x ``size`` crop) and its nuclei, as one training sample."""
    import tifffile
    folder = sorted((cells_dir / 'train').iterdir())[0]
    image = tifffile.imread(folder / 'image.tif')[:size, :size, :3]
    label = tifffile.imread(folder / 'class1.tif')[:size, :size]
    masks = np.stack([label == v for v in np.unique(label) if v != 0])
    return image, masks, np.zeros(len(masks), np.int64)


def _isaid_sample(isaid_raw_dir, size=128):
    """A ``size`` x ``size`` crop of iSAID val P0003 around its instances, masks from the devkit's id image and
    classes from its colour image."""
    from PIL import Image

    from mmdet_custom.utils.isaid_meta import ISAID_PALETTE
    folder = isaid_raw_dir / 'val' / 'images'
    image = np.asarray(Image.open(folder / 'P0003.png').convert('RGB'))
    ids = np.asarray(Image.open(folder / 'P0003_instance_id_RGB.png').convert('RGB')).astype(np.int64)
    ids = ids[..., 0] * 65536 + ids[..., 1] * 256 + ids[..., 2]
    colours = np.asarray(Image.open(folder / 'P0003_instance_color_RGB.png').convert('RGB'))
    ys, xs = np.nonzero(ids)
    y0 = int(np.clip(np.median(ys) - size // 2, 0, ids.shape[0] - size))
    x0 = int(np.clip(np.median(xs) - size // 2, 0, ids.shape[1] - size))
    window = np.s_[y0:y0 + size, x0:x0 + size]
    image, ids, colours = image[window], ids[window], colours[window]
    masks, labels = [], []
    for value in np.unique(ids):
        mask = ids == value
        colour = tuple(int(c) for c in colours[mask][0])
        if value and colour in ISAID_PALETTE and mask.sum() > 10:
            masks.append(mask)
            labels.append(ISAID_PALETTE.index(colour))
    assert masks, 'the crop holds no instance'
    return image, np.stack(masks), np.array(labels, np.int64)


def _data(image, masks, labels):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    h, w = masks.shape[1:]
    boxes = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    sample = DetDataSample(metainfo=dict(img_id=0, img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32), labels=torch.from_numpy(labels),
        masks=BitmapMasks(masks.astype(np.uint8), h, w))
    # mmdet's loader gives BGR channels (cv2); the preprocessor's bgr_to_rgb flips them back
    inputs = torch.from_numpy(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1)))
    return dict(inputs=[inputs], data_samples=[sample])


def test_family_lists_every_attention_config():
    # tests/test_configs.py leaves every configs/attention/ file to the one-step test below
    assert sorted(CELLS_CONFIGS + ISAID_CONFIGS) == sorted(p.name for p in FAMILY.glob('*.py'))


# EfficientNetV2-M builds and backpropagates in ~10 s each on a CPU
@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if 'effv2m' in n else n
                                  for n in CELLS_CONFIGS + ISAID_CONFIGS])
def test_config_builds_and_trains_one_step_on_a_real_image(name, request):
    """Build with random init (nothing read or downloaded), one loss + backward on a real 128 x 128 crop: finite
    losses, gradients in the backbone, and in the new modules' branches where the config has them."""
    from helpers import shrink_for_cpu
    cfg = shrink_for_cpu(_load(FAMILY / name), resnet_depth=None, rois=32, iters=None)  # 100 proposals, 32 RoIs
    model_cfg = cfg.model
    assert 'Pretrained' not in str(model_cfg)
    if model_cfg.backbone.type == 'TimmCBAMBackbone':
        # random weights have no BatchNorm statistics: with norm_eval (right for pretrained weights) activations
        # grow through EfficientNetV2-M's 50-odd blocks to ~1e6 losses; normalise with batch statistics instead
        model_cfg.backbone.norm_eval = False
    torch.manual_seed(0)
    model = _build(model_cfg).train()
    if name.endswith('cells.py'):
        sample = _cells_sample(request.getfixturevalue('cells_dir'))
    else:
        sample = _isaid_sample(request.getfixturevalue('isaid_raw_dir'))
    assert model.roi_head.bbox_head.num_classes == (4 if name.endswith('cells.py') else 15)
    assert model.neck.in_channels == list(getattr(model.backbone, 'out_channels', [256, 512, 1024, 2048]))

    data = model.data_preprocessor(_data(*sample), training=True)
    loss, log_vars = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
    for key, value in log_vars.items():
        assert torch.isfinite(torch.as_tensor(value).detach()), f'{name}: {key} = {value}'
    assert {'loss_rpn_cls', 'loss_cls', 'loss_mask'} <= set(log_vars)
    assert loss < 20  # near chance at random init (e.g. loss_cls ~ ln(num_classes + 1)), not blown up
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    if 'trans-fpn' in name:
        assert isinstance(model.neck, TransformerFPN)
        assert model.neck.fusion_scale.grad.abs() > 0
        assert isinstance(model.roi_head.mask_head, ECADCNMaskHead)
        assert model.roi_head.mask_head.dcn.conv_offset.weight.grad.abs().sum() > 0
    if '-cbam' in name:
        assert all(any(p.grad.abs().sum() > 0 for p in cbam.parameters()) for cbam in model.backbone.cbams)


def _flat(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def _diff(parent, child):
    a, b = _flat(_load(parent).to_dict()), _flat(_load(child).to_dict())
    return {k: b.get(k) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


MODULES = {'model.neck.type': 'TransformerFPN', 'model.roi_head.mask_head.type': 'ECADCNMaskHead'}


def test_study_rows_differ_only_in_their_parts():
    cells_r50 = REPO_ROOT / 'configs' / 'cells' / 'mask-rcnn_r50_fpn_1x_cells.py'
    anchors = REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r50_fpn_anchors_1x_isaid.py'
    r101 = {'model.backbone.depth': 101, 'model.backbone.init_cfg.checkpoint': 'torchvision://resnet101'}
    assert _diff(cells_r50, FAMILY / CELLS_CONFIGS[0]) == r101
    assert _diff(anchors, ISAID_R101) == r101
    for parent, child in ((FAMILY / CELLS_CONFIGS[0], FAMILY / CELLS_CONFIGS[1]),
                          (FAMILY / CELLS_CONFIGS[2], FAMILY / CELLS_CONFIGS[3]),
                          (ISAID_R101, FAMILY / ISAID_CONFIGS[0]),
                          (FAMILY / ISAID_CONFIGS[1], FAMILY / ISAID_CONFIGS[2])):
        assert _diff(parent, child) == MODULES, child.name
    assert _diff(FAMILY / ISAID_CONFIGS[2], FAMILY / ISAID_CONFIGS[3]) == {'model.backbone.use_cbam': True}
    # the EfficientNetV2-M rows replace the whole backbone (no ResNet key survives) and feed its channels to FPN
    for parent, child in ((cells_r50, CELLS_CONFIGS[2]), (anchors, ISAID_CONFIGS[1])):
        assert _load(FAMILY / child).model.backbone.to_dict() == dict(
            type='TimmCBAMBackbone', model_name='tf_efficientnetv2_m', out_indices=(1, 2, 3, 4), pretrained=True,
            use_cbam=False, frozen_stages=1, norm_eval=True)
        diff = _diff(parent, FAMILY / child)
        assert diff['model.neck.in_channels'] == [48, 80, 176, 512]
        assert {k for k in diff if not k.startswith('model.backbone.')} == {'model.neck.in_channels'}


@pytest.mark.slow
def test_r101_attention_cells_config_trains_two_iterations(cells_converted, tmp_path):
    """The R101 + attention cells config, unchanged but for CPU-sized work, trains 2 iterations on the converted
    DSB2018 images: finite losses logged, and the zero-initialised fusion scale has moved (the new branches
    learn)."""
    from helpers import shrink_for_cpu, use_data_root

    from mmdet_custom.apis import train

    # the config's ResNet-101 (random init, nothing downloaded), batch 1 at half the native 256 x 320, no validation
    # (the validation of this config: tests/test_configs.py, test_cells.py) and no checkpoint (a 250 MB file is not
    # under test here)
    cfg = shrink_for_cpu(_load(FAMILY / CELLS_CONFIGS[1]), tmp_path / 'work', resnet_depth=None, batch_size=1,
                         image_size=(160, 160), checkpoint_interval=None)
    use_data_root(cfg, cells_converted.root)  # DSB2018, val_fraction=0.2, seed=0 (read only: training writes work_dir)
    runner = train(cfg)
    assert runner.iter == 2
    model = runner.model
    assert isinstance(model.neck, TransformerFPN) and isinstance(model.roi_head.mask_head, ECADCNMaskHead)
    assert model.backbone.depth == 101
    scalars = runner.message_hub.log_scalars
    for key in ('train/loss', 'train/loss_rpn_cls', 'train/loss_cls', 'train/loss_mask'):
        assert len(scalars[key].data[0]) == 2 and np.isfinite(scalars[key].data[0]).all(), key
    # two SGD steps moved the zero-initialised scale of the gated fusion off zero: the branch learns
    assert model.neck.fusion_scale.item() != 0.0
    assert all(proj.weight.abs().sum() > 0 for proj in model.neck.output_projs)
