# Lighter variant of the full model (less RPN and assigner work): 3 anchors per location (one size per level, 3x the
# stride: 12, 24, 48, 96, 192 px, between the parent's two sizes 2x and 4x the stride) instead of 6. Halves the RPN's
# classification/regression outputs and the anchors the assigner matches (6 anchors per location cost +4.5% of a
# training iteration). Changes outputs; compare with the parent in the ablation table before use.
_base_ = ['../cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py']

model = dict(rpn_head=dict(anchor_generator=dict(sizes=[[12], [24], [48], [96], [192]])))
