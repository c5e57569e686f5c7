# CBAM step 1: the anchors step + CBAM (Woo et al., ECCV 2018, Sec. 3) after conv3 of every ResNet bottleneck of
# the trainable stages C3-C5, on the residual branch before the addition (the paper's Fig. 3).
# Not in C2: the parent freezes the stem and stage 1 (frozen_stages=1, mmdet's recipe for a pretrained R50), and a
# CBAM inside a frozen stage never trains (3 CBAMs, 25,689 parameters stuck at their random init, rescaling the
# pretrained stage-1 features). Keeping the parent's frozen stage 1 makes CBAM the only change of this step.
_base_ = ['../mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py', '../_base_/models/cbam_parts.py']

model = dict(backbone=dict(plugins=[dict(_base_.r50_cbam_plugins[0], stages=(False, True, True, True))]))
