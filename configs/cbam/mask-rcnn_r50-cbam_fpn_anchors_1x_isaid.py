# CBAM step 1: the anchors step + CBAM (Woo et al., ECCV 2018, Sec. 3) after conv3 of every ResNet bottleneck of
# the trainable stages C3-C5, on the residual branch before the addition (the paper's Fig. 3).
# Not in C2, which the parent freezes (see _base_/models/cbam_parts.py).
_base_ = ['../mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py', '../_base_/models/cbam_parts.py']

model = dict(backbone=dict(plugins=_base_._r50_cbam_plugins))
