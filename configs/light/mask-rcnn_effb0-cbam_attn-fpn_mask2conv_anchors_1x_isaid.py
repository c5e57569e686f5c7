# Lighter variant of the full model (less inference time): the residual mask head with 2 convs instead of 4. At 1000
# detections the mask head (0.53 GFLOPs per detection with 4 convs) is 75-80% of the full model's inference time;
# each 3x3 conv is 0.12 of it. Changes outputs; compare with the parent in the ablation table before use.
_base_ = ['../cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py']

model = dict(roi_head=dict(mask_head=dict(num_convs=2)))
