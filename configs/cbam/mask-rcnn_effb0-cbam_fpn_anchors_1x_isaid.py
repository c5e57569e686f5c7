# Ablation of the full model: stock FPN in place of AttentionFPN (backbone CBAM, heads and recipe unchanged).
_base_ = './mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'

model = dict(
    neck=dict(
        _delete_=True,  # FPN takes no `cbam_reduction`: rebuild the neck from the full model's other arguments
        **{k: v for k, v in _base_.model.neck.items() if k not in ('type', 'cbam_reduction')},
        type='FPN'))
