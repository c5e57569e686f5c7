# Cell attention study, row 4: row 3 (EfficientNetV2-M) with the two attention modules (see row 2).
_base_ = './mask-rcnn_effv2m_fpn_1x_cells.py'

model = dict(neck=dict(type='TransformerFPN'), roi_head=dict(mask_head=dict(type='ECADCNMaskHead')))
