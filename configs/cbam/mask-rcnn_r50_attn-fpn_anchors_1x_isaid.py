# CBAM step 2: the anchors step with AttentionFPN (mmdet's FPN with a CBAM on every output level) in place of FPN.
_base_ = ['../mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py', '../_base_/models/cbam_parts.py']

model = dict(neck=_base_._attention_fpn_neck)
