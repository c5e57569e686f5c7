from .isaid import ISAID_CLASSES, ISAID_PALETTE, ISAIDInstanceDataset

__all__ = ['ISAID_CLASSES', 'ISAID_PALETTE', 'ISAIDInstanceDataset']
