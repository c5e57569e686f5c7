# Stock mmdet Mask R-CNN R50-FPN, 1x schedule, on microscopy cells at native resolution (4 classes).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/cells.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

model = dict(
    roi_head=dict(bbox_head=dict(num_classes=4), mask_head=dict(num_classes=4)),
    # crowded fluorescence images hold several hundred nuclei; mmdet's default keeps 100 detections per image
    test_cfg=dict(rcnn=dict(max_per_img=500)))
val_evaluator = dict(proposal_nums=(100, 300, 500))
test_evaluator = val_evaluator

# mmdet's schedule assumes 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales lr to the real batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
