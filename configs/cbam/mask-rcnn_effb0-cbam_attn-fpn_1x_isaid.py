# The full model of the CBAM study (issue 3), on top of the anchors step:
#   EfficientNet-B0 (timm) with CBAM after its C2-C5 stages, AttentionFPN, a box head with dropout and a mask head
#   with residual connections, trained with AdamW + ReduceLROnPlateau on segm AP50.
# Ablations (one part dropped each): ./mask-rcnn_effb0_attn-fpn_1x_isaid.py (no backbone CBAM),
# ./mask-rcnn_effb0-cbam_fpn_1x_isaid.py (FPN), ./mask-rcnn_effb0-cbam_attn-fpn_1x_isaid-stock-heads.py.
_base_ = '../mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py'

model = dict(
    backbone=dict(
        _delete_=True,  # ResNet -> timm EfficientNet: none of ResNet's arguments (depth, style, ...) applies
        type='TimmCBAMBackbone',
        model_name='efficientnet_b0',
        out_indices=(1, 2, 3, 4),  # timm feature indices of strides 4, 8, 16, 32 (C2-C5)
        pretrained=True,  # ImageNet weights from timm's hub; checkpoint_path=<file> loads a local copy instead
        use_cbam=True,
        cbam_reduction=16),
    neck=dict(type='AttentionFPN', in_channels=[24, 40, 112, 320], cbam_reduction=16),
    roi_head=dict(
        bbox_head=dict(type='RegularizedShared2FCBBoxHead', dropout_p=0.3),
        mask_head=dict(type='ResidualFCNMaskHead')))

# Recipe. AMP is a switch: `python tools/train.py CONFIG --amp` turns OptimWrapper into AmpOptimWrapper
# (dynamic loss scale); gradient clipping then acts on the unscaled gradients.
optim_wrapper = dict(
    # SGD -> AdamW: the inherited SGD arguments (momentum) are no AdamW arguments
    optimizer=dict(_delete_=True, type='AdamW', lr=3e-4, weight_decay=1e-3),
    # the RoI heads learn at a quarter of the base lr
    paramwise_cfg=dict(custom_keys={'roi_head': dict(lr_mult=0.25)}),
    clip_grad=dict(max_norm=1.0, norm_type=2))
# Linear warm-up, then halve the lr when segm AP50 has not improved for 3 validations (min lr 1e-6). The plateau
# scheduler reads the validation metrics: it needs validation after every epoch (val_interval=1, inherited).
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='ReduceOnPlateauLR', monitor='coco/segm_mAP_50', rule='greater', factor=0.5, patience=3,
         min_value=1e-6, by_epoch=True)
]
train_cfg = dict(max_epochs=12, val_interval=1)
