# Linear warmup over the first 500 iterations, then halve the lr when the validation segm AP50 has not improved
# (relative threshold 1e-4, mmengine's default) for more than 3 validations in a row, i.e. at the 4th (PyTorch's
# ReduceLROnPlateau semantics), never below 1e-6. The plateau scheduler is stepped after each validation
# (ParamSchedulerHook.after_val_epoch): with train_cfg.val_interval > 1 the patience counts validations, not epochs.
# Use: param_scheduler = _base_._plateau_segm_ap50_param_scheduler
_plateau_segm_ap50_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='ReduceOnPlateauLR', monitor='coco/segm_mAP_50', rule='greater', factor=0.5, patience=3,
         min_value=1e-6, by_epoch=True),
]
