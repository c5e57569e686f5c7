# CBAM step 3: CBAM in the backbone (step 1) and AttentionFPN (step 2) together.
_base_ = './mask-rcnn_r50-cbam_fpn_anchors_1x_isaid.py'

model = dict(neck=_base_._attention_fpn_neck)
