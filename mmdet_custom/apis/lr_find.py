"""LR range test: train a few iterations with an exponentially rising learning rate and read a good lr off the loss.

Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, Sec. 3.3 ("LR range test"): run the model
for a short while with the learning rate raised from a low to a high value and plot the loss against it; the loss
first stays flat, then falls, then becomes ragged and rises. A good lr lies where it falls fastest.

Here the run is the config's own training (model, data, optimizer, gradient clipping, ``paramwise_cfg``) through
mmengine's ``Runner``, with three changes: the schedule is mmengine's ``ExponentialLR`` from ``start`` to ``end``
over ``iters`` iterations (every parameter group is scaled by the same factor, so lr multipliers keep their
ratios; reported lrs are those of the first group, the base lr), there is no validation, and nothing is saved
(no checkpoint hook, logs in a temporary work dir unless one is given). The config file and any checkpoint it
loads (``load_from``) are only read.

The loss is smoothed by an exponential moving average with bias correction (``smooth``), the test stops early when
the smoothed loss exceeds ``diverge`` times its minimum or a loss is not finite. Two readings are reported:

- ``steepest_lr``: where the smoothed loss falls fastest, i.e. the minimum of its derivative with respect to
  ``log10(lr)`` (``numpy.gradient``), searched before the minimum of the curve. This is the suggested lr.
- ``min_loss_lr / 10``: one decade below the lr of the lowest smoothed loss (a common, more conservative rule;
  the minimum itself is already on the edge of divergence).
"""
import math
import os.path as osp
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
from mmengine.config import ConfigDict
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmdet_custom.analysis._io import new_figure, save_figure
from mmdet_custom.apis.runner import isolate_run
from mmdet_custom.utils.config import read_config
from mmdet_custom.utils.errors import UserError

__all__ = [
    'LRFindError', 'LRFindResult', 'LRRangeTestHook', 'lr_range_test', 'suggest_lr', 'smooth_losses', 'plot_lr_find'
]


class LRFindError(UserError, ValueError):
    """Arguments of the LR range test that cannot give a result (range, iterations, smoothing)."""


@dataclass
class LRFindResult:
    """The curve of an LR range test and the lrs read off it.

    Attributes:
        lrs (list[float]): base lr of each iteration run.
        losses (list[float]): total training loss of each iteration (may end with a non-finite value).
        smoothed (list[float]): bias-corrected exponential moving average of ``losses``.
        suggested_lr (float): the steepest-descent lr (see the module docstring); ``min_loss_lr / 10`` when the
            curve has fewer than 3 finite points.
        steepest_lr (float | None): the lr of the steepest descent of the smoothed loss.
        min_loss_lr (float): the lr of the lowest smoothed loss.
        stopped_early (bool): the loss diverged before ``iters`` iterations.
        start, end (float): the lr range asked for; iters (int): the iterations asked for.
    """
    lrs: List[float]
    losses: List[float]
    smoothed: List[float]
    suggested_lr: float
    steepest_lr: Optional[float]
    min_loss_lr: float
    stopped_early: bool
    start: float
    end: float
    iters: int
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """json-ready (non-finite losses as None)."""
        d = asdict(self)
        d['losses'] = [v if math.isfinite(v) else None for v in self.losses]
        d['smoothed'] = [v if math.isfinite(v) else None for v in self.smoothed]
        return d


def smooth_losses(losses, beta: float = 0.98) -> List[float]:
    """Bias-corrected exponential moving average: ``avg_i = beta avg_{i-1} + (1 - beta) loss_i``, reported as
    ``avg_i / (1 - beta^(i+1))`` (so the first values are not pulled towards 0). A non-finite loss makes the rest
    of the curve non-finite."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * float(loss)
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest_lr(lrs, smoothed, skip_start: int = 0) -> Dict[str, Optional[float]]:
    """Read the steepest-descent and the minimum-loss lrs off a smoothed LR range curve.

    Args:
        lrs (Sequence[float]): increasing lrs (> 0).
        smoothed (Sequence[float]): smoothed loss at each lr; non-finite values are dropped.
        skip_start (int): leading points ignored by the steepest-descent search (the first smoothed values rest
            on few samples).

    Returns:
        dict: ``steepest_lr`` (None with fewer than 3 finite points), ``min_loss_lr`` and ``suggested_lr``
        (``steepest_lr``, else ``min_loss_lr / 10``).

    Raises:
        LRFindError: when no loss is finite.
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    values = np.asarray(smoothed, dtype=np.float64)
    keep = np.isfinite(values)
    lrs, values = lrs[keep], values[keep]
    if len(values) == 0:
        raise LRFindError('the LR range test gave no finite loss: lower --start, or check the config trains at all')
    i_min = int(np.argmin(values))
    min_loss_lr = float(lrs[i_min])
    steepest = None
    if len(values) >= 3:
        slope = np.gradient(values, np.log10(lrs))
        lo = min(skip_start, max(i_min - 1, 0))
        hi = max(i_min, lo + 1)  # the descent lies before the minimum
        steepest = float(lrs[lo + int(np.argmin(slope[lo:hi]))])
    return dict(steepest_lr=steepest, min_loss_lr=min_loss_lr,
                suggested_lr=steepest if steepest is not None else min_loss_lr / 10)


class LRRangeTestHook(Hook):
    """Record the base lr and the total loss of each iteration; stop the loop when the smoothed loss diverges.

    Args:
        beta (float): EMA factor of the smoothed loss (see :func:`smooth_losses`).
        diverge (float): stop once the smoothed loss exceeds this many times its minimum, or is not finite.
    """
    priority = 'LOW'

    def __init__(self, beta: float = 0.98, diverge: float = 4.0) -> None:
        self.beta, self.diverge = beta, diverge
        self.lrs: List[float] = []
        self.losses: List[float] = []
        self.smoothed: List[float] = []
        self.stopped_early = False
        self._avg = 0.0
        self._best = math.inf

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        # the lr this iteration uses (ParamSchedulerHook steps the schedule after the iteration)
        self.lrs.append(float(runner.optim_wrapper.get_lr()['lr'][0]))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        loss = outputs.get('loss', math.nan) if outputs else math.nan
        loss = float(loss.detach() if hasattr(loss, 'detach') else loss)
        self.losses.append(loss)
        n = len(self.losses)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smoothed = self._avg / (1 - self.beta ** n)
        self.smoothed.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > self.diverge * self._best:
            self.stopped_early = True
            runner.train_loop.stop_training = True
            runner.logger.info(f'LR range test: the loss diverged at lr {self.lrs[-1]:.3g} (iteration {n}); stopping')
        self._best = min(self._best, smoothed)


def _check_args(start: float, end: float, iters: int, smooth: float, diverge: float) -> None:
    if not (start > 0 and end > start):
        raise LRFindError(f'--start and --end must satisfy 0 < start < end, got start={start}, end={end}')
    if iters < 3:
        raise LRFindError(f'--iters must be at least 3 to read a slope off the curve, got {iters}')
    if not 0 <= smooth < 1:
        raise LRFindError(f'--smooth must be in [0, 1), got {smooth}')
    if diverge <= 1:
        raise LRFindError(f'--diverge must be > 1 (a factor over the lowest smoothed loss), got {diverge}')


def lr_range_test(config: Union[str, Any],
                  start: float = 1e-7,
                  end: float = 1.0,
                  iters: int = 100,
                  smooth: float = 0.98,
                  diverge: float = 4.0,
                  work_dir: Optional[str] = None,
                  cfg_options: Optional[Mapping[str, Any]] = None) -> LRFindResult:
    """Run the LR range test on ``config`` (see the module docstring) and return the curve and suggestions.

    Args:
        config (str | Config): config file or object (not modified).
        start (float): lr of the first iteration. Defaults to 1e-7.
        end (float): lr the last iteration would reach (``start * gamma^(iters - 1)``). Defaults to 1.
        iters (int): iterations at most (one batch each). Defaults to 100.
        smooth (float): EMA factor ``beta`` of the smoothed loss, in [0, 1). Defaults to 0.98 (fast.ai's).
        diverge (float): stop once the smoothed loss exceeds this many times its minimum. Defaults to 4.
        work_dir (str, optional): where mmengine's logs go; a temporary folder (removed) when None.
        cfg_options (Mapping, optional): ``--cfg-options`` overrides (checked as ``tools/train.py`` checks them).

    Returns:
        LRFindResult: the curve; ``suggested_lr`` lies in ``[start, end]``.

    Raises:
        LRFindError: an impossible range / iteration count / factor, or no finite loss at all.
        UserError: a bad config key (see :func:`mmdet_custom.utils.config.read_config`).
    """
    _check_args(start, end, iters, smooth, diverge)

    cfg = read_config(config, cfg_options)
    isolate_run(cfg)  # its work dir is temporary: a later run in this process must not log there
    gamma = (end / start) ** (1.0 / (iters - 1))
    cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = [dict(type='ExponentialLR', gamma=gamma, by_epoch=False, begin=0, end=iters)]
    if 'optimizer' not in cfg.get('optim_wrapper', {}):
        raise LRFindError('the LR range test needs one optimizer (optim_wrapper.optimizer); this config has '
                          f'{sorted(cfg.get("optim_wrapper", {}))}')
    cfg.optim_wrapper.optimizer.lr = start
    cfg.resume = False
    if cfg.get('auto_scale_lr'):  # the range is the lr actually used, for the batch size actually run
        cfg.auto_scale_lr.enable = False
    cfg.default_hooks.checkpoint = None  # nothing is saved
    cfg.log_processor = dict(cfg.get('log_processor', {}), by_epoch=False)
    cfg.launcher = 'none'
    hook = LRRangeTestHook(smooth, diverge)
    with tempfile.TemporaryDirectory(prefix='lr_find_') as tmp:
        cfg.work_dir = work_dir or tmp
        runner = Runner.from_cfg(cfg)
        runner.register_hook(hook)
        runner.train()
    n = min(len(hook.lrs), len(hook.losses))
    lrs, losses, smoothed = hook.lrs[:n], hook.losses[:n], hook.smoothed[:n]
    picks = suggest_lr(lrs, smoothed, skip_start=min(10, n // 10))
    suggested = float(np.clip(picks['suggested_lr'], start, end))
    return LRFindResult(lrs=lrs, losses=losses, smoothed=smoothed, suggested_lr=suggested,
                        steepest_lr=picks['steepest_lr'], min_loss_lr=picks['min_loss_lr'],
                        stopped_early=hook.stopped_early, start=start, end=end, iters=iters,
                        extra=dict(gamma=gamma, config=getattr(cfg, 'filename', None) or ''))


def plot_lr_find(result: LRFindResult, out: str, title: Optional[str] = None) -> str:
    """Plot loss (raw and smoothed) against lr on a log axis, mark the suggested and minimum-loss lrs, and save it
    to ``out`` atomically (format from the extension). Returns ``out``."""
    fig, axes = new_figure(figsize=(7, 4.5))
    ax = axes[0][0]
    lrs = np.asarray(result.lrs)
    ax.plot(lrs, result.losses, color='0.75', lw=1, label='loss')
    ax.plot(lrs, result.smoothed, color='C0', lw=2, label='smoothed loss')
    ax.axvline(result.suggested_lr, color='C3', ls='--', label=f'suggested lr {result.suggested_lr:.2g}')
    ax.axvline(result.min_loss_lr, color='C2', ls=':', label=f'min loss at lr {result.min_loss_lr:.2g}')
    ax.set_xscale('log')
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # keep the diverging tail from flattening the interesting part
        lo, hi = min(finite), max(finite[0], min(finite) * 2)
        ax.set_ylim(lo - 0.1 * (hi - lo + 1e-12), hi + 0.25 * (hi - lo + 1e-12))
    ax.set_xlabel('learning rate (base, log scale)')
    ax.set_ylabel('training loss')
    ax.set_title(title or f'LR range test (Smith 2017, Sec. 3.3), {len(result.lrs)} iterations')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='best')
    save_figure(fig, out)
    return out


def default_out(config: str) -> str:
    """``work_dirs/lr_find/<config name>.png``."""
    return osp.join('work_dirs', 'lr_find', osp.splitext(osp.basename(str(config)))[0] + '.png')
