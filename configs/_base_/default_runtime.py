# Runtime shared by every mmdet_custom config: mmdet's defaults plus the import that registers our modules.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['mmdet_custom.register'], allow_failed_imports=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    # keep the best segm AP checkpoint next to the last ones
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='coco/segm_mAP', rule='greater'))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
