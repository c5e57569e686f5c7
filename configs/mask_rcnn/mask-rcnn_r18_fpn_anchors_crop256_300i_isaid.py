# The real-data demo (`make demo DATA=<raw iSAID dir>`): the smoke config's CPU-sized model (ResNet-18, 128-channel
# FPN, random init, 300 iterations) at iSAID's own scale. The smoke config shrinks 800 px patches to 256 px, which
# puts vehicles (~20x7 px after the shrink) below every stock anchor: on the shared samples its anchors reach no
# training box at IoU 0.3 (exact recall 0.000 of 427; loss_rpn_bbox 0 throughout). Here the patches keep their scale
# and training sees random 256x256 crops of them (the smoke config's input size, the objects at their own size), two
# per step (dense real patches give many more positive RoIs than the smoke shapes), and the RPN has the anchors
# step's stride-adjusted anchors with positives from IoU 0.5 (recall@0.5 0.707 of those boxes).
_base_ = ['./mask-rcnn_r18_fpn_300i_isaid-smoke.py', '../_base_/anchors/isaid_stride_adjusted.py']

data_root = 'work_dirs/demo/data/'
image_scale = (800, 800)   # the patch size: a no-op on 800 px patches, as in the iSAID root config
crop_size = (256, 256)

model = dict(
    rpn_head=dict(anchor_generator=_base_._rpn_anchor_generator),
    train_cfg=dict(rpn=dict(assigner=dict(pos_iou_thr=0.5))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadCompactAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    # crops without an object are redrawn (allow_negative_crop=False): every step has RPN positives
    dict(type='RandomCrop', crop_size=crop_size, allow_negative_crop=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadCompactAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# InfiniteSampler: a real train set of a few patches ends an epoch every couple of steps; mmengine's default sampler
# then restarts the loader and its worker waits ~1 s per step for the first batch (measured: data_time 1.03 s)
train_dataloader = dict(batch_size=2, sampler=dict(type='InfiniteSampler'),
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
