"""Efficient Channel Attention (Wang et al., ECA-Net, CVPR 2020, Sec. 3)."""
import math
from typing import Optional

import torch.nn as nn
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule
from torch import Tensor


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    r"""Kernel size of ECA's 1D convolution, adaptive to the channel count (Wang et al., CVPR 2020, Eq. 12).

    .. math::
        k = \left| \frac{\log_2 C + b}{\gamma} \right|_{odd}

    where :math:`|t|_{odd}` is the odd number nearest to :math:`t` from above after truncation, as in the
    authors' code (``t = int(abs((log2(C) + b) / gamma)); k = t if t % 2 else t + 1``). With ``gamma=2, b=1``:
    C = 64 -> 3, 256 -> 5, 512 -> 5, 1024 -> 5, 2048 -> 7.

    Args:
        channels (int): Number of channels ``C``, positive.
        gamma (int): :math:`\gamma` of the mapping. Defaults to 2.
        b (int): :math:`b` of the mapping. Defaults to 1.

    Returns:
        int: An odd kernel size >= 1.

    Raises:
        ValueError: if ``channels`` is not a positive int.
    """
    if not (isinstance(channels, int) and channels > 0):
        raise ValueError(f'channels must be a positive int, got {channels!r}')
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@MODELS.register_module()
class ECA(BaseModule):
    r"""Efficient Channel Attention (Wang et al., ECA-Net, CVPR 2020, Sec. 3.2, Fig. 2).

    .. math::
        y = x \cdot \sigma(\mathrm{Conv1D}_k(\mathrm{GAP}(x)))

    The globally average-pooled channel descriptor (N, C) is treated as a length-C sequence and convolved by one
    1D kernel of size ``k`` (no bias, ``padding = (k - 1) // 2``): each channel's weight depends on its ``k``
    neighbouring channels only, with ``k`` parameters in all (no dimensionality reduction, unlike SE / CBAM).

    Args:
        channels (int): Number of input channels ``C``.
        kernel_size (int, optional): Odd size ``k`` of the 1D convolution. Defaults to None:
            :func:`eca_kernel_size` of ``channels`` (5 for 256 channels).
        init_cfg (dict or list[dict], optional): Initialization config. Defaults to None (PyTorch's default
            Conv1d init, as in the authors' code).

    Raises:
        ValueError: if ``channels`` is not a positive int or ``kernel_size`` is not a positive odd int.

    Example:
        >>> import torch
        >>> self = ECA(256)
        >>> x = torch.rand(2, 256, 14, 14)
        >>> print(self.kernel_size, tuple(self(x).shape), tuple(self.attention(x).shape))
        5 (2, 256, 14, 14) (2, 256, 1, 1)
    """

    def __init__(self, channels: int, kernel_size: Optional[int] = None, init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels)
        if not (isinstance(kernel_size, int) and kernel_size > 0 and kernel_size % 2 == 1):
            raise ValueError(f'kernel_size must be a positive odd int, got {kernel_size!r}')
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def attention(self, x: Tensor) -> Tensor:
        """Channel weights of ``x`` (N, C, H, W): shape (N, C, 1, 1), values in (0, 1)."""
        pooled = x.mean(dim=(2, 3))  # (N, C)
        return self.conv(pooled.unsqueeze(1)).sigmoid().view(x.size(0), x.size(1), 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (N, C, H, W) reweighted per channel; same shape."""
        return x * self.attention(x)
