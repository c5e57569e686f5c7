# Cell attention study on iSAID, row 4: row 3 (EfficientNetV2-M) with the two attention modules.
_base_ = './mask-rcnn_effv2m_fpn_anchors_1x_isaid.py'

model = dict(neck=dict(type='TransformerFPN'), roi_head=dict(mask_head=dict(type='ECADCNMaskHead')))
