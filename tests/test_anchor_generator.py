"""PerLevelAnchorGenerator: anchors against hand-computed values and mmdet's AnchorGenerator, and in a model."""

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT

from mmdet_custom.anchor_search import AnchorSetting, grid_anchors
from mmdet_custom.models.task_modules.prior_generators import PerLevelAnchorGenerator

ROOT_CONFIG = REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r50_fpn_1x_isaid.py'
STRIDE_ADJUSTED = REPO_ROOT / 'configs' / '_base_' / 'anchors' / 'isaid_stride_adjusted.py'


def test_anchors_hand_computed():
    gen = PerLevelAnchorGenerator(strides=[4, 8], sizes=[[8, 16], [16, 32]], ratios=[1.0, 4.0])
    assert gen.num_base_priors == [4, 4] and gen.num_levels == 2
    level0, level1 = gen.grid_priors([(2, 3), (1, 2)], device='cpu')
    assert level0.shape == (2 * 3 * 4, 4) and level1.shape == (1 * 2 * 4, 4)
    # one location: ratio-major, then size; ratio h / w = 4 -> w = s / 2, h = 2 s
    base = torch.tensor([[-4., -4., 4., 4.], [-8., -8., 8., 8.], [-2., -8., 2., 8.], [-4., -16., 4., 16.]])
    torch.testing.assert_close(level0[:4], base)                                # centre (0, 0)
    torch.testing.assert_close(level0[4:8], base + torch.tensor([4., 0., 4., 0.]))       # row 0, column 1
    torch.testing.assert_close(level0[12:16], base + torch.tensor([0., 4., 0., 4.]))     # row 1, column 0
    torch.testing.assert_close(level1[4:8], base * 2 + torch.tensor([8., 0., 8., 0.]))   # sizes x2, stride 8
    # centres of the last location and sizes (sqrt of area) of every anchor
    centres = (level0[-4:, :2] + level0[-4:, 2:]) / 2
    torch.testing.assert_close(centres, torch.tensor([[8., 4.]] * 4))
    areas = (level0[:4, 2] - level0[:4, 0]) * (level0[:4, 3] - level0[:4, 1])
    torch.testing.assert_close(areas.sqrt(), torch.tensor([8., 16., 8., 16.]))


def test_center_offset_and_sparse_priors_follow_mmdet():
    gen = PerLevelAnchorGenerator(strides=[8], sizes=[[16]], ratios=[1.0], center_offset=0.5)
    anchors = gen.grid_priors([(2, 2)], device='cpu')[0]
    torch.testing.assert_close((anchors[:, :2] + anchors[:, 2:]) / 2,
                               torch.tensor([[4., 4.], [12., 4.], [4., 12.], [12., 12.]]))
    gen = PerLevelAnchorGenerator()
    grid = gen.grid_priors([(5, 7)] * 4, device='cpu')
    idx = torch.tensor([0, 5, 41, 209])
    torch.testing.assert_close(gen.sparse_priors(idx, (5, 7), 2, device='cpu'), grid[2][idx])


def test_same_as_mmdet_anchor_generator_when_sizes_are_shared_multiples():
    from mmdet.models.task_modules.prior_generators import AnchorGenerator
    strides = [4, 8, 16, 32, 64]
    ours = PerLevelAnchorGenerator(strides=strides, sizes=[[2 * s, 4 * s] for s in strides], ratios=[0.5, 1., 2.])
    stock = AnchorGenerator(strides=strides, ratios=[0.5, 1., 2.], scales=[2, 4])
    sizes = [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)]
    for a, b in zip(ours.grid_priors(sizes, device='cpu'), stock.grid_priors(sizes, device='cpu')):
        torch.testing.assert_close(a, b)
    for a, b in zip(ours.valid_flags(sizes, (50, 66), device='cpu'), stock.valid_flags(sizes, (50, 66), 'cpu')):
        assert torch.equal(a, b)


def test_anchor_search_grid_is_the_generators_grid():
    """The recall library's numpy grid (tests compare exact recall with it) is the generator's, anchor by anchor."""
    setting = AnchorSetting((4, 8, 16), ((6, 10), (20, 28), (33, 50)), (0.4, 1.0, 2.5), center_offset=0.5)
    gen = PerLevelAnchorGenerator(strides=list(setting.strides), sizes=setting.sizes, ratios=setting.ratios,
                                  center_offset=0.5)
    img_shape = (48, 80)
    featmaps = [(-(-img_shape[0] // s), -(-img_shape[1] // s)) for s in setting.strides]
    for level, priors in enumerate(gen.grid_priors(featmaps, device='cpu')):
        np.testing.assert_allclose(priors.numpy(), grid_anchors(img_shape, setting, level), atol=1e-4)


def test_mismatched_levels_refused():
    with pytest.raises(ValueError, match=r'different numbers of anchor sizes \[2, 1\]'):
        PerLevelAnchorGenerator(strides=[4, 8], sizes=[[8, 16], [16]])
    with pytest.raises(ValueError, match='gives 1 levels but `strides` gives 2'):
        PerLevelAnchorGenerator(strides=[4, 8], sizes=[[8, 16]])
    with pytest.raises(ValueError, match='positive'):
        PerLevelAnchorGenerator(strides=[4], sizes=[[0, 16]])


def _variant_cfg(tmp_path):
    from mmengine import Config
    variant = tmp_path / 'mask-rcnn_r50_fpn_1x_isaid_stride-adjusted.py'
    variant.write_text(f"_base_ = ['{ROOT_CONFIG}', '{STRIDE_ADJUSTED}']\n"
                       "model = dict(rpn_head=dict(anchor_generator=_base_._rpn_anchor_generator))\n")
    return Config.fromfile(str(variant))


def test_mask_rcnn_with_stride_adjusted_anchors_trains_and_predicts(tmp_path):
    """The fragment in a variant of the root config: RPN on P2..P6 with 6 anchors per location, RoI on P2..P5."""
    from helpers import shrink_for_cpu
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    cfg = _variant_cfg(tmp_path)
    assert 'scales' not in cfg.model.rpn_head.anchor_generator          # _delete_ dropped the stock keys
    assert cfg.model.neck.num_outs == len(cfg.model.rpn_head.anchor_generator.strides) == 5
    # ResNet-18, 100 proposals, 64 RoIs keep the test fast; the RPN, anchors and RoI heads are the root config's;
    # 5 detections: masks of 1000 random detections would take a minute
    shrink_for_cpu(cfg, iters=None, max_dets=5)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    rpn = model.rpn_head
    assert isinstance(rpn.prior_generator, PerLevelAnchorGenerator)
    assert rpn.num_base_priors == 6 and rpn.rpn_cls.out_channels == 6 and rpn.rpn_reg.out_channels == 24
    assert model.roi_head.bbox_roi_extractor.featmap_strides == [4, 8, 16, 32]

    h, w = 96, 128
    mask = np.zeros((1, h, w), np.uint8)
    mask[0, 20:40, 30:70] = 1
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[30., 20., 70., 40.]]), labels=torch.tensor([7]),
                                       masks=BitmapMasks(mask, h, w))
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, h, w), dtype=torch.uint8)],
                                        data_samples=[sample]), training=True)
    feats = model.extract_feat(data['inputs'])
    assert len(feats) == 5
    cls_scores, bbox_preds = rpn(feats)
    assert [tuple(c.shape[-2:]) for c in cls_scores] == [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]
    assert all(c.shape[1] == 6 and b.shape[1] == 24 for c, b in zip(cls_scores, bbox_preds))
    losses = model.loss(data['inputs'], data['data_samples'])
    values = [torch.stack(v).sum() if isinstance(v, list) else v for k, v in losses.items() if 'loss' in k]
    assert all(torch.isfinite(v).all() for v in values)
    assert sum(v.item() for v in losses['loss_rpn_cls']) > 0
    model.eval()
    with torch.no_grad():
        results = model.predict(data['inputs'], data['data_samples'])
    pred = results[0].pred_instances
    assert 0 < len(pred) <= 5 and pred.bboxes.shape[1] == 4 and pred.masks.shape == (len(pred), h, w)
