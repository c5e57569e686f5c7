"""The iSAID dataset with its 15 official class names (Waqas Zamir et al., iSAID, CVPR-W 2019, Sec. 3).

mmdet 3.3's ``iSAIDDataset`` spells storage tanks 'store_tank' and lists a fake 'background' class. Because
``CocoDataset`` matches categories by *name*, every 'storage_tank' annotation of a converted json is then silently
dropped. This dataset uses the devkit's names and colours, so the converter and the model agree.
"""
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from mmdet_custom.utils.isaid_meta import ISAID_CLASSES, ISAID_PALETTE


@DATASETS.register_module()
class ISAIDInstanceDataset(CocoDataset):
    """COCO-format iSAID patches (as written by ``tools/dataset_converters/isaid.py``) with correct class names.

    Annotations are matched to ``METAINFO['classes']`` by category name, exactly as ``CocoDataset`` does, so a
    json whose category ids differ (e.g. the official train and val jsons) still maps each class correctly.
    """

    METAINFO = {'classes': ISAID_CLASSES, 'palette': ISAID_PALETTE}
