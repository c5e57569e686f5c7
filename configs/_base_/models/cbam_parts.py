# The model parts of the CBAM study (channel + spatial attention for iSAID's small objects), as named pieces for a
# config to plug into its parent's Mask R-CNN. mmengine refuses a key such as `model` defined by two files of one _base_
# list, hence named dicts, e.g.:
#   _base_ = [<parent config>, '../_base_/models/cbam_parts.py']
#   model = dict(backbone=dict(plugins=_base_._r50_cbam_plugins), neck=_base_._attention_fpn_neck)
# Used by configs/cbam (iSAID) and configs/cells.

# CBAM (Woo et al., ECCV 2018, Sec. 3) after conv3 of every ResNet bottleneck of the trainable stages C3-C5, on the
# residual branch before the addition (the paper's Fig. 3). Not in C2: mmdet's R50 recipe freezes the stem and
# stage 1 (frozen_stages=1), and a CBAM inside a frozen stage never trains (3 CBAMs, 25,689 parameters stuck at their
# random init). Use: backbone=dict(plugins=_base_._r50_cbam_plugins)
_r50_cbam_plugins = [
    dict(cfg=dict(type='CBAM', reduction=16), stages=(False, True, True, True), position='after_conv3'),
]

# AttentionFPN: mmdet's FPN with a CBAM on every output level. Merged into the parent's FPN, whose in_channels,
# out_channels and num_outs stay. Use: neck=_base_._attention_fpn_neck
_attention_fpn_neck = dict(type='AttentionFPN', cbam_reduction=16)

# EfficientNet-B0 (timm) with a CBAM after each of its C2-C5 stages. Use: backbone=_base_._effb0_cbam_backbone
_effb0_cbam_backbone = dict(
    _delete_=True,  # ResNet -> timm EfficientNet: none of ResNet's arguments (depth, style, ...) applies
    type='TimmCBAMBackbone',
    model_name='efficientnet_b0',
    out_indices=(1, 2, 3, 4),  # timm feature indices of strides 4, 8, 16, 32 (C2-C5)
    pretrained=True,  # ImageNet weights from timm's hub; checkpoint_path=<file> loads a local copy instead
    use_cbam=True,
    cbam_reduction=16,
    # BatchNorm statistics stay at the pretrained values, as in the R50 parent and mmdet's convention for 1-2 images
    # per GPU: on 8 real iSAID patches batch-2 statistics deviate from the 8-image ones by a median 6% (max 23%) in
    # variance per layer, and the C5 output under them by 35-105% (relative L2). Training from scratch
    # (pretrained=False) needs norm_eval=False with a large batch, or SyncBN.
    norm_eval=True)
# AttentionFPN on EfficientNet-B0's C2-C5 channels. Use with the backbone above: neck=_base_._effb0_attention_fpn_neck
_effb0_attention_fpn_neck = dict(_attention_fpn_neck, in_channels=[24, 40, 112, 320])

# The full model's heads: a box head with dropout after each shared FC and a mask head with residual connections.
# Use: roi_head=dict(bbox_head=_base_._regularized_bbox_head, mask_head=_base_._residual_mask_head)
_regularized_bbox_head = dict(type='RegularizedShared2FCBBoxHead', dropout_p=0.3)
_residual_mask_head = dict(type='ResidualFCNMaskHead')

# The full model's optimizer. AMP is a switch: `python tools/train.py CONFIG --amp` turns OptimWrapper into
# AmpOptimWrapper (dynamic loss scale); gradient clipping then acts on the unscaled gradients.
# Use: optim_wrapper = _base_._full_model_optim_wrapper, with its lr schedule from
# '../_base_/recipes/plateau_segm-ap50.py' (param_scheduler = _base_._plateau_segm_ap50_param_scheduler), which needs
# validation after every epoch (train_cfg.val_interval=1).
_full_model_optim_wrapper = dict(
    # SGD -> AdamW: the inherited SGD arguments (momentum) are no AdamW arguments
    optimizer=dict(_delete_=True, type='AdamW', lr=3e-4, weight_decay=1e-3),
    # the RoI heads learn at a quarter of the base lr
    paramwise_cfg=dict(custom_keys={'roi_head': dict(lr_mult=0.25)}),
    clip_grad=dict(max_norm=1.0, norm_type=2))
