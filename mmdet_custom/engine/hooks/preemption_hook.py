"""Stop training on SIGTERM / SIGINT after the current iteration, with a complete checkpoint to resume from.

Clusters preempt jobs with SIGTERM (SLURM, Kubernetes; torchrun passes it on to every rank) and a grace period
before SIGKILL (30 s by default in SLURM's ``KillWait`` and torchrun's shutdown). Without this hook the process dies
where it is and the work since the last regular checkpoint is lost.
"""
import os
import os.path as osp
import random
import signal
import threading
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, barrier, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook

from mmdet_custom.utils.fileio import atomic_path

__all__ = ['PREEMPTED_EXIT', 'PreemptionHook', 'preempted_by']

#: Exit code of ``tools/train.py`` after a preemption: ``EX_TEMPFAIL`` of sysexits.h ("try again later"), which
#: requeue scripts can tell from success (0), a user mistake (2), a crash (1) and Ctrl-C twice (130).
PREEMPTED_EXIT = 75

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Finish the current iteration on SIGTERM or SIGINT, save a checkpoint, write ``last_checkpoint`` and stop.

    The signal handler only sets a flag. After each iteration (``after_train_iter``, after the optimizer step, the
    LR schedulers, the log line and ``CheckpointHook``) the flag is reduced over all ranks (max), so every rank
    stops after the same iteration even when the signal reached them at different times. Then rank 0 saves
    ``iter_<N>.pth`` (N = iterations done; weights, optimizer, schedulers, message hub, RNG states) through
    ``Runner.save_checkpoint``, which this package makes atomic (:mod:`mmdet_custom.checkpoint`), writes
    ``last_checkpoint`` atomically after the save, all ranks wait for it (barrier), and the loop stops
    (``stop_training``; :class:`~mmdet_custom.engine.loops.PreemptibleEpochBasedTrainLoop` also stops inside an
    epoch). The time from the signal to the exit is at most one iteration plus one checkpoint save. A second Ctrl-C
    in a single-process run interrupts at once (KeyboardInterrupt); repeated SIGTERMs, and every repeat under
    torchrun (which passes on the signal every rank already got), change nothing. The previous handlers are
    restored after training (:meth:`restore_signal_handlers`; ``mmdet_custom.apis.train`` also calls it when
    training fails).

    Every checkpoint (this hook's and ``CheckpointHook``'s) also stores the RNG states of Python, numpy and torch
    (``rng_state``), restored before the first iteration after a resume, so that the random draws of the model (RPN
    and R-CNN samplers) continue as in an uninterrupted run. A signal before the first iteration (the checks at
    start) or during validation is acted on after the next training iteration.

    Args:
        sync_interval (int): reduce the flag over the ranks every that many iterations (one all-reduce of one
            number; the stop comes up to ``sync_interval - 1`` iterations later). Defaults to 1.
    """
    priority = 'LOWEST'  # after_train_iter after ParamSchedulerHook, LoggerHook and CheckpointHook

    def __init__(self, sync_interval: int = 1) -> None:
        if sync_interval < 1:
            raise ValueError(f'sync_interval must be >= 1, got {sync_interval}')
        self.sync_interval = sync_interval
        self.received: Optional[int] = None  # the signal number, set by the handler
        self.preempted: Optional[str] = None  # the signal's name once training stopped because of it
        self.checkpoint: Optional[str] = None  # the checkpoint saved then (rank 0)
        self._previous: Dict[int, Any] = {}
        self._rng_state: Optional[dict] = None
        self._distributed = False

    # -------------------------------------------------------------------------------------------------------- signals
    def _handle(self, signum: int, frame: Any) -> None:
        # A second Ctrl-C in a single-process run interrupts at once. Not a second SIGTERM, nor anything under
        # torchrun: a cluster signals every process and torchrun passes the signal on, so each rank gets two.
        if signum == signal.SIGINT and self.received == signum and not self._distributed:
            self.restore_signal_handlers()
            signal.raise_signal(signum)
            return
        self.received = signum

    def before_train(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning('PreemptionHook: training runs outside the main thread, where Python cannot set '
                                  'signal handlers; SIGTERM/SIGINT stop it at once')
            return
        self._distributed = get_world_size() > 1 or 'TORCHELASTIC_RUN_ID' in os.environ
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore_signal_handlers(self) -> None:
        """Put back the handlers that were set before training (idempotent)."""
        while self._previous:
            sig, handler = self._previous.popitem()
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def after_train(self, runner) -> None:
        self.restore_signal_handlers()

    # ------------------------------------------------------------------------------------------------------- stopping
    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if (runner.iter + 1) % self.sync_interval:
            return
        stop = self.received is not None
        if get_world_size() > 1:
            flag = torch.tensor([int(stop)], dtype=torch.int32)
            all_reduce(flag, op='max')  # mmengine moves it to the backend's device (CUDA for NCCL)
            stop = bool(flag.item())
        if not stop:
            return
        name = signal.Signals(self.received).name if self.received is not None else 'a signal on another rank'
        runner.logger.warning(f'{name} received: stopping after iteration {runner.iter + 1} with a checkpoint')
        self.checkpoint = self._save(runner)
        barrier()  # no rank exits (and makes torchrun kill the others) before rank 0's checkpoint is complete
        self.preempted = name
        runner.train_loop.stop_training = True

    def _save(self, runner) -> str:
        """Save ``iter_<N>.pth`` where ``CheckpointHook`` saves, then ``last_checkpoint``; the checkpoint's path."""
        ckpt_hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        out_dir = getattr(ckpt_hook, 'out_dir', None) or runner.work_dir
        backend_args = getattr(ckpt_hook, 'backend_args', None)
        filename = f'iter_{runner.iter + 1}.pth'
        path = osp.join(out_dir, filename)
        last = runner.message_hub.get_info('last_ckpt')
        if last is not None and osp.abspath(str(last)) == osp.abspath(path):
            return path  # CheckpointHook saved this very iteration a moment ago
        # by_epoch=False: meta.epoch = the current (unfinished) epoch, meta.iter = the iterations done
        runner.save_checkpoint(out_dir, filename, save_optimizer=True, save_param_scheduler=True, by_epoch=False,
                               backend_args=backend_args)
        if is_main_process():
            runner.message_hub.update_info('last_ckpt', path)
            if '://' not in path:
                with atomic_path(osp.join(runner.work_dir, 'last_checkpoint')) as tmp, open(tmp, 'w') as f:
                    f.write(path)
        return path

    # ----------------------------------------------------------------------------------------------------- RNG states
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = _rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._rng_state = checkpoint.get('rng_state')

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        # restored here, not at loading: the loop draws from the generators between loading and this point (it
        # builds the dataloader iterator, mmengine's IterBasedTrainLoop loads the batches it skips)
        if self._rng_state is not None:
            _set_rng_state(self._rng_state)
            self._rng_state = None


def _rng_state() -> dict:
    """The generators' states in types ``torch.load(weights_only=True)`` reads (no numpy uint32 arrays)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(python=random.getstate(), numpy=(kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                  gauss), torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state['python'])
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])


def preempted_by(runner) -> Optional[str]:
    """The name of the signal (``'SIGTERM'``, ``'SIGINT'``) that stopped ``runner``'s training, or None."""
    return next((h.preempted for h in runner.hooks if isinstance(h, PreemptionHook) and h.preempted), None)
