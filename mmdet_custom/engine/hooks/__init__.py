from .nan_skip_hook import NanSkipHook  # noqa: F401
from .val_loss_hook import ValLossHook  # noqa: F401
