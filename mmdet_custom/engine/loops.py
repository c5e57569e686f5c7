"""An epoch-based training loop that can stop inside an epoch and resume where it stopped."""
from mmdet.registry import LOOPS
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

__all__ = ['PreemptibleEpochBasedTrainLoop']


@LOOPS.register_module()
class PreemptibleEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` (same arguments), plus a stop and a resume inside an epoch.

    mmengine 0.10.7's loop checks ``stop_training`` only between epochs, and a run resumed from a checkpoint saved
    inside an epoch starts that epoch again from its first batch with the iteration counter of the checkpoint: it
    trains the epoch's first batches twice and runs longer than the schedule. Here:

    - ``stop_training`` set during an iteration (by :class:`~mmdet_custom.engine.hooks.PreemptionHook`) ends the
      loop after that iteration, without ``after_train_epoch`` (the epoch is not over: no epoch checkpoint, no
      epoch-based LR step) and without validation;
    - resumed with ``iter`` beyond the start of its epoch (``iter - epoch * len(dataloader)`` = k batches done), the
      epoch's first k batches are loaded but not trained, as mmengine's ``IterBasedTrainLoop`` does: the sampler
      (seeded by seed + epoch) and the loader workers (seeded by mmengine's ``worker_init_fn``) then give the
      following batches exactly as in an uninterrupted run. Loading them costs their data time, not their train
      time.

    ``mmdet_custom.apis.train`` uses it in place of ``EpochBasedTrainLoop`` for every run.
    """

    def run(self):
        self.runner.call_hook('before_train')
        while self._epoch < self._max_epochs and not self.stop_training:
            if not self.run_epoch():
                break  # stopped inside the epoch
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._epoch >= self.val_begin
                    and (self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> bool:
        """Train the rest of the current epoch; False when ``stop_training`` ended it before its last batch."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        length = len(self.dataloader)
        done = self._iter - self._epoch * length  # > 0 after a resume inside the epoch
        if 0 < done < length:
            print_log(f'resuming inside epoch {self._epoch + 1}: loading its first {done} batches without training '
                      f'on them', logger='current')
        if done < length:
            for idx, data_batch in enumerate(self.dataloader):
                if idx < done:
                    continue
                self.run_iter(idx, data_batch)
                if self.stop_training:
                    return False
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
        return True
