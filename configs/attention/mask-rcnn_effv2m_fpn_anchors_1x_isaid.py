# Cell attention study on iSAID, row 3: the anchors step with EfficientNetV2-M (timm) as the backbone.
_base_ = ['../mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py', '../_base_/models/effv2_backbones.py']

model = dict(
    backbone=dict(_delete_=True, **_base_._effv2m_backbone),  # ResNet -> timm: no ResNet argument applies
    neck=dict(in_channels=_base_._effv2m_channels))
