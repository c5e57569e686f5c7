# The root recipe with flips in both axes, brightness/contrast jitter and CutOut, an lr halved when segm AP50
# stalls, and skipping of NaN/Inf-loss updates.
# Fragments only define named pieces: mmengine forbids a key defined by two bases, so they are plugged in here.
_base_ = [
    '../mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py',
    '../_base_/recipes/aug_flip-hv_color_cutout.py',
    '../_base_/recipes/plateau_segm-ap50.py',
    '../_base_/recipes/nan_skip.py',
]

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=_base_.backend_args),
    dict(type='LoadCompactAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(800, 800), keep_ratio=True),
    *_base_._aug_flip_hv_color_cutout,  # replaces the parent's horizontal-only RandomFlip
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
param_scheduler = _base_._plateau_segm_ap50_param_scheduler
custom_hooks = [_base_._nan_skip_hook]
