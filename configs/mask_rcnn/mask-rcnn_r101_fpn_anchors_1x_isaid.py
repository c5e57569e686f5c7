# R101 baseline of the CBAM study: the anchors step (not the root) with a ResNet-101 backbone, so that it differs
# from the R50 anchors step only in depth and compares directly with the CBAM steps, which inherit the same step.
_base_ = './mask-rcnn_r50_fpn_anchors_1x_isaid.py'

model = dict(backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
