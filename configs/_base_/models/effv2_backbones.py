# EfficientNetV2 backbones (Tan & Le, ICML 2021) from timm for Mask R-CNN's FPN, as named parts (see cbam_parts.py for
# why named dicts), with the FPN input channels read from timm's feature_info (C2-C5, strides 4/8/16/32):
#   _base_ = [<parent config>, '../_base_/models/effv2_backbones.py']
#   model = dict(backbone=dict(_delete_=True, **_base_._effv2m_backbone), neck=dict(in_channels=_base_._effv2m_channels))
# `_delete_=True` at the use site: ResNet -> timm, none of ResNet's arguments (depth, style, ...) applies.
# As mmdet's ResNets: ImageNet weights, stem + C2 frozen, BatchNorm statistics frozen (batches of 2 images).
# The weights are loaded by the backbone's init_weights() (the runner, before training), never when the model is
# built; offline, set checkpoint_path=<local file> and pretrained=False, or pretrained=False for random weights.
_effv2m_backbone = dict(
    type='TimmCBAMBackbone',
    model_name='tf_efficientnetv2_m',  # timm's port of the official weights (ImageNet-21k, fine-tuned on 1k)
    out_indices=(1, 2, 3, 4),  # timm feature indices of strides 4, 8, 16, 32 (C2-C5)
    pretrained=True,
    use_cbam=False,  # a plain timm backbone; True adds a CBAM after every output stage
    frozen_stages=1,
    norm_eval=True)
_effv2m_channels = [48, 80, 176, 512]

# The lighter EfficientNetV2-S (about half the parameters of -M). Use as above with _effv2s_backbone / _effv2s_channels.
_effv2s_backbone = dict(_effv2m_backbone, model_name='tf_efficientnetv2_s')
_effv2s_channels = [48, 64, 160, 256]
