# Anchors step: the R50 baseline with the stride-adjusted anchors for iSAID's small objects (two sizes per level,
# P2..P6, see the fragment) and RPN positives from IoU 0.5 (stock 0.7: at 0.7 few anchors of a ~14 px object are
# positive). FPN num_outs=5, RPN strides 4..64 and RoI featmap_strides 4..32 stay as in the root.
_base_ = ['./mask-rcnn_r50_fpn_1x_isaid.py', '../_base_/anchors/isaid_stride_adjusted.py']

model = dict(
    rpn_head=dict(anchor_generator=_base_._rpn_anchor_generator),
    train_cfg=dict(rpn=dict(assigner=dict(pos_iou_thr=0.5))))
