# The full model of the CBAM study (as configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py) on cells:
#   EfficientNet-B0 (timm) with CBAM after its C2-C5 stages, AttentionFPN, a box head with dropout and a mask head
#   with residual connections, trained with AdamW + ReduceLROnPlateau on segm AP50.
# Cells keep mmdet's stock anchors: the iSAID stride-adjusted anchors (configs/_base_/anchors) are tuned to
# iSAID's ~14 px objects, not to nuclei.
_base_ = [
    './mask-rcnn_r50_fpn_1x_cells.py',
    '../_base_/models/cbam_parts.py',
    '../_base_/recipes/plateau_segm-ap50.py',
]

model = dict(
    backbone=_base_._effb0_cbam_backbone,
    neck=_base_._effb0_attention_fpn_neck,
    roi_head=dict(bbox_head=_base_._regularized_bbox_head, mask_head=_base_._residual_mask_head))

optim_wrapper = _base_._full_model_optim_wrapper
param_scheduler = _base_._plateau_segm_ap50_param_scheduler
train_cfg = dict(val_interval=1)  # the plateau scheduler reads the metrics of every validation (inherited 1)
