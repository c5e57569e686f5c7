# Microscopy cells written by tools/dataset_converters/cells.py (DSB2018-style folders, up to 4 classes):
#   data/cells/images/<id>.png                        8-bit RGB (16-bit sources stretched per image)
#   data/cells/annotations/instances_{train,val}.json  RLE masks, categories class1..class4 (ids 1..4)
#   data/cells/test/<stem>.png + annotations/image_info_test.json   (images only, ids from the name->id mapping)
# Images keep their native resolution (256x256 to ~1000 px): no Resize; DetDataPreprocessor pads each batch to a
# multiple of 32. Cells have no preferred orientation, so both flips are used.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

# categories matched by name (mmdet's CocoDataset follows the json's category order); a train json without
# annotations of these classes is refused at start instead of training on nothing
dataset_type = 'NamedCocoDataset'
data_root = 'data/cells/'
classes = ('class1', 'class2', 'class3', 'class4')
metainfo = dict(classes=classes)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    # an identity resize: it only records scale_factor (1, 1), which the mask head needs to paste masks back
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    # If you don't have a gt annotation (the test set), delete the pipeline
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
# loaders, samplers and batch sizes (2 for training) are mmdet's coco_instance.py; the datasets differ
train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        metainfo=metainfo,
        data_root=data_root,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='images/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        metainfo=metainfo,
        data_root=data_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='images/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='MaxDetsCocoMetric',  # mAP over all proposal_nums[-1] detections, not pycocotools' fixed 100
    ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# Inference on the unlabelled test set (image ids from test_image_name_to_ids.json), e.g. in a derived config:
# test_dataloader = dict(
#     dataset=dict(
#         ann_file='annotations/image_info_test.json',
#         data_prefix=dict(img='test/'),
#         pipeline=[
#             dict(type='LoadImageFromFile', backend_args=backend_args),
#             dict(type='Resize', scale_factor=1.0, keep_ratio=True),
#             dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
#         ]))
# test_evaluator = dict(
#     type='CocoMetric', metric=['bbox', 'segm'], format_only=True,
#     ann_file=data_root + 'annotations/image_info_test.json', outfile_prefix='./work_dirs/cells/test')
