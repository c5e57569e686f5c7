# Stock mmdet Mask R-CNN R50-FPN, 1x schedule, on the 4-class COCO subset (person, cat, sports ball, book).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco_subset.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

model = dict(roi_head=dict(bbox_head=dict(num_classes=4), mask_head=dict(num_classes=4)))

# mmdet's schedule assumes 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales lr to the real batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
