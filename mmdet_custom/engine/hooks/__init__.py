from .nan_skip_hook import NanSkipHook  # noqa: F401
from .preemption_hook import PREEMPTED_EXIT, PreemptionHook, preempted_by  # noqa: F401
from .val_loss_hook import ValLossHook  # noqa: F401
