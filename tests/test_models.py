"""Custom model modules: CBAM, TimmCBAMBackbone, AttentionFPN, RegularizedShared2FCBBoxHead, ResidualFCNMaskHead."""
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from mmdet.models.backbones import ResNet
from mmdet.models.necks import FPN
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

import mmdet_custom.register  # noqa: F401  (registers the modules)
from mmdet_custom.models.backbones import TimmCBAMBackbone
from mmdet_custom.models.layers import CBAM
from mmdet_custom.models.necks import AttentionFPN
from mmdet_custom.models.roi_heads.bbox_heads import RegularizedShared2FCBBoxHead

CBAM_PLUGIN = [dict(cfg=dict(type='CBAM', reduction=16), stages=(True, True, True, True), position='after_conv3')]


def _zero_(module: nn.Module) -> nn.Module:
    for param in module.parameters():
        nn.init.zeros_(param)
    return module


def _bn_stats(module: nn.Module) -> list:
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, _BatchNorm)]


# --------------------------------------------------------------------------------------------- CBAM
def test_cbam_keeps_shape_and_maps_lie_in_unit_interval():
    torch.manual_seed(0)
    cbam = CBAM(32, reduction=16)
    x = torch.randn(2, 32, 9, 11)
    channel_map = cbam.channel_attention.attention(x)
    spatial_map = cbam.spatial_attention.attention(x * channel_map)
    out = cbam(x)
    assert out.shape == x.shape
    assert channel_map.shape == (2, 32, 1, 1) and spatial_map.shape == (2, 1, 9, 11)
    for attention in (channel_map, spatial_map):
        assert attention.min() > 0 and attention.max() < 1
    torch.testing.assert_close(out, x * channel_map * spatial_map)
    assert cbam.channel_attention.mid_channels == 2


def test_cbam_with_zero_weights_halves_twice():
    x = torch.randn(2, 8, 5, 6)
    cbam = _zero_(CBAM(8, reduction=4))
    assert torch.equal(cbam.channel_attention.attention(x), torch.full((2, 8, 1, 1), 0.5))
    assert torch.equal(cbam.spatial_attention.attention(x), torch.full((2, 1, 5, 6), 0.5))
    assert torch.equal(cbam(x), x * 0.25)


def test_channel_attention_shares_one_mlp_between_avg_and_max():
    # C = 2, r = 1, both MLP layers the identity: MLP(v) = relu(v), M_c = sigmoid(relu(avg) + relu(max)).
    cbam = _zero_(CBAM(2, reduction=1))
    for conv in (cbam.channel_attention.mlp[0], cbam.channel_attention.mlp[2]):
        conv.weight.data[:, :, 0, 0] = torch.eye(2)
    x = torch.tensor([[[[1., 3.]], [[-1., -3.]]]])  # channel 0: avg 2, max 3; channel 1: avg -2, max -1
    expected = torch.tensor([1 / (1 + math.exp(-5)), 0.5]).view(1, 2, 1, 1)
    torch.testing.assert_close(cbam.channel_attention.attention(x), expected)


def test_spatial_attention_pools_over_channels_then_convolves():
    cbam = _zero_(CBAM(3, reduction=16))
    assert cbam.channel_attention.mid_channels == 1  # max(3 // 16, 1)
    x = torch.randn(1, 3, 4, 5)
    # centre tap 1 on the channel-mean map, 2 on the channel-max map: M_s = sigmoid(mean_c + 2 max_c) of F' = x / 2.
    cbam.spatial_attention.conv.weight.data[0, :, 3, 3] = torch.tensor([1., 2.])
    half = x * 0.5
    expected = half * torch.sigmoid(half.mean(1, keepdim=True) + 2 * half.amax(1, keepdim=True))
    torch.testing.assert_close(cbam(x), expected)


def test_cbam_rejects_bad_arguments():
    with pytest.raises(ValueError, match='reduction'):
        CBAM(8, reduction=0)
    with pytest.raises(ValueError, match='kernel_size'):
        CBAM(8, spatial_kernel=4)


def test_cbam_builds_from_registry_and_as_resnet_plugin():
    with DefaultScope.overwrite_default_scope('mmdet'):
        assert isinstance(MODELS.build(dict(type='CBAM', in_channels=8, reduction=4)), CBAM)
    # mmcv's build_plugin_layer looks in the default scope's registry, or in the root one when no scope is set
    assert MMENGINE_MODELS.get('CBAM') is CBAM
    with DefaultScope.overwrite_default_scope('mmdet'):
        resnet = ResNet(depth=50, base_channels=8, stem_channels=8, plugins=CBAM_PLUGIN)
    resnet.eval()  # (mmdet's ResNet.train returns None)
    blocks = [block for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4) for block in layer]
    assert len(blocks) == 16 and all(isinstance(block.cbam, CBAM) for block in blocks)
    assert blocks[0].cbam.in_channels == 32 and blocks[-1].cbam.in_channels == 256  # planes * expansion
    calls = []
    for block in blocks:
        block.cbam.register_forward_hook(lambda *args: calls.append(1))
    outs = resnet(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]
    assert len(calls) == 16


# ----------------------------------------------------------------------------------------- backbone
@pytest.fixture(scope='module')
def effb0_classifier():
    torch.manual_seed(0)
    return timm.create_model('efficientnet_b0')


def test_backbone_strides_and_channels():
    backbone = TimmCBAMBackbone('efficientnet_b0').eval()
    assert backbone.out_indices == (1, 2, 3, 4)
    assert backbone.out_channels == [24, 40, 112, 320] and backbone.strides == [4, 8, 16, 32]
    outs = backbone(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4), (2, 320, 2, 2)]
    assert [cbam.in_channels for cbam in backbone.cbams] == [24, 40, 112, 320]


def test_backbone_cbam_switch_per_stage():
    torch.manual_seed(0)
    backbone = TimmCBAMBackbone(use_cbam=(True, False, True, False)).eval()
    assert [type(m) for m in backbone.cbams] == [CBAM, nn.Identity, CBAM, nn.Identity]
    x = torch.rand(1, 3, 64, 64)
    plain = backbone.timm_model(x)
    outs = backbone(x)
    assert torch.equal(outs[1], plain[1]) and torch.equal(outs[3], plain[3])
    assert not torch.allclose(outs[0], plain[0])
    with pytest.raises(ValueError, match='use_cbam has 3 flags'):
        TimmCBAMBackbone(use_cbam=(True, True, True))


def test_gradients_reach_the_backbone_through_cbam():
    torch.manual_seed(0)
    backbone = TimmCBAMBackbone().train()
    outs = backbone(torch.rand(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    assert backbone.timm_model.conv_stem.weight.grad.abs().sum() > 0
    for cbam in backbone.cbams:
        for name, param in cbam.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_frozen_stages_freeze_stem_and_first_stages():
    backbone = TimmCBAMBackbone(frozen_stages=2)
    model = backbone.timm_model
    frozen = [model.conv_stem, model.bn1, model.blocks[0], model.blocks[1], model.blocks[2]]
    trainable = [model.blocks[3], model.blocks[4], model.blocks[5], model.blocks[6], backbone.cbams]
    backbone.train()
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in trainable for p in m.parameters())
    assert all(not m.training for f in frozen for m in f.modules())
    assert model.blocks[3].training and model.training
    before = _bn_stats(model.blocks[2]), _bn_stats(model.blocks[3])
    backbone(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(a, b) for a, b in zip(before[0], _bn_stats(model.blocks[2])))
    assert not all(torch.equal(a, b) for a, b in zip(before[1], _bn_stats(model.blocks[3])))

    stem_only = TimmCBAMBackbone(frozen_stages=0).timm_model
    assert not any(p.requires_grad for m in (stem_only.conv_stem, stem_only.blocks[0]) for p in m.parameters())
    assert all(p.requires_grad for p in stem_only.blocks[1].parameters())
    with pytest.raises(ValueError, match='frozen_stages'):
        TimmCBAMBackbone(frozen_stages=5)


def test_norm_eval_keeps_batchnorm_in_eval_mode():
    backbone = TimmCBAMBackbone(norm_eval=True).train()
    bns = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    assert bns and not any(bn.training for bn in bns)
    assert backbone.timm_model.conv_stem.training
    assert all(p.requires_grad for p in backbone.parameters())  # eval statistics, trainable affine params
    before = _bn_stats(backbone)
    backbone(torch.rand(2, 3, 64, 64))
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(backbone)))


def test_local_checkpoint_of_classification_model(tmp_path, effb0_classifier):
    path = tmp_path / 'effb0.pth'
    torch.save({'state_dict': effb0_classifier.state_dict(), 'meta': {'epoch': 3}}, path)
    backbone = TimmCBAMBackbone(checkpoint_path=str(path))
    model = backbone.timm_model
    assert not torch.equal(model.conv_stem.weight, effb0_classifier.conv_stem.weight)  # read in init_weights only
    backbone.init_weights()
    assert torch.equal(model.conv_stem.weight, effb0_classifier.conv_stem.weight)
    assert torch.equal(model.blocks[6][0].bn3.running_var, effb0_classifier.blocks[6][0].bn3.running_var)


def test_local_checkpoint_of_features_model(tmp_path, effb0_classifier):
    torch.manual_seed(1)
    source = TimmCBAMBackbone()
    path = tmp_path / 'features.pth'
    torch.save({'model': source.timm_model.state_dict()}, path)
    backbone = TimmCBAMBackbone(checkpoint_path=str(path))
    backbone.init_weights()
    model = backbone.timm_model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.timm_model.state_dict().values()))


def test_frozen_stages_stay_frozen_after_loading_weights(tmp_path, effb0_classifier):
    path = tmp_path / 'effb0.safetensors'
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in effb0_classifier.state_dict().items()}, str(path))
    backbone = TimmCBAMBackbone(checkpoint_path=str(path), frozen_stages=1)
    backbone.init_weights()
    backbone.train()
    assert torch.equal(backbone.timm_model.conv_stem.weight, effb0_classifier.conv_stem.weight)
    assert not backbone.timm_model.conv_stem.weight.requires_grad and not backbone.timm_model.bn1.training
    assert backbone.timm_model.blocks[2][0].conv_pw.weight.requires_grad


def test_mismatched_checkpoint_is_refused_with_the_keys(tmp_path):
    from mmdet_custom.utils.errors import UserError
    path = tmp_path / 'resnet18.pth'
    torch.save(timm.create_model('resnet18').state_dict(), path)
    backbone = TimmCBAMBackbone(checkpoint_path=str(path))  # the file is read by init_weights, not on build
    match = r'resnet18\.pth .*does not hold weights of timm model .efficientnet_b0'
    with pytest.raises(ValueError, match=match) as err:
        backbone.init_weights()
    assert isinstance(err.value, UserError)
    assert 'missing keys (blocks.0.0' in str(err.value) and 'unexpected keys (conv1.weight' in str(err.value)

    not_weights = tmp_path / 'not_weights.pth'
    torch.save({'epoch': 3}, not_weights)
    with pytest.raises(ValueError, match='not_weights.pth .*expected a state_dict'):
        TimmCBAMBackbone(checkpoint_path=str(not_weights)).init_weights()
    absent = TimmCBAMBackbone(checkpoint_path=str(tmp_path / 'absent.pth'))
    with pytest.raises(FileNotFoundError, match=r'absent\.pth \(model\.backbone\.checkpoint_path\)'):
        absent.init_weights()
    with pytest.raises(ValueError, match='at most one'):
        TimmCBAMBackbone(pretrained=True, checkpoint_path=str(path))


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or name lookup raises; timm's hub loaders are recorded (and raise as offline)."""
    import socket

    import timm.models._builder as timm_builder

    def refuse(*args, **kwargs):
        raise OSError('network access in a test')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    calls = []

    def offline(loc, *args, **kwargs):
        calls.append(loc)
        raise OSError(f'cannot reach the hub for {loc} (offline)')

    for name in ('load_state_dict_from_hf', 'load_state_dict_from_url'):
        monkeypatch.setattr(timm_builder, name, offline)
    return calls


def test_pretrained_backbone_builds_offline_and_loads_in_init_weights(no_network, monkeypatch, effb0_classifier):
    """The full model (pretrained=True) builds without touching the network; init_weights fetches the weights
    through timm's loader; offline, it raises a UserError saying how to give a local file or use random weights."""
    from mmengine.config import Config

    from mmdet_custom.models.backbones import PretrainedWeightsUnavailableError
    from mmdet_custom.utils.errors import UserError

    repo = Path(__file__).resolve().parents[1]
    cfg = Config.fromfile(str(repo / 'configs' / 'cbam' / 'mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'))
    assert cfg.model.backbone.pretrained is True
    with DefaultScope.overwrite_default_scope('mmdet'):
        detector = MODELS.build(cfg.model)
    assert no_network == []  # nothing fetched on build

    with pytest.raises(PretrainedWeightsUnavailableError) as err:
        detector.backbone.init_weights()
    assert no_network == ['timm/efficientnet_b0.ra_in1k']
    message = str(err.value)
    assert isinstance(err.value, UserError)
    assert "'efficientnet_b0'" in message and 'offline' in message
    assert 'model.backbone.checkpoint_path=' in message and 'model.backbone.pretrained=False' in message

    # with the hub reachable (its loader answering), the weights land in the features model
    import timm.models._builder as timm_builder
    monkeypatch.setattr(timm_builder, 'load_state_dict_from_hf',
                        lambda loc, *args, **kwargs: dict(effb0_classifier.state_dict()))
    backbone = TimmCBAMBackbone(pretrained=True)
    assert not torch.equal(backbone.timm_model.conv_stem.weight, effb0_classifier.conv_stem.weight)
    backbone.init_weights()
    assert torch.equal(backbone.timm_model.conv_stem.weight, effb0_classifier.conv_stem.weight)
    assert torch.equal(backbone.timm_model.blocks[6][0].bn3.running_var, effb0_classifier.blocks[6][0].bn3.running_var)


def test_pretrained_weights_fail_fast_offline_and_load_from_the_local_hub_cache(monkeypatch, tmp_path,
                                                                                effb0_classifier):
    """With the hub's host unreachable (a closed local port as HF_ENDPOINT), init_weights reads the local hub
    cache only: not cached, the helpful error comes within seconds (not after ~50 s of the hub client's retries);
    cached, the weights load."""
    import time

    from huggingface_hub import constants as hf_constants
    from safetensors.torch import save_file

    from mmdet_custom.models.backbones import PretrainedWeightsUnavailableError

    monkeypatch.setattr(hf_constants, 'ENDPOINT', 'http://127.0.0.1:9')
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path))
    backbone = TimmCBAMBackbone(pretrained=True)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailableError) as err:
        backbone.init_weights()
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert 'offline: 127.0.0.1 unreachable within 2 s, and not in the local cache' in message
    assert 'model.backbone.checkpoint_path=' in message and 'model.backbone.pretrained=False' in message
    assert hf_constants.HF_HUB_OFFLINE is False  # the offline switch is restored

    # the same weights in the local hub cache (huggingface_hub's layout): loaded without the network
    snapshot = tmp_path / 'models--timm--efficientnet_b0.ra_in1k' / 'snapshots' / ('0' * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / 'refs').mkdir()
    (snapshot.parents[1] / 'refs' / 'main').write_text('0' * 40)
    weights = {k: v.contiguous() for k, v in effb0_classifier.state_dict().items()}
    save_file(weights, str(snapshot / 'model.safetensors'))
    backbone = TimmCBAMBackbone(pretrained=True)
    backbone.init_weights()
    assert torch.equal(backbone.timm_model.conv_stem.weight, effb0_classifier.conv_stem.weight)


def test_out_indices_default_needs_c2_to_c5():
    with pytest.raises(ValueError, match='no features_only output at reductions'):
        TimmCBAMBackbone('vit_tiny_patch16_224', img_size=32)


# --------------------------------------------------------------------------------------------- neck
def test_attention_fpn_shapes_and_attention():
    torch.manual_seed(0)
    in_channels = [24, 40, 112, 320]
    inputs = [torch.rand(2, c, s, s) for c, s in zip(in_channels, (16, 8, 4, 2))]
    with DefaultScope.overwrite_default_scope('mmdet'):
        neck = MODELS.build(dict(type='AttentionFPN', in_channels=in_channels, out_channels=16, num_outs=5))
    assert isinstance(neck, AttentionFPN)
    neck.init_weights()
    outs = neck(inputs)
    assert [tuple(o.shape) for o in outs] == [(2, 16, s, s) for s in (16, 8, 4, 2, 1)]
    assert len(neck.cbams) == 5 and all(cbam.in_channels == 16 for cbam in neck.cbams)
    for cbam in neck.cbams:  # zero-weight CBAMs scale FPN's output by 0.5 * 0.5
        _zero_(cbam)
    for out, fpn_out in zip(neck(inputs), FPN.forward(neck, inputs)):
        torch.testing.assert_close(out, fpn_out * 0.25)


# -------------------------------------------------------------------------------------------- heads
def test_residual_mask_head_shape_and_shortcut():
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = MODELS.build(dict(type='ResidualFCNMaskHead', in_channels=8, conv_out_channels=16, num_classes=3))
    head.init_weights()
    assert len(head.convs) == 4 and isinstance(head.convs[0].bn, nn.BatchNorm2d)
    assert head.shortcut.conv.in_channels == 8 and head.shortcut.conv.out_channels == 16
    assert head.shortcut.conv.kernel_size == (1, 1) and isinstance(head.shortcut.bn, nn.BatchNorm2d)
    x = torch.randn(5, 8, 14, 14)
    mask_preds = head(x)
    assert mask_preds.shape == (5, 3, 28, 28)
    mask_preds.square().mean().backward()
    assert head.shortcut.conv.weight.grad.abs().sum() > 0
    assert head.convs[0].conv.weight.grad.abs().sum() > 0
    # every FCNMaskHead weight keeps its name, so mmdet's Mask R-CNN checkpoints load into it
    plain = FCNMaskHead(in_channels=8, conv_out_channels=16, num_classes=3, norm_cfg=dict(type='BN'))
    assert set(plain.state_dict()) < set(head.state_dict())
    with pytest.raises(ValueError, match='num_convs >= 1'):
        MODELS.build(dict(type='ResidualFCNMaskHead', num_convs=0))


def test_residual_mask_head_without_stack_passes_the_shortcut():
    head = MODELS.build(dict(type='ResidualFCNMaskHead', in_channels=4, conv_out_channels=4, num_classes=1)).eval()
    for conv in head.convs:  # stack outputs relu(0) = 0: only the shortcut carries x
        _zero_(conv.conv)
    x1, x2 = torch.randn(2, 1, 4, 14, 14)
    assert not torch.allclose(head(x1), head(x2))


def test_residual_mask_head_runs_in_chunks_at_test_time_with_the_same_output():
    torch.manual_seed(0)
    head = MODELS.build(dict(type='ResidualFCNMaskHead', in_channels=8, conv_out_channels=8, num_classes=2,
                             test_chunk=3))
    assert MODELS.build(dict(type='ResidualFCNMaskHead')).test_chunk == 100  # the default
    for bn in head.modules():  # non-trivial running statistics
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = torch.randn(7, 8, 14, 14)
    calls = []
    head.conv_logits.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    head.eval()
    chunked = head(x)
    assert calls == [3, 3, 1]  # 7 RoIs in chunks of 3
    head.test_chunk = None
    calls.clear()
    whole = head(x)
    assert calls == [7]
    assert chunked.shape == (7, 2, 28, 28) and torch.allclose(chunked, whole, atol=1e-5, rtol=0)
    assert head(torch.zeros(0, 8, 14, 14)).shape == (0, 2, 28, 28)
    # training: one batch whatever test_chunk (BN batch statistics over all RoIs)
    head.test_chunk = 3
    head.train()
    calls.clear()
    head(x)
    assert calls == [7]
    with pytest.raises(ValueError, match='test_chunk >= 1'):
        MODELS.build(dict(type='ResidualFCNMaskHead', test_chunk=0))


def test_bbox_head_dropout_only_in_training():
    torch.manual_seed(0)
    cfg = dict(in_channels=8, roi_feat_size=7, fc_out_channels=64, num_classes=3)
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = MODELS.build(dict(type='RegularizedShared2FCBBoxHead', **cfg))
    head.init_weights()
    assert head.dropout.p == 0.3
    x = torch.rand(6, 8, 7, 7)
    head.train()
    (cls_a, reg_a), (cls_b, reg_b) = head(x), head(x)
    assert cls_a.shape == (6, 4) and reg_a.shape == (6, 12)
    assert not torch.allclose(cls_a, cls_b) and not torch.allclose(reg_a, reg_b)
    head.eval()
    (cls_a, reg_a), (cls_b, reg_b) = head(x), head(x)
    assert torch.equal(cls_a, cls_b) and torch.equal(reg_a, reg_b)
    plain = Shared2FCBBoxHead(**cfg).eval()
    plain.load_state_dict(head.state_dict())  # same keys: mmdet checkpoints load unchanged
    cls_plain, reg_plain = plain(x)
    torch.testing.assert_close(cls_a, cls_plain)
    torch.testing.assert_close(reg_a, reg_plain)
    with pytest.raises(ValueError, match='dropout_p'):
        MODELS.build(dict(type='RegularizedShared2FCBBoxHead', dropout_p=1.0, **cfg))


def test_bbox_head_drops_a_fraction_p_after_each_shared_fc():
    torch.manual_seed(0)
    head = RegularizedShared2FCBBoxHead(
        in_channels=4, roi_feat_size=2, fc_out_channels=2000, num_classes=2, dropout_p=0.3).train()
    seen = []
    head.dropout.register_forward_hook(lambda m, inp, out: seen.append((inp[0], out)))
    head(torch.rand(8, 4, 2, 2))
    assert len(seen) == 2  # once after each shared fc
    for before, after in seen:
        assert (before >= 0).all()  # dropout comes after the ReLU
        kept = before > 0  # dropout zeroes about 30 % of these and scales the rest by 1 / 0.7
        dropped = (after[kept] == 0).float().mean().item()
        assert 0.27 < dropped < 0.33
        survivors = after[kept] != 0
        torch.testing.assert_close(after[kept][survivors], before[kept][survivors] / 0.7)
