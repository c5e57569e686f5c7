# The cells R50 baseline + CBAM (Woo et al., ECCV 2018, Sec. 3) after conv3 of every ResNet bottleneck in C2-C5.
# Cells keep mmdet's stock anchors: the iSAID stride-adjusted anchors (configs/_base_/anchors) are tuned to
# iSAID's ~14 px objects, not to nuclei.
_base_ = ['./mask-rcnn_r50_fpn_1x_cells.py', '../_base_/models/cbam_parts.py']

model = dict(backbone=dict(plugins=_base_._r50_cbam_plugins))
