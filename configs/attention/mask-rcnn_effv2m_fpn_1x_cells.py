# Cell attention study, row 3: the cells R50 baseline with EfficientNetV2-M (timm) as the backbone.
_base_ = ['../cells/mask-rcnn_r50_fpn_1x_cells.py', '../_base_/models/effv2_backbones.py']

model = dict(
    backbone=dict(_delete_=True, **_base_._effv2m_backbone),  # ResNet -> timm: no ResNet argument applies
    neck=dict(in_channels=_base_._effv2m_channels))
