"""FPN followed by a transformer encoder over all pyramid levels and a gated fusion of the levels."""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.layers import SinePositionalEncoding
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class TransformerFPN(FPN):
    r"""FPN whose levels exchange context through a small transformer encoder, then through a gated fusion.

    mmdet's :class:`~mmdet.models.necks.FPN` (Lin et al., FPN, CVPR 2017, Sec. 3) computes the pyramid
    :math:`P_l` (``num_outs`` levels, e.g. P2-P6, ``out_channels`` each) unchanged. Two residual branches follow:

    1. **Transformer over all levels** (the attention neck of a microscopy cell-segmentation study, in the spirit of
       Deformable DETR's multi-scale encoder, Zhu et al., ICLR 2021, Sec. 4.1): each level is average-pooled to an
       ``r x r`` grid (``r = pool_size``; a level smaller than that keeps its own size), flattened to tokens and
       projected to ``embed_dims`` by its own linear layer (pooling and a per-pixel projection commute, so this is
       the projection followed by pooling, at a fraction of the cost); a 2D sinusoidal positional encoding
       (mmdet's :class:`~mmdet.models.layers.SinePositionalEncoding`, normalised to the grid, Carion et al., DETR,
       ECCV 2020) and a learnable per-level embedding are added; one pre-norm transformer encoder
       (``num_layers`` layers of ``num_heads``-head self-attention + GELU FFN, Vaswani et al., NeurIPS 2017) runs over
       the tokens of all levels together; each level's tokens are projected back to ``out_channels``, reshaped to the
       grid, bilinearly upsampled to the level's size and added to it:
       :math:`P'_l = P_l + \mathrm{up}(\mathrm{proj}_l(\mathrm{Enc}(T)_l))`.
    2. **Gated fusion** (Sun et al., ROBIO 2023): global average pooling of each :math:`P'_l`, a 1x1 convolution
       (one per level, ``out_channels -> 1``) and a softmax over the levels give one weight :math:`g_l` per level
       and image (positive, summing to 1); the levels are resized to the size of level ``refine_level`` as in
       Libra R-CNN's BFP (Pang et al., CVPR 2019, Sec. 3.2: adaptive max pooling of finer levels, nearest
       upsampling of coarser ones) and summed with these weights; the sum is resized back to every level (nearest
       upsampling / adaptive max pooling) and added:
       :math:`P''_l = P'_l + \alpha \cdot \mathrm{resize}_l(\sum_k g_k \, \mathrm{resize}(P'_k))`.

    With ``zero_init_branches=True`` (default) the back-projections of branch 1 are zero-initialised (ReZero-style,
    Bachlechner et al., 2020) and the scale :math:`\alpha` of branch 2 starts at 0, so at initialisation the neck
    computes exactly mmdet's FPN (and loads FPN checkpoints: every FPN weight keeps its name); the branches grow
    from there during training. The branches use ``nn.Linear`` / ``nn.Parameter`` weights, which FPN's default
    ``init_cfg`` (Xavier on ``Conv2d``) does not touch; it does initialise the gate convolution.

    Args:
        in_channels (list[int]): Number of input channels per scale.
        out_channels (int): Number of output channels (used at each scale).
        num_outs (int): Number of output scales.
        pool_size (int): Side ``r`` of the token grid of each level. Defaults to 14.
        embed_dims (int): Width of the tokens; a multiple of 4 (sine encoding) and of ``num_heads``.
            Defaults to 256.
        num_heads (int): Attention heads. Defaults to 8.
        num_layers (int): Transformer encoder layers. Defaults to 1.
        ffn_ratio (int): Hidden width of the encoder's FFN, as a multiple of ``embed_dims``. Defaults to 4.
        dropout (float): Dropout of the encoder (attention weights and FFN). Defaults to 0.1.
        refine_level (int): Index (among the ``num_outs`` outputs) of the level at whose size the gated fusion
            sums the levels. Defaults to 2 (P4 when the outputs are P2-P6).
        zero_init_branches (bool): Start both branches at zero (the neck then equals FPN exactly); with False the
            back-projections keep PyTorch's default init and :math:`\alpha` starts at 1. Defaults to True.
        \*\*kwargs: The other arguments of :class:`~mmdet.models.necks.FPN` (``start_level``, ``end_level``,
            ``add_extra_convs``, ``relu_before_extra_convs``, ``no_norm_on_lateral``, ``conv_cfg``, ``norm_cfg``,
            ``act_cfg``, ``upsample_cfg``, ``init_cfg``) with its defaults.

    Raises:
        ValueError: if ``pool_size`` < 1, ``embed_dims`` is not a multiple of 4 and of ``num_heads``,
            ``num_layers`` < 1 or ``refine_level`` is not in ``[0, num_outs)``.

    Example:
        >>> import torch
        >>> in_channels = [2, 3, 5, 7]
        >>> scales = [83, 42, 21, 11]  # odd sizes, e.g. a 331 x 331 image
        >>> inputs = [torch.rand(1, c, s, s)
        ...           for c, s in zip(in_channels, scales)]
        >>> self = TransformerFPN(in_channels, 16, len(in_channels) + 1, embed_dims=32).eval()
        >>> outputs = self.forward(inputs)
        >>> for i in range(len(outputs)):
        ...     print(f'outputs[{i}].shape = {outputs[i].shape}')
        outputs[0].shape = torch.Size([1, 16, 83, 83])
        outputs[1].shape = torch.Size([1, 16, 42, 42])
        outputs[2].shape = torch.Size([1, 16, 21, 21])
        outputs[3].shape = torch.Size([1, 16, 11, 11])
        outputs[4].shape = torch.Size([1, 16, 6, 6])
        >>> gates = self.level_gates(outputs)  # one weight per level and image, summing to 1
        >>> print(tuple(gates.shape), round(gates.sum().item(), 4))
        (1, 5) 1.0
    """

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int,
                 num_outs: int,
                 pool_size: int = 14,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_layers: int = 1,
                 ffn_ratio: int = 4,
                 dropout: float = 0.1,
                 refine_level: int = 2,
                 zero_init_branches: bool = True,
                 **kwargs) -> None:
        super().__init__(in_channels, out_channels, num_outs, **kwargs)
        if pool_size < 1:
            raise ValueError(f'pool_size must be >= 1, got {pool_size}')
        if embed_dims % 4 or embed_dims % num_heads:
            raise ValueError(f'embed_dims must be a multiple of 4 (sine encoding) and of num_heads={num_heads}, '
                             f'got {embed_dims}')
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        if not 0 <= refine_level < num_outs:
            raise ValueError(f'refine_level must lie in [0, num_outs={num_outs}), got {refine_level}')
        self.pool_size = pool_size
        self.embed_dims = embed_dims
        self.refine_level = refine_level

        # branch 1: tokens of every level -> one transformer encoder -> back to every level
        self.token_projs = nn.ModuleList(nn.Linear(out_channels, embed_dims) for _ in range(num_outs))
        self.positional_encoding = SinePositionalEncoding(num_feats=embed_dims // 2, normalize=True)
        self.level_embeds = nn.Parameter(torch.empty(num_outs, embed_dims))
        nn.init.normal_(self.level_embeds)  # as Deformable DETR's level_embed
        encoder_layer = nn.TransformerEncoderLayer(
            embed_dims, num_heads, dim_feedforward=ffn_ratio * embed_dims, dropout=dropout, activation='gelu',
            batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(
            encoder_layer, num_layers, norm=nn.LayerNorm(embed_dims), enable_nested_tensor=False)
        self.output_projs = nn.ModuleList(nn.Linear(embed_dims, out_channels) for _ in range(num_outs))

        # branch 2: gated fusion, one 1x1 conv (out_channels -> 1) per level on its pooled descriptor
        self.gate = nn.Conv2d(num_outs * out_channels, num_outs, 1, groups=num_outs)
        self.fusion_scale = nn.Parameter(torch.tensor(0.0 if zero_init_branches else 1.0))
        if zero_init_branches:
            for proj in self.output_projs:
                nn.init.zeros_(proj.weight)
                nn.init.zeros_(proj.bias)

    def transformer_residuals(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Branch 1: the transformer's contribution to every level.

        Args:
            feats (Sequence[Tensor]): ``num_outs`` maps, each (N, out_channels, H_l, W_l).

        Returns:
            list[Tensor]: One map per level, shaped like ``feats[l]``.
        """
        tokens, grids = [], []
        for level, feat in enumerate(feats):
            grid = (min(self.pool_size, feat.size(2)), min(self.pool_size, feat.size(3)))
            pooled = F.adaptive_avg_pool2d(feat, grid)  # (N, C, h, w)
            pos = self.positional_encoding(pooled.new_zeros((feat.size(0), ) + grid, dtype=torch.int))
            tokens.append(self.token_projs[level](pooled.flatten(2).transpose(1, 2))  # (N, h*w, embed_dims)
                          + pos.flatten(2).transpose(1, 2) + self.level_embeds[level])
            grids.append(grid)
        encoded = self.encoder(torch.cat(tokens, dim=1))
        residuals = []
        chunks = encoded.split([h * w for h, w in grids], dim=1)
        for level, (feat, chunk, grid) in enumerate(zip(feats, chunks, grids)):
            residual = self.output_projs[level](chunk).transpose(1, 2).reshape(feat.size(0), feat.size(1), *grid)
            if grid != tuple(feat.shape[2:]):
                residual = F.interpolate(residual, size=feat.shape[2:], mode='bilinear', align_corners=False)
            residuals.append(residual)
        return residuals

    def level_gates(self, feats: Sequence[Tensor]) -> Tensor:
        """Fusion weights: GAP of each level, its 1x1 conv, softmax over levels.

        Args:
            feats (Sequence[Tensor]): ``num_outs`` maps, each (N, out_channels, H_l, W_l).

        Returns:
            Tensor: (N, num_outs), positive, each row summing to 1.
        """
        pooled = torch.cat([feat.mean(dim=(2, 3), keepdim=True) for feat in feats], dim=1)  # (N, L*C, 1, 1)
        return self.gate(pooled).flatten(1).softmax(dim=1)

    def gated_fusion_residuals(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Branch 2 (before the scale :math:`\\alpha`): the gated sum of the levels, resized to every level.

        Args:
            feats (Sequence[Tensor]): ``num_outs`` maps, each (N, out_channels, H_l, W_l).

        Returns:
            list[Tensor]: One map per level, shaped like ``feats[l]``.
        """
        gates = self.level_gates(feats)
        size = feats[self.refine_level].shape[2:]
        fused = sum(gates[:, level].view(-1, 1, 1, 1) * (
            F.adaptive_max_pool2d(feat, size) if level < self.refine_level else F.interpolate(feat, size=size))
                    for level, feat in enumerate(feats))
        return [
            F.interpolate(fused, size=feat.shape[2:]) if level < self.refine_level else
            F.adaptive_max_pool2d(fused, feat.shape[2:]) for level, feat in enumerate(feats)
        ]

    def forward(self, inputs: Tuple[Tensor]) -> tuple:
        """Forward function.

        Args:
            inputs (tuple[Tensor]): Features from the upstream network, each is a 4D-tensor
                (N, in_channels[i], H_i, W_i).

        Returns:
            tuple[Tensor]: ``num_outs`` feature maps, each (N, out_channels, H_l, W_l) as :meth:`FPN.forward`
            gives them, after both branches.
        """
        outs = super().forward(inputs)
        outs = [out + residual for out, residual in zip(outs, self.transformer_residuals(outs))]
        return tuple(out + self.fusion_scale * residual
                     for out, residual in zip(outs, self.gated_fusion_residuals(outs)))
