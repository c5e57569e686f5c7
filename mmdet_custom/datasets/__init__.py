from .isaid import ISAID_CLASSES, ISAID_PALETTE, ISAIDInstanceDataset
from .named_coco import EmptyTrainingSetError, NamedCocoDataset
from .transforms import LoadCompactAnnotations
from .utils import innermost_dataset_cfg

__all__ = [
    'ISAID_CLASSES', 'ISAID_PALETTE', 'ISAIDInstanceDataset', 'NamedCocoDataset', 'EmptyTrainingSetError',
    'LoadCompactAnnotations', 'innermost_dataset_cfg'
]
