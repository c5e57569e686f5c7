# The `make demo` job: a CPU-sized Mask R-CNN (ResNet-18, random init, 256 px input, 300 iterations) trained and
# tested on the generated smoke dataset (see mmdet_custom/converters/smoke.py), or on real iSAID with
# `make demo DATA=<raw iSAID dir>`. It inherits the baseline and states only what it changes.
_base_ = './mask-rcnn_r50_fpn_1x_isaid.py'

data_root = 'work_dirs/demo/data/'
image_scale = (256, 256)

model = dict(
    # a smaller backbone and no ImageNet weights: the demo must run offline in minutes on 2 CPU cores
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    # 128-channel FPN and heads: at 256 px the FPN and RPN 3x3 convs are most of the FLOPs of a step
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=128)),
    # fewer proposals and sampled RoIs: on a CPU the RoI heads (mask head ~0.5 GFLOPs per RoI) dominate a step
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCompactAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadCompactAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=300, val_interval=300)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=300, milestones=[240], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.02), clip_grad=dict(max_norm=10.0))
default_hooks = dict(
    logger=dict(interval=25, log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=300, max_keep_ckpts=1, save_best=None))
log_processor = dict(by_epoch=False)
