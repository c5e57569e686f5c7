"""Every config of the project loads, builds with random init and trains one step (configs/attention/: in
tests/test_attention_family.py, on a real image); the CBAM family composes.

The configs are globbed at collection time, so configs added later (cells, COCO subsets, recipe variants) are
covered without touching this file.
"""
import copy

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, load_config

CONFIG_DIR = REPO_ROOT / 'configs'
# model configs: configs/hpo/ holds search spaces for tools/hpo.py (python modules, tested in tests/test_hpo.py)
CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py') if not {'_base_', 'hpo'} & set(p.relative_to(CONFIG_DIR).parts))
# configs/attention/* build and train one step on a real image in tests/test_attention_family.py (with checks of
# their new branches' gradients): not restated here
ONE_STEP_CONFIGS = [p for p in CONFIGS if p.relative_to(CONFIG_DIR).parts[0] != 'attention']

ANCHORS_STEP = 'configs/mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py'
ANCHORS_FRAGMENT = 'configs/_base_/anchors/isaid_stride_adjusted.py'
ROOT = 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'
R101 = 'configs/mask_rcnn/mask-rcnn_r101_fpn_anchors_1x_isaid.py'
FULL = 'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'
R50_CBAM = 'configs/cbam/mask-rcnn_r50-cbam_fpn_anchors_1x_isaid.py'
R50_ATTN_FPN = 'configs/cbam/mask-rcnn_r50_attn-fpn_anchors_1x_isaid.py'
R50_BOTH = 'configs/cbam/mask-rcnn_r50-cbam_attn-fpn_anchors_1x_isaid.py'
# ablation -> the dotted keys of the one part of cfg.model it drops (every other key must equal the full model's)
ABLATIONS = {
    'configs/cbam/mask-rcnn_effb0_attn-fpn_anchors_1x_isaid.py': {'backbone.use_cbam': False},
    'configs/cbam/mask-rcnn_effb0-cbam_fpn_anchors_1x_isaid.py': {'neck.type': 'FPN', 'neck.cbam_reduction': None},
    'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_stock-heads_anchors_1x_isaid.py': {
        'roi_head.bbox_head.type': 'Shared2FCBBoxHead',
        'roi_head.bbox_head.dropout_p': None,
        'roi_head.mask_head.type': 'FCNMaskHead'
    },
}

# The cells attention variants, each the cells R50 + parts of configs/_base_/models/cbam_parts.py (+ the plateau
# recipe): variant -> {dotted key of the whole config: its value there, None where the key is gone}. A dict value
# compares the whole sub-dict (the full model's backbone replaces ResNet's: no ResNet key may survive).
# Anchors, dataset, classes, schedule length are absent here: they must stay the cells R50's.
CELLS_R50 = 'configs/cells/mask-rcnn_r50_fpn_1x_cells.py'
CELLS_FULL = 'configs/cells/mask-rcnn_effb0-cbam_attn-fpn_1x_cells.py'
FRAGMENTS = sorted(p for kind in ('models', 'recipes', 'anchors') for p in (CONFIG_DIR / '_base_' / kind).glob('*.py'))
_CBAM_PLUGINS = {
    'model.backbone.plugins': [
        dict(cfg=dict(type='CBAM', reduction=16), stages=(False, True, True, True), position='after_conv3')
    ]
}
_ATTENTION_FPN = {'model.neck.type': 'AttentionFPN', 'model.neck.cbam_reduction': 16}
CELLS_VARIANTS = {
    'configs/cells/mask-rcnn_r50-cbam_fpn_1x_cells.py': _CBAM_PLUGINS,
    'configs/cells/mask-rcnn_r50_attn-fpn_1x_cells.py': _ATTENTION_FPN,
    'configs/cells/mask-rcnn_r50-cbam_attn-fpn_1x_cells.py': {**_CBAM_PLUGINS, **_ATTENTION_FPN},
    CELLS_FULL: {
        'model.backbone': dict(type='TimmCBAMBackbone', model_name='efficientnet_b0', out_indices=(1, 2, 3, 4),
                               pretrained=True, use_cbam=True, cbam_reduction=16, norm_eval=True),
        **_ATTENTION_FPN,
        'model.neck.in_channels': [24, 40, 112, 320],
        'model.roi_head.bbox_head.type': 'RegularizedShared2FCBBoxHead',
        'model.roi_head.bbox_head.dropout_p': 0.3,
        'model.roi_head.mask_head.type': 'ResidualFCNMaskHead',
        'optim_wrapper.optimizer.type': 'AdamW',
        'optim_wrapper.optimizer.lr': 3e-4,
        'optim_wrapper.optimizer.weight_decay': 1e-3,
        'optim_wrapper.optimizer.momentum': None,
        'optim_wrapper.paramwise_cfg.custom_keys.roi_head.lr_mult': 0.25,
        'optim_wrapper.clip_grad.max_norm': 1.0,
        'optim_wrapper.clip_grad.norm_type': 2,
        'param_scheduler': [
            dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
            dict(type='ReduceOnPlateauLR', monitor='coco/segm_mAP_50', rule='greater', factor=0.5, patience=3,
                 min_value=1e-6, by_epoch=True)
        ],
    },
}


pytestmark = pytest.mark.usefixtures('one_torch_thread')
# model config -> the config whose model trained one step in this session (a config with the same model, e.g. a
# recipe variant, is not stepped again)
_STEPPED = {}


def _load(path, resolved=True):
    """The config at ``path`` (relative to the repository) as the tools see it (private names dropped; raw with
    ``resolved=False``), parsed once per session (tests/helpers.py); a copy, free to modify."""
    return load_config(path, resolved)


def _flatten(d, prefix='', leaves=()):
    """Nested dict -> {dotted key: leaf value} (lists and the dotted keys in ``leaves`` are leaves)."""
    out = {}
    for k, v in d.items():
        key = f'{prefix}{k}'
        if isinstance(v, dict) and key not in leaves:
            out.update(_flatten(v, key + '.', leaves))
        else:
            out[key] = v
    return out


def _batch(num_classes, num_images=2, size=128):
    """mmdet's own test batch (``mmdet.testing.demo_mm_inputs``): ``num_images`` random uint8 images of ``size`` x
    ``size`` with 2-3 random boxes and their masks each (fixed seed)."""
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=num_images, image_shapes=(3, size, size),
                          num_items=[2 + i % 2 for i in range(num_images)], num_classes=num_classes, with_mask=True)


@pytest.mark.parametrize('config', ONE_STEP_CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in ONE_STEP_CONFIGS])
def test_config_builds_and_trains_one_step(config):
    """Load, build with random init, one ``loss`` + backward on 2 images of 128 px: finite losses, gradients in
    the backbone.

    Only the amount of training work is cut (tests/helpers.py ``shrink_for_cpu``: 100 proposals, 16 sampled RoIs per
    image, so at most 4 positives reach the mask head); the model, its backbone included, is the config's.
    ``init_weights`` is left to the runner (covered by tests/test_train_variants.py): mmengine's init bookkeeping
    alone takes seconds per model.
    """
    from helpers import shrink_for_cpu
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    cfg = shrink_for_cpu(_load(config), resnet_depth=None, rois=16, iters=None)
    model_cfg = cfg.model
    assert 'Pretrained' not in str(model_cfg)
    key = str(model_cfg.to_dict())
    if key in _STEPPED:  # e.g. the recipe variants: another schedule or pipeline, the same model
        pytest.skip(f'the same model as {_STEPPED[key]}, which trained one step in this session')
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.train()

    num_classes = model.roi_head.bbox_head.num_classes
    data = model.data_preprocessor(_batch(num_classes), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    loss, log_vars = model.parse_losses(losses)
    for name, value in log_vars.items():
        assert np.isfinite(float(torch.as_tensor(value).detach())), f'{config.name}: {name} = {value}'
    assert loss.requires_grad
    loss.backward()

    backbone_grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert backbone_grads and all(g is not None for g in backbone_grads), 'no gradient reached the backbone'
    assert all(torch.isfinite(g).all() for g in backbone_grads)
    assert any(g.abs().sum() > 0 for g in backbone_grads)
    _STEPPED[key] = config.relative_to(CONFIG_DIR)


def test_configs_are_found():
    names = {str(p.relative_to(REPO_ROOT)) for p in CONFIGS}
    assert {ROOT, ANCHORS_STEP, R101, FULL, R50_CBAM, R50_ATTN_FPN, R50_BOTH, *ABLATIONS} <= names
    assert {CELLS_R50, *CELLS_VARIANTS} <= names


def test_fragments_define_only_private_names():
    """A fragment hands named parts to configs through ``_base_``; every name it defines is private (``_name``), so
    ``read_config`` drops it and no fragment part leaks into a resolved config."""
    assert len(FRAGMENTS) >= 10
    for fragment in FRAGMENTS:
        names = set(_load(fragment, resolved=False).keys())
        assert names and all(n.startswith('_') for n in names), (fragment, names)


@pytest.mark.parametrize('config', CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_resolved_config_holds_no_private_name(config):
    raw = _load(config, resolved=False)
    resolved = _load(config)
    leaked = [k for k in resolved if k.startswith('_')]
    assert not leaked, leaked
    # what was dropped is exactly the fragments' parts; everything else is kept
    assert set(raw.keys()) - set(resolved.keys()) == {k for k in raw if k.startswith('_')}


def test_anchors_step_composes():
    root, step = _load(ROOT).model, _load(ANCHORS_STEP).model
    fragment = _load(ANCHORS_FRAGMENT, resolved=False)  # the fragment itself: its private part kept
    assert root.train_cfg.rpn.assigner.pos_iou_thr == 0.7
    assert step.train_cfg.rpn.assigner.pos_iou_thr == 0.5
    # the fragment's generator replaces the stock one entirely (no stale `scales` / `octave_base_scale` key)
    expected = {k: v for k, v in fragment._rpn_anchor_generator.items() if k != '_delete_'}
    assert step.rpn_head.anchor_generator.to_dict() == expected
    assert step.rpn_head.anchor_generator.type == 'PerLevelAnchorGenerator'
    assert step.rpn_head.anchor_generator.sizes[0] == [8, 16]
    # levels agree: one anchor stride per FPN output, RoI strides a prefix of them
    strides = step.rpn_head.anchor_generator.strides
    assert len(strides) == step.neck.num_outs
    roi_strides = step.roi_head.bbox_roi_extractor.featmap_strides
    assert strides[:len(roi_strides)] == roi_strides == step.roi_head.mask_roi_extractor.featmap_strides
    # nothing else changed
    diff = {k for k, v in _flatten(step.to_dict()).items() if _flatten(root.to_dict()).get(k, object()) != v}
    assert {k.split('.')[0] for k in diff} == {'rpn_head', 'train_cfg'}
    assert _load(R101).model.backbone.depth == 101
    assert _flatten(_load(R101).model.rpn_head.to_dict()) == _flatten(step.rpn_head.to_dict())


def test_cbam_steps_compose():
    step = _load(ANCHORS_STEP).model
    cbam, attn, both = _load(R50_CBAM).model, _load(R50_ATTN_FPN).model, _load(R50_BOTH).model
    assert cbam.backbone.plugins[0].cfg.type == 'CBAM'
    # C3-C5 only: the parent freezes stage 1 (frozen_stages=1), where a CBAM would never train
    assert cbam.backbone.plugins[0].stages == (False, True, True, True) and cbam.backbone.frozen_stages == 1
    assert cbam.neck == step.neck
    assert attn.neck.type == 'AttentionFPN' and 'plugins' not in attn.backbone
    assert both.backbone == cbam.backbone and both.neck == attn.neck
    for model in (cbam, attn, both):
        assert model.rpn_head == step.rpn_head and model.train_cfg == step.train_cfg


def test_full_model_composes():
    cfg = _load(FULL)
    model = cfg.model
    assert model.backbone.type == 'TimmCBAMBackbone'
    assert model.backbone.model_name == 'efficientnet_b0'
    assert model.backbone.pretrained is True and model.backbone.use_cbam is True
    assert 'depth' not in model.backbone  # ResNet's arguments are gone (_delete_)
    assert model.neck.type == 'AttentionFPN' and model.neck.in_channels == [24, 40, 112, 320]
    assert model.roi_head.bbox_head.type == 'RegularizedShared2FCBBoxHead'
    assert model.roi_head.bbox_head.dropout_p == 0.3
    assert model.roi_head.mask_head.type == 'ResidualFCNMaskHead'
    # inherits the anchors step
    step = _load(ANCHORS_STEP).model
    assert model.rpn_head == step.rpn_head and model.train_cfg == step.train_cfg
    # the recipe
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.to_dict() == dict(type='AdamW', lr=3e-4, weight_decay=1e-3)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {'roi_head': dict(lr_mult=0.25)}
    assert cfg.optim_wrapper.clip_grad.max_norm == 1.0
    plateau = [s for s in cfg.param_scheduler if s.type == 'ReduceOnPlateauLR']
    assert len(plateau) == 1
    assert plateau[0].monitor == 'coco/segm_mAP_50' and plateau[0].rule == 'greater'
    assert (plateau[0].factor, plateau[0].patience, plateau[0].min_value) == (0.5, 3, 1e-6)
    assert cfg.train_cfg.val_interval == 1  # the plateau scheduler reads the metrics of every epoch


def test_full_model_recipe_builds():
    """The optimizer wrapper and schedulers of the full model build: AdamW with roi_head at 0.25x lr."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS

    from mmdet_custom.analysis.model_stats import disable_pretrained

    register_all_modules(init_default_scope=True)
    cfg = _load(FULL)
    model = MODELS.build(disable_pretrained(cfg.model))
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert type(wrapper.optimizer).__name__ == 'AdamW'
    roi_ids = {id(p) for p in model.roi_head.parameters()}
    for group in wrapper.optimizer.param_groups:
        expected = 3e-4 * (0.25 if all(id(p) in roi_ids for p in group['params']) else 1.0)
        assert group['lr'] == pytest.approx(expected)
        assert group['weight_decay'] == pytest.approx(1e-3)
    assert any(all(id(p) in roi_ids for p in g['params']) for g in wrapper.optimizer.param_groups)
    schedulers = [
        PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper)) for s in copy.deepcopy(cfg.param_scheduler)
    ]
    assert [type(s).__name__ for s in schedulers] == ['LinearLR', 'ReduceOnPlateauLR']

    # the plateau scheduler reads CocoMetric's key and halves every group's lr after 4 validations without gain
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    plateau = PARAM_SCHEDULERS.build(dict(cfg.param_scheduler[1], optimizer=wrapper))
    lrs = [g['lr'] for g in wrapper.optimizer.param_groups]
    for _epoch in range(4):  # best at epoch 0, then 3 epochs without gain (= patience)
        plateau.step({'coco/segm_mAP_50': 0.2, 'coco/segm_mAP': 0.1})
    assert [g['lr'] for g in wrapper.optimizer.param_groups] == lrs
    plateau.step({'coco/segm_mAP_50': 0.2})
    assert [g['lr'] for g in wrapper.optimizer.param_groups] == pytest.approx([0.5 * lr for lr in lrs])
    with pytest.raises(KeyError):
        plateau.step({'coco/bbox_mAP_50': 0.2})


@pytest.mark.parametrize('ablation', sorted(ABLATIONS))
def test_ablation_differs_in_one_part(ablation):
    full = _flatten(_load(FULL).model.to_dict())
    abl = _flatten(_load(ablation).model.to_dict())
    changes = {k: abl.get(k) for k in full.keys() | abl.keys() if full.get(k, None) != abl.get(k, None)}
    assert changes == ABLATIONS[ablation]
    cfg_full, cfg_abl = _load(FULL), _load(ablation)
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader'):
        assert cfg_abl[key] == cfg_full[key], key


@pytest.mark.parametrize('variant', sorted(CELLS_VARIANTS))
def test_cells_variant_differs_in_its_parts(variant):
    """Each cells attention variant is the cells R50 plus exactly the parts it swaps in (backbone, neck, heads,
    optimizer, lr schedule); everything else, the stock anchors included, is the cells R50's."""
    expected = CELLS_VARIANTS[variant]
    leaves = {k for k, v in expected.items() if isinstance(v, dict)}
    base = _flatten(_load(CELLS_R50).to_dict(), leaves=leaves)
    cfg = _flatten(_load(variant).to_dict(), leaves=leaves)
    changes = {
        k: cfg.get(k)
        for k in base.keys() | cfg.keys()
        if base.get(k) != cfg.get(k)
    }
    assert changes == expected


def test_cells_full_model_reuses_isaid_full_model_parts():
    """The cells full model and the iSAID full model share backbone, neck, heads and recipe; they differ in the
    dataset, the classes and the anchors (cells keep the stock ones)."""
    cells, isaid = _load(CELLS_FULL), _load(FULL)
    assert cells.model.backbone == isaid.model.backbone and cells.model.neck == isaid.model.neck
    for head in ('bbox_head', 'mask_head'):
        assert _flatten(cells.model.roi_head[head].to_dict()) == dict(
            _flatten(isaid.model.roi_head[head].to_dict()), num_classes=4)
    assert cells.optim_wrapper == isaid.optim_wrapper and cells.param_scheduler == isaid.param_scheduler
    assert cells.train_cfg.val_interval == 1
    assert cells.model.rpn_head.anchor_generator.type == 'AnchorGenerator'
    assert isaid.model.rpn_head.anchor_generator.type == 'PerLevelAnchorGenerator'


def test_misspelt_keys_inside_a_config_are_refused_naming_file_and_key(tmp_path):
    """A misspelt model.test_cfg / train_cfg key (ignored by mmdet) and a misspelt head or loop argument (a bare
    TypeError from the registry) each end in one ConfigKeyError naming the config file and the key's path."""
    from mmengine.config import Config
    from mmengine.registry import LOOPS

    from mmdet_custom.models.builder import build_model
    from mmdet_custom.utils.config import ConfigKeyError, config_build_errors, read_config
    smoke = REPO_ROOT / 'configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py'
    child = tmp_path / 'typo.py'
    child.write_text(f"_base_ = '{smoke}'\nmodel = dict(test_cfg=dict(rcnn=dict(max_per_imgs=1000)))\n")
    with pytest.raises(ConfigKeyError, match=r"typo\.py: model\.test_cfg\.rcnn\.max_per_imgs is not a setting mmdet "
                                             r"reads .*Did you mean 'max_per_img'\?"):
        read_config(str(child))
    child.write_text(f"_base_ = '{smoke}'\nmodel = dict(train_cfg=dict(rpn=dict(allowed_boarder=-1)))\n")
    with pytest.raises(ConfigKeyError, match=r'model\.train_cfg\.rpn\.allowed_boarder'):
        read_config(str(child))
    child.write_text(f"_base_ = '{smoke}'\nmodel = dict(roi_head=dict(bbox_head=dict(num_clases=15)))\n")
    with pytest.raises(ConfigKeyError, match=r"typo\.py: model\.roi_head\.bbox_head\.num_clases: BBoxHead takes no "
                                             r"argument 'num_clases'"):
        build_model(str(child))
    cfg = Config(dict(train_cfg=dict(type='IterBasedTrainLoop', max_iter=2)), filename=str(child))
    with pytest.raises(ConfigKeyError, match=r"typo\.py: train_cfg\.max_iter: IterBasedTrainLoop takes no argument"):
        with config_build_errors(cfg):
            LOOPS.build(cfg.train_cfg, default_args=dict(runner=None, dataloader=None))
    with pytest.raises(TypeError, match='other'), config_build_errors(cfg):  # not a config key: unchanged
        raise TypeError("f.__init__() got an unexpected keyword argument 'other'")
