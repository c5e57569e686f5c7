# Cell attention study on iSAID, row 2: the R101 anchors step (row 1: ../mask_rcnn/mask-rcnn_r101_fpn_anchors_1x_isaid.py)
# with the two attention modules at their defaults (TransformerFPN, ECADCNMaskHead; see the cells configs).
_base_ = '../mask_rcnn/mask-rcnn_r101_fpn_anchors_1x_isaid.py'

model = dict(neck=dict(type='TransformerFPN'), roi_head=dict(mask_head=dict(type='ECADCNMaskHead')))
