# The cells R50 baseline with CBAM in the backbone and AttentionFPN together.
# Cells keep mmdet's stock anchors: the iSAID stride-adjusted anchors (configs/_base_/anchors) are tuned to
# iSAID's ~14 px objects, not to nuclei.
_base_ = ['./mask-rcnn_r50_fpn_1x_cells.py', '../_base_/models/cbam_parts.py']

model = dict(backbone=dict(plugins=_base_._r50_cbam_plugins), neck=_base_._attention_fpn_neck)
