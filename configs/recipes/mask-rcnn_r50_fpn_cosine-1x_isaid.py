# The root recipe with linear warmup + cosine lr, skipping of NaN/Inf-loss updates, early stopping on segm mAP,
# TensorBoard logging, and Dice / mean mask IoU reported beside COCO AP.
# Fragments only define named pieces: mmengine forbids a key defined by two bases, so they are plugged in here.
_base_ = [
    '../mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py',
    '../_base_/recipes/warmup_cosine.py',
    '../_base_/recipes/nan_skip.py',
    '../_base_/recipes/early_stopping.py',
    '../_base_/recipes/tensorboard.py',
    '../_base_/recipes/dice_iou_metric.py',
]

param_scheduler = _base_._warmup_cosine_param_scheduler
custom_hooks = [_base_._nan_skip_hook, _base_._early_stopping_hook]
visualizer = dict(vis_backends=_base_._tensorboard_vis_backends)
val_evaluator = [_base_.val_evaluator, _base_._dice_iou_metric]
test_evaluator = val_evaluator
