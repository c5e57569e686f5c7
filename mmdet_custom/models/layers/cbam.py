"""Convolutional Block Attention Module (Woo et al., CBAM, ECCV 2018, Sec. 3)."""
import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmdet.utils import OptMultiConfig
from mmengine.model import BaseModule, kaiming_init
from mmengine.registry import MODELS as MMENGINE_MODELS
from torch import Tensor

# Kaiming-normal (fan_out, ReLU gain, zero bias): the init applied in ``__init__`` and again by ``init_weights``,
# so that a parent's ``init_cfg`` (e.g. FPN's Xavier) does not overwrite it.
_KAIMING_INIT = dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu', distribution='normal')


class ChannelAttention(BaseModule):
    r"""Channel attention of CBAM (Woo et al., ECCV 2018, Sec. 3.1, Eq. 2).

    .. math::
        M_c(F) = \sigma(\mathrm{MLP}(\mathrm{AvgPool}(F)) + \mathrm{MLP}(\mathrm{MaxPool}(F)))

    The average- and max-pooled channel descriptors go through ONE shared MLP
    ``C -> C_mid -> C`` (1x1 convolutions with a ReLU between them) and are summed before the sigmoid.

    Args:
        in_channels (int): Number of input channels ``C``.
        reduction (int): Reduction ratio ``r`` of the MLP. Defaults to 16 (the paper's choice).
        init_cfg (dict or list[dict], optional): Initialization config. Defaults to Kaiming-normal on the convs.

    Note:
        The hidden width is ``C_mid = max(in_channels // reduction, 1)``: channel counts smaller than ``r``
        (e.g. 8 channels with ``r=16``) keep one hidden unit instead of a zero-width layer.

    Raises:
        ValueError: if ``in_channels`` or ``reduction`` is not a positive integer.
    """

    def __init__(self, in_channels: int, reduction: int = 16, init_cfg: OptMultiConfig = _KAIMING_INIT) -> None:
        super().__init__(init_cfg=init_cfg)
        if not (isinstance(in_channels, int) and in_channels > 0):
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
        if not (isinstance(reduction, int) and reduction > 0):
            raise ValueError(f'reduction must be a positive int, got {reduction!r}')
        self.in_channels = in_channels
        self.reduction = reduction
        self.mid_channels = max(in_channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(in_channels, self.mid_channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.mid_channels, in_channels, 1))
        for m in self.mlp:
            if isinstance(m, nn.Conv2d):
                kaiming_init(m, mode='fan_out', nonlinearity='relu', distribution='normal')

    def attention(self, x: Tensor) -> Tensor:
        """Channel attention map ``M_c`` of ``x`` (N, C, H, W): shape (N, C, 1, 1), values in (0, 1)."""
        avg = self.mlp(torch.mean(x, dim=(2, 3), keepdim=True))
        max_ = self.mlp(torch.amax(x, dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + max_)

    def forward(self, x: Tensor) -> Tensor:
        """``x * M_c(x)``, shape (N, C, H, W) like ``x``."""
        return x * self.attention(x)


class SpatialAttention(BaseModule):
    r"""Spatial attention of CBAM (Woo et al., ECCV 2018, Sec. 3.1, Eq. 3).

    .. math::
        M_s(F) = \sigma(f^{k \times k}([\mathrm{AvgPool}(F); \mathrm{MaxPool}(F)]))

    where the poolings run along the channel axis, giving two (N, 1, H, W) maps that are concatenated and
    convolved by one ``k x k`` convolution (``padding = k // 2``, so H and W are kept).

    Args:
        kernel_size (int): Odd kernel size ``k``. Defaults to 7 (the paper's choice).
        init_cfg (dict or list[dict], optional): Initialization config. Defaults to Kaiming-normal on the conv.

    Raises:
        ValueError: if ``kernel_size`` is not a positive odd integer.
    """

    def __init__(self, kernel_size: int = 7, init_cfg: OptMultiConfig = _KAIMING_INIT) -> None:
        super().__init__(init_cfg=init_cfg)
        if not (isinstance(kernel_size, int) and kernel_size > 0 and kernel_size % 2 == 1):
            raise ValueError(f'kernel_size must be a positive odd int, got {kernel_size!r}')
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        kaiming_init(self.conv, mode='fan_out', nonlinearity='relu', distribution='normal')

    def attention(self, x: Tensor) -> Tensor:
        """Spatial attention map ``M_s`` of ``x`` (N, C, H, W): shape (N, 1, H, W), values in (0, 1)."""
        pooled = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        """``x * M_s(x)``, shape (N, C, H, W) like ``x``."""
        return x * self.attention(x)


@MODELS.register_module()
class CBAM(BaseModule):
    """Convolutional Block Attention Module (Woo et al., CBAM, ECCV 2018, Sec. 3, Eq. 1).

    Channel attention then spatial attention, applied sequentially (the paper's best arrangement, Sec. 4.1):
    ``F' = M_c(F) * F``, ``F'' = M_s(F') * F'``. The output has the shape of the input; with both attention
    maps in (0, 1) every output element has the sign of its input and at most its magnitude.

    Usable on its own and as a plugin of mmdet's ``ResNet`` / ``ResNeXt`` (Bottleneck blocks only; mmdet's
    ``BasicBlock`` of ResNet-18/34 does not take plugins), which builds it through mmcv's
    ``build_plugin_layer`` with ``in_channels`` set to the block's channels and names it ``cbam{postfix}``:

    .. code-block:: python

        backbone = dict(
            type='ResNet', depth=50,
            plugins=[dict(cfg=dict(type='CBAM', reduction=16),
                          stages=(True, True, True, True), position='after_conv3')])

    The class is registered in mmdet's ``MODELS`` and also in mmengine's root ``MODELS`` (where mmcv keeps its
    own plugins such as ``ContextBlock``), because ``build_plugin_layer`` looks the type up in the registry of
    the current default scope, which is the root registry when no scope is set (e.g. a ``ResNet`` built
    outside a runner).

    Args:
        in_channels (int): Number of input channels ``C``.
        reduction (int): Reduction ratio ``r`` of the channel-attention MLP; its hidden width is
            ``max(in_channels // reduction, 1)``. Defaults to 16.
        spatial_kernel (int): Odd kernel size of the spatial-attention convolution. Defaults to 7.
        init_cfg (dict or list[dict], optional): Initialization config. Defaults to None (each attention
            module initialises its convolutions Kaiming-normal).

    Raises:
        ValueError: if ``in_channels`` or ``reduction`` is not a positive int, or ``spatial_kernel`` is not a
            positive odd int.

    Example:
        >>> import torch
        >>> self = CBAM(in_channels=32, reduction=16).eval()
        >>> x = torch.rand(2, 32, 20, 24)
        >>> print(self(x).shape, self.channel_attention.attention(x).shape)
        torch.Size([2, 32, 20, 24]) torch.Size([2, 32, 1, 1])
    """

    _abbr_ = 'cbam'

    def __init__(self,
                 in_channels: int,
                 reduction: int = 16,
                 spatial_kernel: int = 7,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = in_channels
        self.channel_attention = ChannelAttention(in_channels, reduction)
        self.spatial_attention = SpatialAttention(spatial_kernel)

    def forward(self, x: Tensor) -> Tensor:
        """Apply channel then spatial attention to ``x`` (N, C, H, W); returns a tensor of the same shape."""
        return self.spatial_attention(self.channel_attention(x))


# Visible to mmcv's build_plugin_layer when no default scope is set (see the class docstring).
MMENGINE_MODELS.register_module(module=CBAM)
