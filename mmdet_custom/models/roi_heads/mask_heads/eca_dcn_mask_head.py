"""FCN mask head with an attention entrance block: ECA, a modulated deformable conv and a feed-forward layer."""
from typing import Optional

import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from torch import Tensor

from ...layers.eca import ECA


@MODELS.register_module()
class ECADCNMaskHead(FCNMaskHead):
    r"""mmdet's :class:`FCNMaskHead` (Mask R-CNN, He et al., ICCV 2017, Fig. 4) behind a spatial-channel attention
    entrance block (the mask-head attention of a microscopy cell-segmentation study).

    .. code-block:: none

        x -> ECA -> a -> DCNv2 3x3 -> BN -> (+ a) -> b -> 1x1 conv -> GELU -> dropout -> 1x1 conv -> (+ b)
          -> [3x3 conv -> ReLU] x num_convs -> deconv 2x -> ReLU -> 1x1 conv_logits

    * channel attention: :class:`~mmdet_custom.models.layers.ECA` (Wang et al., ECA-Net, CVPR 2020), a 1D conv
      over the pooled channel descriptor with a kernel size adapted to ``in_channels`` (5 for 256);
    * spatial attention: a modulated deformable 3x3 convolution (DCNv2, Zhu et al., CVPR 2019, Sec. 2:
      learned sampling offsets and a sigmoid modulation per kernel tap; ``dcn_cfg``, by default mmcv's
      ``ModulatedDeformConv2dPack``, registered as ``'DCNv2'``), batch norm, and a residual add;
    * a position-wise feed-forward layer (1x1 conv to ``ffn_ratio * in_channels``, GELU, dropout, 1x1 conv back, as
      a transformer FFN, Vaswani et al., NeurIPS 2017) with a residual add.

    The block keeps the shape (N, in_channels, H, W); the conv stack, upsampling, predictor, targets, loss
    (``loss_and_target``) and mask pasting (``predict_by_feat``) are :class:`FCNMaskHead`'s, and every
    :class:`FCNMaskHead` weight keeps its name, so mmdet's Mask R-CNN checkpoints load into it (the new block
    starting from its own init). A (N, in_channels, 14, 14) RoI feature gives (N, num_classes, 28, 28) mask logits
    (one channel when ``class_agnostic``). mmcv's DCNv2 starts with zero offsets (a plain 3x3 conv whose taps are
    all modulated by 0.5) and learns them.

    Args:
        eca_kernel_size (int, optional): Odd kernel size of ECA's 1D conv. Defaults to None (from the channels).
        dcn_cfg (dict, optional): Config of the deformable conv, built by mmcv's ``build_conv_layer``. Defaults to
            None: ``dict(type='DCNv2', deform_groups=1)``; ``dict(type='Conv2d')`` gives a plain conv (ablation, or
            where mmcv was built without its ops).
        dcn_norm_cfg (dict, optional): Normalization after the deformable conv. Defaults to None:
            ``dict(type='BN')``.
        ffn_ratio (int): Hidden width of the feed-forward layer, as a multiple of ``in_channels``. Defaults to 4.
        ffn_dropout (float): Dropout after the GELU. Defaults to 0.1.
        \*\*kwargs: The arguments of :class:`FCNMaskHead` (``num_convs``, ``roi_feat_size``, ``in_channels``,
            ``conv_kernel_size``, ``conv_out_channels``, ``num_classes``, ``class_agnostic``, ``upsample_cfg``,
            ``conv_cfg``, ``norm_cfg``, ``predictor_cfg``, ``loss_mask``, ``init_cfg``).

    Raises:
        ValueError: if ``ffn_ratio`` < 1 or ``ffn_dropout`` is not in [0, 1).

    Example:
        >>> import torch
        >>> self = ECADCNMaskHead(in_channels=32, conv_out_channels=32, num_classes=4).eval()
        >>> print(tuple(self(torch.rand(3, 32, 14, 14)).shape))
        (3, 4, 28, 28)
    """

    def __init__(self,
                 eca_kernel_size: Optional[int] = None,
                 dcn_cfg: OptConfigType = None,
                 dcn_norm_cfg: OptConfigType = None,
                 ffn_ratio: int = 4,
                 ffn_dropout: float = 0.1,
                 **kwargs) -> None:
        if ffn_ratio < 1:
            raise ValueError(f'ffn_ratio must be >= 1, got {ffn_ratio}')
        if not 0 <= ffn_dropout < 1:
            raise ValueError(f'ffn_dropout must lie in [0, 1), got {ffn_dropout}')
        super().__init__(**kwargs)
        dcn_cfg = dict(type='DCNv2', deform_groups=1) if dcn_cfg is None else dcn_cfg
        dcn_norm_cfg = dict(type='BN') if dcn_norm_cfg is None else dcn_norm_cfg
        channels = self.in_channels
        self.eca = ECA(channels, kernel_size=eca_kernel_size)
        self.dcn = build_conv_layer(dcn_cfg, channels, channels, 3, padding=1, bias=False)
        self.dcn_norm = build_norm_layer(dcn_norm_cfg, channels)[1]
        self.ffn = nn.Sequential(
            nn.Conv2d(channels, ffn_ratio * channels, 1), nn.GELU(), nn.Dropout(ffn_dropout),
            nn.Conv2d(ffn_ratio * channels, channels, 1))

    def entrance(self, x: Tensor) -> Tensor:
        """The attention entrance block: (N, in_channels, H, W) -> same shape."""
        x = self.eca(x)
        x = x + self.dcn_norm(self.dcn(x))
        return x + self.ffn(x)

    def forward(self, x: Tensor) -> Tensor:
        """Predict mask logits.

        Args:
            x (Tensor): Mask RoI features, shape (N, in_channels, H, W), H = W = 14 in Mask R-CNN.

        Returns:
            Tensor: Mask logits, shape (N, num_classes, 2H, 2W) (2 = the upsampling ``scale_factor``).
        """
        return super().forward(self.entrance(x))
