# Cell attention study, row 2: row 1 (R101) with the two attention modules, at their defaults:
#   TransformerFPN: FPN + a transformer encoder over 14x14 tokens of every level + gated fusion of the levels;
#   ECADCNMaskHead: the FCN mask head behind ECA + a modulated deformable 3x3 conv + a feed-forward layer.
# Both replace mmdet's FPN / FCNMaskHead whose arguments they extend (no _delete_ needed).
_base_ = './mask-rcnn_r101_fpn_1x_cells.py'

model = dict(neck=dict(type='TransformerFPN'), roi_head=dict(mask_head=dict(type='ECADCNMaskHead')))
