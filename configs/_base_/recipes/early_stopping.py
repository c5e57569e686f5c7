# Stop training when the validation segm mAP has not improved by at least 0.001 (CocoMetric reports 3 decimals)
# in 5 validations. mmengine's default min_delta (0.1) would be far too coarse for an AP in [0, 1].
# strict=True: a val_evaluator that does not report coco/segm_mAP fails at the first validation instead of
# silently never stopping. The hook's counters are not checkpointed: a resumed run starts its patience afresh.
# Use: custom_hooks = [_base_._early_stopping_hook, ...]
_early_stopping_hook = dict(
    type='EarlyStoppingHook', monitor='coco/segm_mAP', rule='greater', min_delta=0.001, patience=5, strict=True)
