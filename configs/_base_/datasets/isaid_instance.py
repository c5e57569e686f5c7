# iSAID patches written by tools/dataset_converters/isaid.py (800x800 windows, overlap 200):
#   data/isaid/{train,val,test}/images/Pxxxx_{y0}_{y1}_{x0}_{x1}.png
#   data/isaid/annotations/instances_{train,val,test}.json   (15 classes by name, ids 1..15 in devkit order)
# The dataset type keeps the devkit's class names (mmdet's iSAIDDataset says 'store_tank' and drops storage tanks)
# and matches categories by name, so the devkit's own instancesonly_filtered_<split>.json reads correctly too.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

dataset_type = 'ISAIDInstanceDataset'
data_root = 'data/isaid/'
backend_args = None

# Masks stay polygons (LoadCompactAnnotations, mmdet's LoadAnnotations with poly2mask=False that never drops an RLE
# mask): a bitmap per object costs 640 KB at 800x800, ~0.8 GB on a dense patch of 1,239 objects.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadCompactAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(800, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(800, 800), keep_ratio=True),
    dict(type='LoadCompactAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# loaders, samplers and batch sizes are mmdet's coco_instance.py; the datasets differ
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/images/'),
        # the converter keeps up to --max-empty-fraction empty train patches on purpose (background examples)
        filter_cfg=dict(filter_empty_gt=False, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/images/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# The official iSAID evaluation (the devkit's cocoeval.py): maxDets (1, 10, 1000) and iSAID's size bands small
# [10^2, 144^2], medium [144^2, 512^2], large [512^2, 1e10] px^2, every AP at 1000 detections; AR@1/10/1000 too.
# Categories are matched by name. protocol='coco' gives COCO's 32^2 / 96^2 bands instead (not comparable with papers).
# classwise=True prints the per-class table.
# backend='faster-coco-eval': the same numbers as pycocotools (checked on the devkit's val patches at 1000 detections
# per image, tests/test_eval_backend.py), 6-13x faster there (make bench-eval); backend='pycocotools' is the reference.
val_evaluator = dict(
    type='MaxDetsCocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    classwise=True,
    protocol='isaid',
    backend='faster-coco-eval')
test_evaluator = val_evaluator
