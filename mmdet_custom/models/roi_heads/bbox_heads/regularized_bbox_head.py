"""Shared2FC bbox head with dropout after each shared fully connected layer."""
from typing import Tuple

import torch.nn as nn
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class RegularizedShared2FCBBoxHead(Shared2FCBBoxHead):
    r"""mmdet's :class:`Shared2FCBBoxHead` with dropout after each shared FC layer.

    .. code-block:: none

        RoI feature -> flatten -> [fc -> ReLU -> dropout] x 2 -> fc_cls
                                                               \-> fc_reg

    Dropout (Srivastava et al., JMLR 2014) is active only in training mode (``head.train()``); in eval mode
    the head computes exactly what :class:`Shared2FCBBoxHead` computes. Layers and their state_dict keys are
    those of :class:`Shared2FCBBoxHead` (dropout has no parameters), so its checkpoints load unchanged.

    Args:
        fc_out_channels (int): Output channels of the shared FC layers. Defaults to 1024.
        dropout_p (float): Probability of zeroing an element, in [0, 1). Defaults to 0.3.
        \*args, \*\*kwargs: The other arguments of :class:`~mmdet.models.roi_heads.BBoxHead`
            (``roi_feat_size``, ``in_channels``, ``num_classes``, ``bbox_coder``, ``loss_cls``, ...).

    Raises:
        ValueError: if ``dropout_p`` is not in [0, 1).
    """

    def __init__(self, fc_out_channels: int = 1024, dropout_p: float = 0.3, *args, **kwargs) -> None:
        if not 0 <= dropout_p < 1:
            raise ValueError(f'dropout_p must lie in [0, 1), got {dropout_p}')
        super().__init__(fc_out_channels, *args, **kwargs)
        self.dropout_p = dropout_p
        self.dropout = nn.Dropout(p=dropout_p)

    def forward(self, x: Tuple[Tensor]) -> tuple:
        """Forward RoI features.

        Args:
            x (Tensor): RoI features, shape (num_rois, in_channels, roi_feat_size, roi_feat_size).

        Returns:
            tuple[Tensor]: ``cls_score`` (num_rois, num_classes + 1) and ``bbox_pred`` (num_rois, 4 * num_classes,
            or 4 when class agnostic), as :meth:`ConvFCBBoxHead.forward` returns them (None for a disabled
            branch).
        """
        if self.with_avg_pool:
            x = self.avg_pool(x)
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = self.dropout(self.relu(fc(x)))
        cls_score = self.fc_cls(x) if self.with_cls else None
        bbox_pred = self.fc_reg(x) if self.with_reg else None
        return cls_score, bbox_pred
