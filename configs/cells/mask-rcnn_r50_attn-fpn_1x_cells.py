# The cells R50 baseline with AttentionFPN (mmdet's FPN with a CBAM on every output level) in place of FPN.
# Cells keep mmdet's stock anchors: the iSAID stride-adjusted anchors (configs/_base_/anchors) are tuned to
# iSAID's ~14 px objects, not to nuclei.
_base_ = ['./mask-rcnn_r50_fpn_1x_cells.py', '../_base_/models/cbam_parts.py']

model = dict(neck=_base_._attention_fpn_neck)
