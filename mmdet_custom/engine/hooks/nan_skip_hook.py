"""Skip the parameter update of an iteration whose loss or gradients are NaN or Inf, and undo its BN statistics."""
import functools
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict

#: Buffers of a normalisation layer that its forward pass updates in training mode.
_RUNNING_STATS = ('running_mean', 'running_var', 'num_batches_tracked')


@HOOKS.register_module()
class NanSkipHook(Hook):
    """Skip updates whose loss or gradients are not finite, undo their BN statistics, count them, and stop after
    too many in a row.

    mmengine's train step calls ``optim_wrapper.update_params(loss)`` inside ``model.train_step``, where no hook
    is called. So in ``before_train`` this hook wraps ``update_params`` and ``step`` of the runner's optimizer
    wrapper (of each wrapper of an ``OptimWrapperDict``) and removes the wraps in ``after_train``:

    - loss not finite (``torch.isfinite``): no backward, no optimizer step (weights, momentum and the optimizer's
      step count stay as they were), the gradients are zeroed and the wrapper's update counter still advances.
      With gradient accumulation (``accumulative_counts > 1``) the skip therefore drops the whole accumulation
      window, and the following windows stay aligned with the iterations.
    - loss finite but a gradient not finite (e.g. ``sqrt`` or a norm at 0, a division by a zero-sized box): the
      check runs in ``step``, after backward and before gradient clipping (which would spread one NaN over every
      gradient) and the optimizer step; the step is skipped and ``update_params`` then zeroes the gradients. With
      ``AmpOptimWrapper`` and an enabled ``GradScaler`` this check is left to the scaler, which already skips
      such steps and lowers the loss scale (overflowing *scaled* gradients are expected there).
    - either way, the running statistics of the normalisation layers in training mode (``running_mean``,
      ``running_var``, ``num_batches_tracked`` of ``BatchNorm``/``SyncBatchNorm``), which the forward pass has
      already updated with the bad batch, are restored to their values before the iteration: they are copied in
      ``before_train_iter`` (a few kB per layer). A skipped iteration thus leaves the model exactly as it was.
      (With gradient accumulation, only the statistics of the iteration whose loss or step is skipped are
      restored, not those of the earlier iterations of its window.)

    Each skip is logged as a warning naming the iteration (1-based, as in the log line) and the loss or the first
    parameter with a non-finite gradient; the running total is the message-hub scalar ``train/nan_skips``, which
    appears in the log line and in TensorBoard / W&B and is restored on resume.

    Args:
        max_consecutive_skips (int): raise once this many updates in a row have been skipped. Defaults to 10.

    Raises:
        ValueError: when ``max_consecutive_skips < 1``.
        RuntimeError: during training, at the ``max_consecutive_skips``-th consecutive skip; the message names
            the first and last iterations of the run of skips.

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
        self._norm_stats: List[Tuple[torch.Tensor, torch.Tensor]] = []  # (buffer, its copy before the iteration)
        self._param_names: Dict[torch.Tensor, str] = {}

    # ------------------------------------------------------------------------------------------------ hooks
    def before_train(self, runner) -> None:
        hub = runner.message_hub
        if 'train/nan_skips' in hub.log_scalars:  # resumed run
            self.total_skips = int(hub.get_scalar('train/nan_skips').current())
        hub.update_scalar('train/nan_skips', self.total_skips)
        self._param_names = {p: name for name, p in runner.model.named_parameters()}
        optim_wrapper = runner.optim_wrapper
        wrappers = optim_wrapper.values() if isinstance(optim_wrapper, OptimWrapperDict) else [optim_wrapper]
        for wrapper in wrappers:
            wrapper.update_params = self._guard_update(runner, wrapper)
            wrapper.step = self._guard_step(runner, wrapper)
            self._wrapped.append(wrapper)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Copy the running statistics that this iteration's forward pass may change."""
        self._norm_stats = []
        for module in runner.model.modules():
            if not module.training:
                continue
            for name in _RUNNING_STATS:
                buf = module._buffers.get(name)
                if isinstance(buf, torch.Tensor):
                    self._norm_stats.append((buf, buf.detach().clone()))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._norm_stats = []

    def after_train(self, runner) -> None:
        for wrapper in self._wrapped:
            del wrapper.update_params  # back to the class's methods
            del wrapper.step
        self._wrapped = []
        self._norm_stats = []
        self._param_names = {}

    # ------------------------------------------------------------------------------------------------ skips
    def _restore_norm_stats(self) -> int:
        with torch.no_grad():
            for buf, saved in self._norm_stats:
                buf.copy_(saved)
        return len(self._norm_stats)

    def _skip(self, runner, what: str) -> None:
        """Count a skipped update, restore the running statistics, warn, and stop after too many in a row."""
        restored = self._restore_norm_stats()
        it = runner.iter + 1
        if self.consecutive_skips == 0:
            self._first_skipped_iter = it
        self.consecutive_skips += 1
        self.total_skips += 1
        runner.message_hub.update_scalar('train/nan_skips', self.total_skips)
        runner.logger.warning(f'NanSkipHook: {what} at iteration {it}; parameter update skipped '
                              f'({self.consecutive_skips} in a row, {self.total_skips} in total)'
                              + (f'; {restored} running statistics (BN) restored' if restored else ''))
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise RuntimeError(
                f'NanSkipHook: the loss or the gradients were NaN or Inf at {self.consecutive_skips} consecutive '
                f'iterations ({self._first_skipped_iter} to {it}, 1-based as in the log; '
                f'max_consecutive_skips={self.max_consecutive_skips}). Training diverged: lower the learning '
                f'rate, lengthen the warmup, clip gradients (optim_wrapper.clip_grad) or check those batches.')

    def _first_nonfinite_grad(self, wrapper: OptimWrapper) -> Optional[str]:
        """Name of the first parameter whose gradient holds NaN or Inf, or None (one device sync)."""
        params = [p for group in wrapper.optimizer.param_groups for p in group['params'] if p.grad is not None]
        if not params:
            return None
        finite = torch.stack([torch.isfinite(p.grad).all() for p in params])
        if bool(finite.all()):
            return None
        p = params[int((~finite).nonzero()[0])]
        return self._param_names.get(p, f'a parameter of shape {tuple(p.shape)}')

    def _guard_update(self, runner, wrapper: OptimWrapper):
        update_params = wrapper.update_params

        @functools.wraps(update_params)
        def guarded(loss: torch.Tensor, step_kwargs: Optional[dict] = None, zero_kwargs: Optional[dict] = None):
            if bool(torch.isfinite(loss).all()):
                skips = self.total_skips
                result = update_params(loss, step_kwargs=step_kwargs, zero_kwargs=zero_kwargs)
                if self.total_skips == skips:  # the step (if any) was not skipped either
                    self.consecutive_skips = 0
                return result
            wrapper.zero_grad(**(zero_kwargs or {}))
            wrapper._inner_count += 1  # as backward() would: keeps accumulation windows on the iteration grid
            self._skip(runner, f'loss is {loss.detach().float().sum().item()}')
            return None

        return guarded

    def _guard_step(self, runner, wrapper: OptimWrapper):
        step = wrapper.step
        scaler = getattr(wrapper, 'loss_scaler', None)

        @functools.wraps(step)
        def guarded(**kwargs):
            if scaler is not None and scaler.is_enabled():
                return step(**kwargs)  # GradScaler skips steps with non-finite gradients itself
            name = self._first_nonfinite_grad(wrapper)
            if name is None:
                return step(**kwargs)
            self._skip(runner, f'gradient of {name} is not finite (loss finite)')
            return None

        return guarded
