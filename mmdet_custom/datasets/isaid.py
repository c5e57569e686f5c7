"""The iSAID dataset with its 15 official class names (Waqas Zamir et al., iSAID, CVPR-W 2019, Sec. 3).

mmdet 3.3's ``iSAIDDataset`` spells storage tanks 'store_tank' and lists a fake 'background' class. Because
``CocoDataset`` matches categories by *name*, every 'storage_tank' annotation of a converted json is then silently
dropped. This dataset uses the devkit's names and colours, so the converter and the model agree.
"""
from mmdet.registry import DATASETS

from mmdet_custom.utils.isaid_meta import ISAID_CLASSES, ISAID_PALETTE

from .named_coco import NamedCocoDataset


@DATASETS.register_module()
class ISAIDInstanceDataset(NamedCocoDataset):
    """COCO-format iSAID patches with the devkit's 15 class names, in devkit order (label i = ``ISAID_CLASSES[i]``).

    Reads both the jsons of ``tools/dataset_converters/isaid.py`` (ids 1..15 in devkit order) and the devkit's own
    ``instancesonly_filtered_<split>.json`` (only the classes present, in order of first appearance, iSAID's fixed
    ids): categories are matched by name (:class:`NamedCocoDataset`), so each class gets its label whatever the
    json's ids and order, and the official train and val jsons (which give the same class different ids) agree.

    Raises:
        UserError: a category name that is not an iSAID class, or (training) a json without annotations of any
            class; see :class:`NamedCocoDataset`.
    """

    METAINFO = {'classes': ISAID_CLASSES, 'palette': ISAID_PALETTE}
