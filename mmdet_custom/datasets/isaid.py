"""The iSAID dataset with its 15 official class names (Waqas Zamir et al., iSAID, CVPR-W 2019, Sec. 3).

mmdet 3.3's ``iSAIDDataset`` spells storage tanks 'store_tank' and lists a fake 'background' class. Because
``CocoDataset`` matches categories by *name*, every 'storage_tank' annotation of a converted json is then silently
dropped. This dataset uses the devkit's names and colours, so the converter and the model agree.
"""
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

#: The 15 iSAID classes in devkit order; category id = index + 1 in the converted COCO json.
ISAID_CLASSES = ('ship', 'storage_tank', 'baseball_diamond', 'tennis_court', 'basketball_court',
                 'Ground_Track_Field', 'Bridge', 'Large_Vehicle', 'Small_Vehicle', 'Helicopter',
                 'Swimming_pool', 'Roundabout', 'Soccer_ball_field', 'plane', 'Harbor')

#: Class colours of the devkit's ``*_instance_color_RGB.png`` masks, (R, G, B), in ``ISAID_CLASSES`` order.
ISAID_PALETTE = [(0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255), (0, 127, 63),
                 (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 191, 127), (0, 127, 191),
                 (0, 127, 255), (0, 100, 155)]


@DATASETS.register_module()
class ISAIDInstanceDataset(CocoDataset):
    """COCO-format iSAID patches (as written by ``tools/dataset_converters/isaid.py``) with correct class names.

    Annotations are matched to ``METAINFO['classes']`` by category name, exactly as ``CocoDataset`` does, so a
    json whose category ids differ (e.g. the official train and val jsons) still maps each class correctly.
    """

    METAINFO = {'classes': ISAID_CLASSES, 'palette': ISAID_PALETTE}
