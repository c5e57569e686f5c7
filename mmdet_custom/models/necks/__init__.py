from .attention_fpn import AttentionFPN
from .transformer_fpn import TransformerFPN

__all__ = ['AttentionFPN', 'TransformerFPN']
