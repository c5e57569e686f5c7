from .isaid import ISAID_CLASSES, ISAID_PALETTE, ISAIDInstanceDataset
from .named_coco import EmptyTrainingSetError, NamedCocoDataset

__all__ = ['ISAID_CLASSES', 'ISAID_PALETTE', 'ISAIDInstanceDataset', 'NamedCocoDataset', 'EmptyTrainingSetError']
