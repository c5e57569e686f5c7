# The seed's hand-tuned RPN anchors for iSAID's small objects (median side ~14 px): sizes 2x and 4x the stride on
# every level, ratios (h / w) 0.5 / 1 / 2, i.e. 6 anchors per location (mmdet's stock: one size, 8x the stride).
# Levels: all 5 FPN outputs P2..P6 (strides 4..64): mmdet's Mask R-CNN keeps the FPN's num_outs=5 and runs the
# RPN on every output, so the neck stays as it is and P6 gets (128, 256), which also gives large objects
# (Ground_Track_Field, Soccer_ball_field, Harbor) anchors beyond 128 px. The RoI extractors keep
# featmap_strides=[4, 8, 16, 32] (P2..P5), as in mmdet.
# _delete_: replaces the parent's whole anchor_generator; the stock AnchorGenerator's scales / octave_base_scale /
# base_sizes keys do not apply to PerLevelAnchorGenerator.
# Use (mmengine refuses a key such as `model` defined by two files of one _base_ list, hence a named dict), with a
# parent that does not inherit this file yet (the anchors-step configs do: they have these anchors already):
#   _base_ = [<parent config>, '../_base_/anchors/isaid_stride_adjusted.py']
#   model = dict(rpn_head=dict(anchor_generator=_base_._rpn_anchor_generator))
_rpn_anchor_generator = dict(
    _delete_=True,
    type='PerLevelAnchorGenerator',
    strides=[4, 8, 16, 32, 64],
    sizes=[[8, 16], [16, 32], [32, 64], [64, 128], [128, 256]],
    ratios=[0.5, 1.0, 2.0])
