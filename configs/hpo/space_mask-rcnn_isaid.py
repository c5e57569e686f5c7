# Search space of the recipe search (tools/hpo.py) for the Mask R-CNN iSAID configs, e.g.
#   python tools/hpo.py configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py --space configs/hpo/space_mask-rcnn_isaid.py \
#       --trials 40 --storage postgresql://optuna:PASSWORD@db-host/optuna --study-name r50-isaid --n-workers 2
# space(trial, cfg) returns {config key: value}; keys as in --cfg-options (a leading + adds a key the config lacks),
# dict values are merged into the config's dict (`_delete_=True` replaces it), lists replace lists. Every choice goes
# through trial.suggest_* so that Optuna's sampler, pruner and plots see it. `cfg` is a copy of the base config.
import copy
import os.path as osp

from mmengine.config import Config

BASE = osp.join(osp.dirname(osp.abspath(__file__)), '..', '_base_')
# RPN anchor sets to choose from: 'stock' keeps the config's own; add the fragments tools/anchor_search.py writes.
ANCHOR_FRAGMENTS = {
    'isaid_stride_adjusted': osp.join(BASE, 'anchors', 'isaid_stride_adjusted.py'),
}
AUGMENTATION = osp.join(BASE, 'recipes', 'aug_flip-hv_color_cutout.py')


def _anchor_generator(fragment):
    """The anchor_generator of a fragment: the stride-adjusted set's ``_rpn_anchor_generator`` or the
    ``_anchors_<study>.rpn_head.anchor_generator`` that tools/anchor_search.py writes."""
    part = Config.fromfile(fragment)
    if '_rpn_anchor_generator' in part:
        return part._rpn_anchor_generator
    return next(v for k, v in part.items() if k.startswith('_anchors_')).rpn_head.anchor_generator


def space(trial, cfg):
    values = {
        # mmdet's 1x schedule: lr 0.02 for 16 images per step (--auto-scale-lr rescales the chosen lr to the batch)
        'optim_wrapper.optimizer.lr': trial.suggest_float('lr', 0.005, 0.04, log=True),
        'optim_wrapper.optimizer.weight_decay': trial.suggest_float('weight_decay', 1e-5, 1e-3, log=True),
        # the RoI heads learn at lr x lr_mult (mmengine's DefaultOptimWrapperConstructor, custom_keys)
        '+optim_wrapper.paramwise_cfg': dict(custom_keys={
            'roi_head': dict(lr_mult=trial.suggest_float('roi_head_lr_mult', 0.5, 2.0, log=True))}),
        # an anchor is an RPN positive above this IoU with a ground-truth box (mmdet: 0.7)
        'model.train_cfg.rpn.assigner.pos_iou_thr': trial.suggest_float('rpn_pos_iou_thr', 0.5, 0.8),
    }
    anchors = trial.suggest_categorical('anchors', ['stock', *ANCHOR_FRAGMENTS])
    if anchors != 'stock':
        values['model.rpn_head.anchor_generator'] = _anchor_generator(ANCHOR_FRAGMENTS[anchors])
    if trial.suggest_categorical('augmentation', [False, True]):
        # flips in both axes, colour jitter and CutOut in place of the horizontal flip
        pipeline = copy.deepcopy(list(cfg.train_dataloader.dataset.pipeline))
        flip = next(i for i, t in enumerate(pipeline) if t['type'] == 'RandomFlip')
        pipeline[flip:flip + 1] = Config.fromfile(AUGMENTATION)._aug_flip_hv_color_cutout
        values['train_dataloader.dataset.pipeline'] = pipeline
    return values
