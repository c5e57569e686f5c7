"""Overfit check: can the model fit K training images? Train on them until the mask AP50 on them reaches a target.

A standard sanity check of a detection pipeline (model, losses, targets, data): a network that cannot fit a handful
of images has a bug. The job is an ordinary mmengine run built from the config:

- the K images (the first K with at least one instance, or chosen by id) and their annotations are written to
  ``<work_dir>/overfit_ann.json``; training uses them with the config's train pipeline, validation the same images
  with its test pipeline and a ``CocoMetric`` on that json (so AP is over exactly these images);
- ``IterBasedTrainLoop(max_iters, val_interval)``, the config's optimizer (``lr`` optionally replaced) with a linear
  warm-up then a constant learning rate, no checkpoints unless asked for;
- :class:`StopAtMetricHook` (mmengine's ``EarlyStoppingHook`` with a ``stopping_threshold``) records the metric after
  every validation and stops training once it reaches the target;
- at the end the ground truth vs prediction figure of each image is saved (see :mod:`.visualize`).
"""
import copy
import operator
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Union

from mmengine.config import Config, ConfigDict
from mmengine.hooks import EarlyStoppingHook

from mmdet_custom.datasets.utils import innermost_dataset_cfg
from mmdet_custom.utils.config import isolate_run
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import dump_json_atomic, load_json

from .inference import load_cfg
from .visualize import save_gt_vs_pred


class OverfitError(UserError, ValueError):
    """Settings of the overfit check that cannot run: image ids not in the json, too few images with instances,
    an iteration count below 1."""


class MonitoredMetricError(UserError, KeyError):
    """A validation reported metrics, but not the one the overfit check watches (``--metric``)."""

    __str__ = UserError.__str__  # the message as written, not KeyError's repr


class StopAtMetricHook(EarlyStoppingHook):
    """mmengine's ``EarlyStoppingHook`` with ``stopping_threshold=target``, plus a wall-clock limit and a history.

    Training stops after the first validation whose ``metric`` is ``>= target`` (inclusive: mmengine compares with
    ``>``, so a target of 0 or an AP50 of exactly 0.5 would never stop it); mmengine's plateau rule (``patience``)
    is off. What mmengine's hook lacks is added: ``max_time_s``, the ``(iteration, value)`` history and the
    iteration the target was reached at.

    Args:
        metric (str): key of the validation metrics, e.g. ``coco/segm_mAP_50``.
        target (float): stop when the metric reaches it (inclusive).
        max_time_s (float, optional): also stop after the training iteration that ends this many seconds
            (wall clock) after training began.

    Attributes:
        history (list[tuple[int, float]]): ``(iteration, value)`` per validation, iterations counted from 1.
        reached_at (int | None): the first iteration whose validation reached the target.
        timed_out (bool): whether ``max_time_s`` stopped the training.

    A validation that reports no metric at all (``CocoMetric`` when the model detected nothing) counts as 0.

    Raises:
        MonitoredMetricError: (a ``KeyError``) after a validation that reported metrics but not ``metric`` (lists
            the keys it did report).
    """

    priority = 'LOW'
    rule_map = {'greater': operator.ge, 'less': operator.le}  # reaching the threshold counts

    def __init__(self, metric: str = 'coco/segm_mAP_50', target: float = 0.5,
                 max_time_s: Optional[float] = None) -> None:
        super().__init__(monitor=metric, rule='greater', stopping_threshold=target, patience=sys.maxsize,
                         check_finite=False, strict=True)
        self.max_time_s = max_time_s
        self.history: List[tuple] = []
        self.reached_at: Optional[int] = None
        self.timed_out = False
        self._start = None

    @property
    def metric(self) -> str:
        return self.monitor

    @property
    def target(self) -> float:
        return self.stopping_threshold

    def before_train(self, runner) -> None:
        self._start = time.monotonic()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.max_time_s is not None and time.monotonic() - self._start > self.max_time_s:
            self.timed_out = True
            runner.train_loop.stop_training = True

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        if not metrics:  # CocoMetric reports nothing when the model detected nothing: AP 0
            value = 0.0
        elif self.monitor not in metrics:
            raise MonitoredMetricError(f'validation reported no {self.monitor!r}; it reported {sorted(metrics)}')
        else:
            value = float(metrics[self.monitor])
        self.history.append((runner.iter, value))
        runner.logger.info(f'overfit: iter {runner.iter}: {self.monitor} = {value:.3f} (target {self.target:g})')
        if self.reached_at is None:
            super().after_val_epoch(runner, {self.monitor: value})  # mmengine's threshold rule stops the loop
            if self.rule_map[self.rule](value, self.stopping_threshold):
                self.reached_at = runner.iter


def write_subset(ann_file: str, out_file: str, num_images: int = 1,
                 img_ids: Optional[Sequence[int]] = None) -> List[int]:
    """Write the COCO json of ``img_ids`` (or the first ``num_images`` images with an instance) of ``ann_file``.

    Returns:
        list[int]: the image ids written.

    Raises:
        FileNotFoundError: ``ann_file`` missing. UserError: ``ann_file`` not valid json. OverfitError (a
            ``ValueError``): an id not in the json, or too few images with instances (the message names the file).
    """
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file not found (train_dataloader.dataset.ann_file): {ann_file}')
    coco = load_json(ann_file, 'COCO annotation file (train_dataloader.dataset.ann_file)')
    by_id = {img['id']: img for img in coco['images']}
    with_instances = {a['image_id'] for a in coco['annotations'] if not a.get('iscrowd', 0)}
    if img_ids is not None:
        missing = [i for i in img_ids if i not in by_id]
        if missing:
            raise OverfitError(f'{ann_file}: image ids {missing} (--img-ids) are not in "images"')
        chosen = list(img_ids)
    else:
        chosen = [img['id'] for img in coco['images'] if img['id'] in with_instances][:num_images]
        if len(chosen) < num_images:
            raise OverfitError(f'{ann_file}: {len(chosen)} images with instances, {num_images} asked for '
                               '(--num-images)')
    keep = set(chosen)
    subset = {k: v for k, v in coco.items() if k not in ('images', 'annotations')}
    subset['images'] = [by_id[i] for i in chosen]
    subset['annotations'] = [a for a in coco['annotations'] if a['image_id'] in keep]
    dump_json_atomic(subset, out_file)
    return chosen


def build_overfit_cfg(cfg: Config, ann_file: str, num_images: int, work_dir: str, max_iters: int,
                      val_interval: int, lr: Optional[float] = None, warmup_iters: Optional[int] = None,
                      seed: int = 0) -> Config:
    """Turn a training config into the overfit job on the ``num_images`` images of ``ann_file`` (see the module
    docstring); returns a copy."""
    cfg = cfg.copy()
    train_ds = copy.deepcopy(innermost_dataset_cfg(cfg.train_dataloader.dataset))
    train_ds.ann_file = osp.abspath(ann_file)
    train_ds.pop('indices', None)
    val_ds = copy.deepcopy(train_ds)
    val_ds.pipeline = copy.deepcopy(innermost_dataset_cfg(cfg.test_dataloader.dataset).pipeline)
    val_ds.test_mode = True
    val_ds.pop('filter_cfg', None)
    batch_size = min(cfg.train_dataloader.get('batch_size', 1), num_images)
    # one pass over K images is an epoch of K / batch iterations, and mmengine's infinite loader sleeps 2 s at every
    # epoch end: repeat the images so that the whole run is one epoch
    cfg.train_dataloader = ConfigDict(
        batch_size=batch_size, num_workers=0, persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(type='RepeatDataset', times=max_iters * batch_size, dataset=train_ds))
    cfg.val_dataloader = ConfigDict(batch_size=1, num_workers=0, persistent_workers=False, drop_last=False,
                                    sampler=dict(type='DefaultSampler', shuffle=False), dataset=val_ds)
    evaluator = cfg.get('val_evaluator')
    evaluator = copy.deepcopy(evaluator) if isinstance(evaluator, dict) and evaluator.get(
        'type') in ('CocoMetric', 'MaxDetsCocoMetric') else ConfigDict(type='CocoMetric', metric=['bbox', 'segm'])
    evaluator.update(ann_file=osp.abspath(ann_file), classwise=False, format_only=False)
    evaluator.pop('outfile_prefix', None)
    cfg.val_evaluator = evaluator
    cfg.val_cfg = ConfigDict(type='ValLoop')
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = lr
    warmup = min(max_iters // 5, 50) if warmup_iters is None else warmup_iters
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup)] \
        if warmup > 0 else []
    # an interval past the end saves nothing (the final weights are saved by overfit() when asked for)
    cfg.default_hooks.checkpoint = ConfigDict(type='CheckpointHook', by_epoch=False, interval=max_iters + 1,
                                              save_last=False, save_best=None)
    cfg.default_hooks.logger = ConfigDict(type='LoggerHook', log_metric_by_epoch=False,
                                          interval=min(cfg.default_hooks.get('logger', {}).get('interval', 10),
                                                       val_interval))
    cfg.log_processor = ConfigDict(type='LogProcessor', window_size=1, by_epoch=False)
    cfg.auto_scale_lr = ConfigDict(enable=False, base_batch_size=16)
    cfg.load_from, cfg.resume = None, False
    cfg.work_dir = work_dir
    cfg.randomness = ConfigDict(seed=seed)
    isolate_run(cfg)  # one Visualizer, logger and message hub per name per process
    return cfg


def overfit(config: Union[str, Config],
            work_dir: str,
            num_images: int = 1,
            img_ids: Optional[Sequence[int]] = None,
            target_ap50: float = 0.5,
            metric: str = 'segm_mAP_50',
            val_interval: int = 20,
            max_iters: int = 300,
            lr: Optional[float] = None,
            warmup_iters: Optional[int] = None,
            show_score_thr: float = 0.3,
            max_time_s: Optional[float] = None,
            save_checkpoint: bool = False,
            seed: int = 0,
            cfg_options: Optional[dict] = None) -> Dict:
    """Train on ``num_images`` images of the config's training set until ``metric`` on them reaches the target.

    Args:
        config (str | Config): training config; its ``train_dataloader.dataset`` (``data_root`` + ``ann_file``)
            gives the images, its ``test_dataloader`` the test pipeline.
        work_dir (str): logs (``<timestamp>/vis_data/scalars.json``), ``overfit_ann.json``,
            ``overfit_history.json`` and the figures ``vis/<image stem>.png``.
        num_images (int): the first images with at least one instance. Defaults to 1.
        img_ids (Sequence[int], optional): image ids to use instead.
        target_ap50 (float): stop when ``metric`` reaches it. Defaults to 0.5.
        metric (str): CocoMetric key without the ``coco/`` prefix. Defaults to ``segm_mAP_50`` (mask AP50).
        val_interval (int): iterations between evaluations. Defaults to 20.
        max_iters (int): iteration cap. Defaults to 300.
        lr (float, optional): learning rate replacing the config's.
        warmup_iters (int, optional): linear warm-up from 0.1 lr. Defaults to ``min(max_iters // 5, 50)``.
        show_score_thr (float): minimum score of a drawn prediction. Defaults to 0.3.
        max_time_s (float, optional): wall-clock cap on training, checked after every iteration; a run stopped
            by it is validated once more at its last iteration (unless that iteration was just validated).
        save_checkpoint (bool): save the final weights as ``<work_dir>/iter_<n>.pth``. Defaults to False.
        seed (int): random seed. Defaults to 0.
        cfg_options (dict, optional): overrides merged into the config first (e.g. data root, random init).

    Returns:
        dict (also written to ``overfit_history.json``): ``reached`` (bool),
        ``reached_at`` (first iteration at target or None), ``iters`` (iterations run), ``timed_out`` (stopped by
        ``max_time_s``), ``target``, ``metric``,
        ``history`` (list of ``{'iter', 'value'}``), ``img_ids``, ``ann_file`` (the source json), ``figures`` (PNG
        paths) and ``checkpoint`` (path or None).

    Raises:
        OverfitError: (a ``ValueError``) ``max_iters`` or ``val_interval`` < 1, image ids not in the json, or too
            few images with instances.
    """
    from mmengine.runner import Runner
    if max_iters < 1 or val_interval < 1:
        raise OverfitError(f'--max-iters and --val-interval must be >= 1, got {max_iters}, {val_interval}')
    cfg = load_cfg(config, cfg_options)
    src = innermost_dataset_cfg(cfg.train_dataloader.dataset)
    ann_file = src.ann_file
    if src.get('data_root') and not osp.isabs(ann_file):
        ann_file = osp.join(src.data_root, ann_file)
    os.makedirs(work_dir, exist_ok=True)
    subset = osp.join(work_dir, 'overfit_ann.json')
    chosen = write_subset(ann_file, subset, num_images, img_ids)
    cfg = build_overfit_cfg(cfg, subset, len(chosen), work_dir, max_iters, val_interval, lr=lr,
                            warmup_iters=warmup_iters, seed=seed)
    runner = Runner.from_cfg(cfg)
    stopper = StopAtMetricHook(f'coco/{metric}', target_ap50, max_time_s)
    runner.register_hook(stopper)
    runner.train()
    if stopper.timed_out and (not stopper.history or stopper.history[-1][0] != runner.iter):
        runner.val_loop.run()
    checkpoint = None
    if save_checkpoint:
        checkpoint = osp.join(work_dir, f'iter_{runner.iter}.pth')
        runner.save_checkpoint(work_dir, osp.basename(checkpoint), save_optimizer=False, save_param_scheduler=False)

    model = runner.model.eval()
    dataset = runner.val_dataloader.dataset
    figures = save_gt_vs_pred(model, dataset, range(len(dataset)), osp.join(work_dir, 'vis'), show_score_thr)
    result = dict(reached=stopper.reached_at is not None, reached_at=stopper.reached_at, iters=runner.iter,
                  timed_out=stopper.timed_out, target=target_ap50, metric=f'coco/{metric}',
                  history=[dict(iter=i, value=v) for i, v in stopper.history], img_ids=chosen,
                  ann_file=osp.abspath(ann_file), figures=figures, checkpoint=checkpoint)
    dump_json_atomic(result, osp.join(work_dir, 'overfit_history.json'), indent=2)
    return result


def format_history(result: Dict) -> str:
    """A text table of :func:`overfit`'s history and outcome."""
    lines = [f'{"iter":>6}  {result["metric"]}']
    lines += [f'{h["iter"]:>6}  {h["value"]:.3f}' for h in result['history']]
    outcome = (f'reached {result["target"]:g} at iteration {result["reached_at"]}' if result['reached'] else
               f'did not reach {result["target"]:g} in {result["iters"]} iterations'
               + (' (time limit)' if result.get('timed_out') else ''))
    lines.append(f'{outcome} (images {result["img_ids"]})')
    return '\n'.join(lines)
