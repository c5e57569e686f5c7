# Cell attention study (do attention modules help a deeper backbone on cells?), row 1: the cells R50 baseline with a
# ResNet-101 backbone (ImageNet weights from torchvision), everything else unchanged. Row 2 adds the two attention
# modules: ./mask-rcnn_r101_trans-fpn_eca-dcn-mask_1x_cells.py.
_base_ = '../cells/mask-rcnn_r50_fpn_1x_cells.py'

model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
