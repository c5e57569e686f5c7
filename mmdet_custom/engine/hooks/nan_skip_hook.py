"""Skip the parameter update of an iteration whose loss is NaN or Inf."""
import functools
from typing import List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict

from mmdet.registry import HOOKS


@HOOKS.register_module()
class NanSkipHook(Hook):
    """Skip updates whose loss is not finite, count them, and stop after too many in a row.

    mmengine's train step calls ``optim_wrapper.update_params(loss)`` inside ``model.train_step``, where no hook
    is called. So in ``before_train`` this hook wraps ``update_params`` of the runner's optimizer wrapper (of each
    wrapper of an ``OptimWrapperDict``) and removes the wrap in ``after_train``:

    - loss finite everywhere (``torch.isfinite``): the original ``update_params`` runs unchanged;
    - otherwise: no backward, no optimizer step (weights, momentum and the optimizer's step count stay as they
      were), the gradients are zeroed and the wrapper's update counter still advances. With gradient accumulation
      (``accumulative_counts > 1``) the skip therefore drops the whole accumulation window, and the following
      windows stay aligned with the iterations.

    The check is on the total loss, before ``AmpOptimWrapper``'s ``GradScaler``, which still skips the steps whose
    scaled *gradients* overflow, so both work together. Each skip is logged as a warning naming the iteration
    (1-based, as in the log line) and the loss; the running total is the message-hub scalar ``train/nan_skips``,
    which appears in the log line and in TensorBoard / W&B and is restored on resume.

    Args:
        max_consecutive_skips (int): raise once this many updates in a row have been skipped. Defaults to 10.

    Raises:
        ValueError: when ``max_consecutive_skips < 1``.
        RuntimeError: during training, at the ``max_consecutive_skips``-th consecutive non-finite loss; the
            message names the first and last iterations of the run of skips.

    Example:
        >>> custom_hooks = [dict(type='NanSkipHook', max_consecutive_skips=10)]
    """

    def __init__(self, max_consecutive_skips: int = 10) -> None:
        if max_consecutive_skips < 1:
            raise ValueError(f'max_consecutive_skips must be >= 1, got {max_consecutive_skips}')
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self.total_skips = 0
        self._first_skipped_iter = 0
        self._wrapped: List[OptimWrapper] = []

    def before_train(self, runner) -> None:
        hub = runner.message_hub
        if 'train/nan_skips' in hub.log_scalars:  # resumed run
            self.total_skips = int(hub.get_scalar('train/nan_skips').current())
        hub.update_scalar('train/nan_skips', self.total_skips)
        optim_wrapper = runner.optim_wrapper
        wrappers = optim_wrapper.values() if isinstance(optim_wrapper, OptimWrapperDict) else [optim_wrapper]
        for wrapper in wrappers:
            wrapper.update_params = self._guard(runner, wrapper)
            self._wrapped.append(wrapper)

    def after_train(self, runner) -> None:
        for wrapper in self._wrapped:
            del wrapper.update_params  # back to the class's method
        self._wrapped = []

    def _guard(self, runner, wrapper: OptimWrapper):
        update_params = wrapper.update_params

        @functools.wraps(update_params)
        def guarded(loss: torch.Tensor, step_kwargs: Optional[dict] = None, zero_kwargs: Optional[dict] = None):
            if bool(torch.isfinite(loss).all()):
                self.consecutive_skips = 0
                return update_params(loss, step_kwargs=step_kwargs, zero_kwargs=zero_kwargs)
            wrapper.zero_grad(**(zero_kwargs or {}))
            wrapper._inner_count += 1  # as backward() would: keeps accumulation windows on the iteration grid
            it = runner.iter + 1
            if self.consecutive_skips == 0:
                self._first_skipped_iter = it
            self.consecutive_skips += 1
            self.total_skips += 1
            runner.message_hub.update_scalar('train/nan_skips', self.total_skips)
            runner.logger.warning(f'NanSkipHook: loss is {loss.detach().float().sum().item()} at iteration {it}; '
                                  f'parameter update skipped ({self.consecutive_skips} in a row, '
                                  f'{self.total_skips} in total)')
            if self.consecutive_skips >= self.max_consecutive_skips:
                raise RuntimeError(
                    f'NanSkipHook: the loss was NaN or Inf at {self.consecutive_skips} consecutive iterations '
                    f'({self._first_skipped_iter} to {it}, 1-based as in the log; '
                    f'max_consecutive_skips={self.max_consecutive_skips}). Training diverged: lower the learning '
                    f'rate, lengthen the warmup, clip gradients (optim_wrapper.clip_grad) or check those batches.')
            return None

        return guarded
