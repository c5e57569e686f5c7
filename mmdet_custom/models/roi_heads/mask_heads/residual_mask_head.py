"""FCN mask head whose conv stack has a projection shortcut."""
from typing import Optional

import torch
from mmcv.cnn import ConvModule
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS
from mmdet.utils import OptConfigType
from torch import Tensor


@MODELS.register_module()
class ResidualFCNMaskHead(FCNMaskHead):
    r"""mmdet's :class:`FCNMaskHead` (Mask R-CNN, He et al., ICCV 2017, Fig. 4) with a residual conv stack.

    .. code-block:: none

        x -> [3x3 conv -> BN -> ReLU] x num_convs -> (+) -> ReLU -> deconv 2x -> ReLU -> 1x1 conv_logits
         \--------- 1x1 conv -> BN (shortcut) -------/

    The 1x1 projection shortcut (He et al., ResNet, CVPR 2016, Sec. 3.3, option B) maps ``in_channels`` to
    ``conv_out_channels``, so the stack's input reaches the upsampling path directly. Upsampling, predictor,
    targets, loss (``loss_and_target``) and mask pasting (``predict_by_feat``) are :class:`FCNMaskHead`'s.
    A (N, in_channels, 14, 14) RoI feature gives (N, num_classes, 28, 28) mask logits (one channel when
    ``class_agnostic``).

    Args:
        num_convs (int): Number of 3x3 convs in the residual stack, at least 1. Defaults to 4.
        norm_cfg (dict, optional): Normalization of the stack and the shortcut. Defaults to ``dict(type='BN')``;
            None gives plain convs with biases.
        conv_cfg (dict, optional): Convolution config of the stack and the shortcut. Defaults to None.
        test_chunk (int, optional): in eval mode, run the RoIs through the head in chunks of this many (None: all
            at once). The output is the same (eval-mode BN uses running statistics, so each RoI's mask does not
            depend on the others); the activations held at once shrink from N to ``test_chunk`` RoIs (at iSAID's
            1000 detections the upsampled features alone, 1000 x 256 x 28 x 28 floats, take 0.8 GB). Training
            always runs one batch (BN batch statistics). Defaults to 100.
        \*\*kwargs: The other arguments of :class:`FCNMaskHead` (``roi_feat_size``, ``in_channels``,
            ``conv_kernel_size``, ``conv_out_channels``, ``num_classes``, ``class_agnostic``, ``upsample_cfg``,
            ``predictor_cfg``, ``loss_mask``).

    Raises:
        ValueError: if ``num_convs`` < 1 (there would be no stack to go around) or ``test_chunk`` < 1.
    """

    def __init__(self,
                 num_convs: int = 4,
                 norm_cfg: OptConfigType = dict(type='BN'),  # noqa: B006  (mmdet's style; never mutated)
                 conv_cfg: OptConfigType = None,
                 test_chunk: Optional[int] = 100,
                 **kwargs) -> None:
        if num_convs < 1:
            raise ValueError(f'ResidualFCNMaskHead needs num_convs >= 1, got {num_convs}')
        if test_chunk is not None and test_chunk < 1:
            raise ValueError(f'ResidualFCNMaskHead needs test_chunk >= 1 or None, got {test_chunk}')
        super().__init__(num_convs=num_convs, norm_cfg=norm_cfg, conv_cfg=conv_cfg, **kwargs)
        self.test_chunk = test_chunk
        self.shortcut = ConvModule(
            self.in_channels, self.conv_out_channels, 1, conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, x: Tensor) -> Tensor:
        """Predict mask logits.

        Args:
            x (Tensor): Mask RoI features, shape (N, in_channels, H, W), H = W = 14 in Mask R-CNN.

        Returns:
            Tensor: Mask logits, shape (N, num_classes, 2H, 2W) (2 = the upsampling ``scale_factor``).
        """
        if not self.training and self.test_chunk and x.shape[0] > self.test_chunk:
            return torch.cat([self._forward(part) for part in x.split(self.test_chunk)])
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        identity = self.shortcut(x)
        for conv in self.convs:
            x = conv(x)
        x = self.relu(x + identity)
        if self.upsample is not None:
            x = self.upsample(x)
            if self.upsample_method == 'deconv':
                x = self.relu(x)
        return self.conv_logits(x)
