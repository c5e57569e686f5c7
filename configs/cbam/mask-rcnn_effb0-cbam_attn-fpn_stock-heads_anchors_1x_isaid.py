# Ablation of the full model: mmdet's stock heads (Shared2FCBBoxHead without dropout, FCNMaskHead) in place of the
# regularised box head and the residual mask head (backbone, neck and recipe unchanged).
_base_ = './mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            _delete_=True,  # the stock box head takes no `dropout_p`: rebuild it from the full model's other arguments
            **{k: v for k, v in _base_.model.roi_head.bbox_head.items() if k not in ('type', 'dropout_p')},
            type='Shared2FCBBoxHead'),
        mask_head=dict(type='FCNMaskHead')))
