"""FPN with a CBAM on every output level."""
from typing import List, Tuple

import torch.nn as nn
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import Tensor

from ..layers.cbam import CBAM


@MODELS.register_module()
class AttentionFPN(FPN):
    r"""Feature Pyramid Network whose every output level is refined by a CBAM.

    mmdet's :class:`~mmdet.models.necks.FPN` (Lin et al., FPN, CVPR 2017, Sec. 3) computes the pyramid
    unchanged; each of its ``num_outs`` outputs then goes through its own
    :class:`~mmdet_custom.models.layers.CBAM` (Woo et al., CBAM, ECCV 2018, Sec. 3: channel then spatial
    attention), so the heads see attention-weighted features. Extra levels (max-pooled or extra convs) are
    derived from the FPN outputs before attention, exactly as in :class:`FPN`, and get their own CBAM.

    Args:
        in_channels (list[int]): Number of input channels per scale.
        out_channels (int): Number of output channels (used at each scale).
        num_outs (int): Number of output scales.
        cbam_reduction (int): Reduction ratio ``r`` of the CBAM channel attention; its hidden width is
            ``max(out_channels // cbam_reduction, 1)``. Defaults to 16.
        \*\*kwargs: The other arguments of :class:`~mmdet.models.necks.FPN` (``start_level``, ``end_level``,
            ``add_extra_convs``, ``relu_before_extra_convs``, ``no_norm_on_lateral``, ``conv_cfg``,
            ``norm_cfg``, ``act_cfg``, ``upsample_cfg``, ``init_cfg``) with its defaults. FPN's default
            ``init_cfg`` (Xavier on ``Conv2d``) reaches the CBAM convolutions too, but each CBAM re-initialises
            its own (Kaiming-normal) in ``init_weights``.

    Example:
        >>> import torch
        >>> in_channels = [2, 3, 5, 7]
        >>> scales = [340, 170, 84, 43]
        >>> inputs = [torch.rand(1, c, s, s)
        ...           for c, s in zip(in_channels, scales)]
        >>> self = AttentionFPN(in_channels, 11, len(in_channels) + 1).eval()
        >>> outputs = self.forward(inputs)
        >>> for i in range(len(outputs)):
        ...     print(f'outputs[{i}].shape = {outputs[i].shape}')
        outputs[0].shape = torch.Size([1, 11, 340, 340])
        outputs[1].shape = torch.Size([1, 11, 170, 170])
        outputs[2].shape = torch.Size([1, 11, 84, 84])
        outputs[3].shape = torch.Size([1, 11, 43, 43])
        outputs[4].shape = torch.Size([1, 11, 22, 22])
    """

    def __init__(self, in_channels: List[int], out_channels: int, num_outs: int, cbam_reduction: int = 16,
                 **kwargs) -> None:
        super().__init__(in_channels, out_channels, num_outs, **kwargs)
        self.cbams = nn.ModuleList(CBAM(out_channels, reduction=cbam_reduction) for _ in range(num_outs))

    def forward(self, inputs: Tuple[Tensor]) -> tuple:
        """Forward function.

        Args:
            inputs (tuple[Tensor]): Features from the upstream network, each is a 4D-tensor
                (N, in_channels[i], H_i, W_i).

        Returns:
            tuple[Tensor]: ``num_outs`` feature maps, each (N, out_channels, H_i, W_i) as :meth:`FPN.forward`
            gives them, after attention.
        """
        return tuple(cbam(out) for cbam, out in zip(self.cbams, super().forward(inputs)))
