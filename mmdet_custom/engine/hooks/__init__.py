from .nan_skip_hook import NanSkipHook  # noqa: F401
