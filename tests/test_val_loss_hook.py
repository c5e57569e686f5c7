"""ValLossHook: the training losses on the val split, reported as val/loss* metrics beside AP."""
import json
from pathlib import Path

import pytest
import torch
from mmdet.registry import DATASETS
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from recipe_tools_helpers import shared_smoke_patches, tiny_cfg

import mmdet_custom.register  # noqa: F401  (registers ValLossHook)
from mmdet_custom.engine.hooks.val_loss_hook import ValLossConfigError, loss_pipeline


@pytest.fixture(scope='module')
def smoke_patches(tmp_path_factory):
    return shared_smoke_patches(tmp_path_factory)


def test_loss_pipeline_puts_annotations_in_the_input_frame():
    test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
                     dict(type='LoadAnnotations', with_bbox=True, with_mask=True), dict(type='PackDetInputs')]
    assert [t['type'] for t in loss_pipeline(test_pipeline)] == [
        'LoadImageFromFile', 'LoadAnnotations', 'Resize', 'PackDetInputs']
    assert [t['type'] for t in test_pipeline][2] == 'LoadAnnotations'  # the config itself is not changed
    with pytest.raises(ValLossConfigError, match='LoadAnnotations'):
        loss_pipeline([dict(type='LoadImageFromFile'), dict(type='PackDetInputs')])


def test_logged_val_losses_equal_a_manual_computation(smoke_patches, tmp_path, one_torch_thread):
    # 128 px smoke images shown to the network at 96 px: the test pipeline's annotations (loaded after Resize)
    # would be in another frame than the image; the hook's must not be
    cfg = tiny_cfg(smoke_patches, tmp_path / 'work', scale=(96, 96))
    cfg.custom_hooks = [dict(type='ValLossHook', seed=7)]
    # mmengine keeps one Visualizer per name in a process: a run built earlier in this session would own it
    cfg.visualizer.name = f'visualizer_{tmp_path.name}'
    runner = Runner.from_cfg(cfg)
    metrics = runner.val()
    terms = {k: v for k, v in metrics.items() if k.startswith('val/loss_')}
    assert {'val/loss_rpn_cls', 'val/loss_rpn_bbox', 'val/loss_cls', 'val/loss_bbox', 'val/loss_mask'} <= set(terms)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    assert metrics['val/loss'] == pytest.approx(sum(terms.values()), rel=1e-6)
    assert 'coco/segm_mAP' in metrics  # beside AP, not instead of it

    # the same model, in the mode validation left it in (eval), on the one val image with annotations loaded
    # before the resize, the samplers seeded as the hook seeds its first batch
    model = runner.model
    assert not model.training
    ds_cfg = cfg.val_dataloader.dataset.copy()
    # the config's own annotation loader (polygon masks), as the hook reuses the config's pipeline
    ds_cfg.pipeline = [dict(type='LoadImageFromFile'),
                       dict(type='LoadCompactAnnotations', with_bbox=True, with_mask=True),
                       dict(type='Resize', scale=(96, 96), keep_ratio=True),
                       dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                             'scale_factor'))]
    dataset = DATASETS.build(ds_cfg)
    assert len(dataset) == 1
    batch = pseudo_collate([dataset[0]])
    masks = batch['data_samples'][0].gt_instances.masks
    assert (masks.height, masks.width) == (96, 96)
    torch.manual_seed(7)
    with torch.no_grad():
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
    manual = {}
    for name, value in losses.items():
        value = sum(v.mean() for v in value) if isinstance(value, (list, tuple)) else value.mean()
        manual[f'val/{name}'] = float(value)
    for name, value in terms.items():
        assert value == pytest.approx(manual[name], rel=1e-5, abs=1e-6), name
    assert metrics['val/loss'] == pytest.approx(sum(v for k, v in manual.items() if 'loss' in k), rel=1e-5)

    # logged: message hub (what LoggerHook prints) and the scalars json the visualizer wrote
    assert runner.message_hub.get_scalar('val/val/loss').current() == pytest.approx(metrics['val/loss'])
    logged = [json.loads(line) for line in Path(runner.log_dir, 'vis_data', 'scalars.json').read_text().splitlines()]
    assert logged[-1]['val/loss'] == pytest.approx(metrics['val/loss'], rel=1e-6)

    # validation again: same weights, same loss (the seeded samplers) ...
    assert runner.val()['val/loss'] == pytest.approx(metrics['val/loss'], rel=1e-6)
    # ... and the computation leaves the global random stream (training's) where it was
    hook = next(h for h in runner.hooks if type(h).__name__ == 'ValLossHook')
    state = torch.get_rng_state()
    assert hook.compute(model, [batch])['val/loss'] == pytest.approx(metrics['val/loss'], rel=1e-6)
    assert torch.equal(torch.get_rng_state(), state)
