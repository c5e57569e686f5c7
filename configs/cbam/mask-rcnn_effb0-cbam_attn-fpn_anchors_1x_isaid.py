# The full model of the CBAM study (attention for iSAID's small objects), on top of the anchors step:
#   EfficientNet-B0 (timm) with CBAM after its C2-C5 stages, AttentionFPN, a box head with dropout and a mask head
#   with residual connections, trained with AdamW + ReduceLROnPlateau on segm AP50 (parts: see the fragments).
# Ablations (one part dropped each): ./mask-rcnn_effb0_attn-fpn_anchors_1x_isaid.py (no backbone CBAM),
# ./mask-rcnn_effb0-cbam_fpn_anchors_1x_isaid.py (FPN), ./mask-rcnn_effb0-cbam_attn-fpn_stock-heads_anchors_1x_isaid.py.
_base_ = [
    '../mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py',
    '../_base_/models/cbam_parts.py',
    '../_base_/recipes/plateau_segm-ap50.py',
]

model = dict(
    backbone=_base_._effb0_cbam_backbone,
    neck=_base_._effb0_attention_fpn_neck,
    roi_head=dict(
        # torchvision's RoIAlign: the same values as mmcv's (aligned=True, adaptive sampling; bit-identical here)
        # and faster on the CPU (forward and backward); the ablations below inherit it
        bbox_roi_extractor=dict(roi_layer=dict(use_torchvision=True)),
        mask_roi_extractor=dict(roi_layer=dict(use_torchvision=True)),
        bbox_head=_base_._regularized_bbox_head,
        mask_head=_base_._residual_mask_head))

# Recipe: AdamW (roi_head at 0.25x lr, gradient clipping), linear warm-up, then the lr halved when segm AP50 has
# not improved for 3 validations. The plateau scheduler reads the validation metrics: it needs validation after
# every epoch (val_interval=1).
optim_wrapper = _base_._full_model_optim_wrapper
param_scheduler = _base_._plateau_segm_ap50_param_scheduler
train_cfg = dict(max_epochs=12, val_interval=1)
