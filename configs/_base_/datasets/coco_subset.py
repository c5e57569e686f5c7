# COCO restricted to 4 classes by tools/dataset_converters/coco_subset.py (category ids 1..4 in this order):
#   data/coco/annotations/instances_{train,val}2017_subset.json, images in data/coco/{train,val}2017/
# Everything else (pipelines, 1333x800 resize, loaders, CocoMetric) is mmdet's coco_instance.py.
_base_ = 'mmdet::_base_/datasets/coco_instance.py'

data_root = 'data/coco/'
classes = ('person', 'cat', 'sports ball', 'book')
metainfo = dict(classes=classes)

train_dataloader = dict(
    dataset=dict(metainfo=metainfo, ann_file='annotations/instances_train2017_subset.json'))
val_dataloader = dict(
    dataset=dict(metainfo=metainfo, ann_file='annotations/instances_val2017_subset.json'))
test_dataloader = val_dataloader

val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017_subset.json')
test_evaluator = val_evaluator
