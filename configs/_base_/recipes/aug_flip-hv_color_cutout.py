# Training augmentations for aerial images, to put between Resize and PackDetInputs:
# - one of the four flips {none, horizontal, vertical, both (= 'diagonal', a 180 deg rotation)}, each with p=0.25:
#   overhead views have no preferred orientation (replaces the parent's horizontal-only RandomFlip);
# - brightness and contrast jitter by a random factor in [0.8, 1.2] (Albumentations ColorJitter, applied to every
#   image as torchvision's ColorJitter is; the image alone changes, boxes and masks pass through);
# - with p=0.5, one 50x50 px square of the image set to black (CutOut, DeVries & Taylor 2017); labels unchanged.
# Albumentations draws from its own random generator, not seeded by mmengine's `randomness.seed`.
# Use: train_pipeline = [<load>, <LoadCompactAnnotations>, <Resize>, *_base_._aug_flip_hv_color_cutout, <PackDetInputs>]
_aug_flip_hv_color_cutout = [
    dict(type='RandomFlip', prob=[0.25, 0.25, 0.25], direction=['horizontal', 'vertical', 'diagonal']),
    # keymap: the jitter reads and writes the image only, so boxes and (polygon) masks pass through untouched
    # (mmdet's Albu refuses PolygonMasks when it maps them)
    dict(type='Albu', keymap=dict(img='image'), transforms=[dict(type='ColorJitter', brightness=0.2, contrast=0.2, saturation=0.0, hue=0.0,
                                       p=1.0)]),
    dict(type='RandomApply', transforms=[dict(type='CutOut', n_holes=1, cutout_shape=(50, 50))], prob=0.5),
]
