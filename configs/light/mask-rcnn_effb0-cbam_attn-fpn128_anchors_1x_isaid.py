# Lighter variant of the full model (less inference time and memory): a 128-channel AttentionFPN instead of 256.
# Everything after the neck follows: the RPN's 3x3 conv on P2-P6 (63.7 of the full model's 68.5
# backbone+neck+RPN GFLOPs are the 256-channel FPN and RPN convs), the RoI features, and the mask head's convs (128
# channels). Changes outputs; compare with the parent in the ablation table (tools/ablate.py) before use.
_base_ = ['../cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py']

model = dict(
    neck=dict(out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=128)))
