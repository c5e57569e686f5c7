# The lightest variant (all the savings together): the 128-channel FPN variant
# (./mask-rcnn_effb0-cbam_attn-fpn128_anchors_1x_isaid.py, itself the full model with a 128-channel neck) plus
#   * the backbone's stem and first stage (C2, stride 4) frozen, as in mmdet's R50 recipe (frozen_stages=1; the full
#     model trains them): no gradients, and no stored activations for the highest-resolution layers;
#   * the residual mask head with 2 convs instead of 4 (./mask-rcnn_effb0-cbam_attn-fpn_mask2conv_anchors_1x_isaid.py);
#   * 3 anchors per location instead of 6 (./mask-rcnn_effb0-cbam_attn-fpn_anchors3_1x_isaid.py).
# Changes outputs; compare with the full model in the ablation table (tools/ablate.py) before use.
_base_ = ['./mask-rcnn_effb0-cbam_attn-fpn128_anchors_1x_isaid.py']

model = dict(
    backbone=dict(frozen_stages=1),
    rpn_head=dict(anchor_generator=dict(sizes=[[12], [24], [48], [96], [192]])),
    roi_head=dict(mask_head=dict(num_convs=2)))
