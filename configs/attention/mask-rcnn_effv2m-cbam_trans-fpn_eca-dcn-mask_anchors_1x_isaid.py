# CBAM and the cell-study modules together on iSAID: row 4 with a CBAM (Woo et al., ECCV 2018) after each of
# EfficientNetV2-M's C2-C5 stages.
_base_ = './mask-rcnn_effv2m_trans-fpn_eca-dcn-mask_anchors_1x_isaid.py'

model = dict(backbone=dict(use_cbam=True))
