# Linear warmup over the first 500 iterations (lr x 0.001 -> lr), then cosine annealing over the 12 epochs of the
# 1x schedule down to lr x 0.01, updated every iteration (convert_to_iter_based). For another length set `end` and
# `T_max` to train_cfg.max_epochs; for an IterBasedTrainLoop use by_epoch=False and end = T_max = max_iters.
# Use: param_scheduler = _base_._warmup_cosine_param_scheduler
_warmup_cosine_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', eta_min_ratio=0.01, T_max=12, by_epoch=True, begin=0, end=12,
         convert_to_iter_based=True),
]
