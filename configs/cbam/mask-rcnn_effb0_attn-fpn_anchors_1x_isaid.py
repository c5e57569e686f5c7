# Ablation of the full model: no CBAM in the backbone (AttentionFPN, heads and recipe unchanged).
_base_ = './mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'

model = dict(backbone=dict(use_cbam=False))
