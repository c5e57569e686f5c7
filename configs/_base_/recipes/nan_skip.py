# Skip the optimizer update of any iteration whose loss is NaN or Inf; stop with an error after 10 in a row.
# Use: custom_hooks = [_base_._nan_skip_hook, ...]   (see mmdet_custom/engine/hooks/nan_skip_hook.py)
_nan_skip_hook = dict(type='NanSkipHook', max_consecutive_skips=10)
