# Root of the config family: stock mmdet Mask R-CNN R50-FPN, 1x schedule, on iSAID patches (15 classes).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/isaid_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

model = dict(
    roi_head=dict(bbox_head=dict(num_classes=15), mask_head=dict(num_classes=15)),
    # iSAID evaluation keeps up to 1000 detections per image (mmdet's default test config keeps 100)
    test_cfg=dict(rcnn=dict(max_per_img=1000)),
    # iSAID patches hold up to thousands of objects: mmdet's MaxIoUAssigner builds the (objects x anchors) IoU
    # matrix (GiBs per dense patch). SparseMaxIoUAssigner gives bit-identical assignments with bounded memory;
    # every MaxIoUAssigner argument keeps mmdet's value (only the type changes).
    train_cfg=dict(
        rpn=dict(assigner=dict(type='SparseMaxIoUAssigner')),
        rcnn=dict(assigner=dict(type='SparseMaxIoUAssigner'))))

# mmdet's schedule assumes 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales lr to the real batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
