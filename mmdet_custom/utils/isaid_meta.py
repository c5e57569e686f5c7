"""iSAID's class names and mask colours (Waqas Zamir et al., iSAID, CVPR-W 2019, Sec. 3), torch-free.

They live here, at the bottom layer, so that the converters' command lines can read them without importing torch or
mmdet; :mod:`mmdet_custom.datasets.isaid` re-exports them.
"""

#: The 15 iSAID classes in devkit order; category id = index + 1 in the converted COCO json.
ISAID_CLASSES = ('ship', 'storage_tank', 'baseball_diamond', 'tennis_court', 'basketball_court',
                 'Ground_Track_Field', 'Bridge', 'Large_Vehicle', 'Small_Vehicle', 'Helicopter',
                 'Swimming_pool', 'Roundabout', 'Soccer_ball_field', 'plane', 'Harbor')

#: Class colours of the devkit's ``*_instance_color_RGB.png`` masks, (R, G, B), in ``ISAID_CLASSES`` order.
ISAID_PALETTE = [(0, 0, 63), (0, 63, 63), (0, 63, 0), (0, 63, 127), (0, 63, 191), (0, 63, 255), (0, 127, 63),
                 (0, 127, 127), (0, 0, 127), (0, 0, 191), (0, 0, 255), (0, 191, 127), (0, 127, 191),
                 (0, 127, 255), (0, 100, 155)]
