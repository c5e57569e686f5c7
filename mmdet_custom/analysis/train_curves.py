"""Training curves (losses, learning rate, validation AP) from mmengine's json scalar logs.

mmengine writes, per run, ``<work_dir>/<timestamp>/vis_data/scalars.json`` (``LocalVisBackend``) and the same
records to ``<work_dir>/<timestamp>/vis_data/<timestamp>.json`` (``LoggerHook``): one json object per line.

- training records (every ``logger.interval`` iterations) hold ``lr``, ``loss``, ``loss_*``, ``time``,
  ``data_time``, ``memory``, ``iter`` (global, 1-based), ``epoch`` (epoch-based loops only) and ``step`` = ``iter``;
- validation records hold the metrics (e.g. ``coco/bbox_mAP``, ``coco/segm_mAP_50``), ``time``, ``data_time`` and
  ``step``: the epoch when ``LoggerHook.log_metric_by_epoch`` is True (its default), else the global iteration.
  An iteration-based run with the default hook therefore logs every validation at step 0 (``runner.epoch``);
  such validations are placed at the iteration of the training record just before them in the file, which is the
  validation's iteration when the logging interval divides the validation interval.

Either file, its ``vis_data`` folder, the run folder or the work dir (its latest run is taken) can be given.
"""
import json
import os
import os.path as osp
import re
from typing import Dict, Optional, Sequence, Union

from mmdet_custom.utils.errors import UserError

from ._io import new_figure, save_figure

_RUN_DIR = re.compile(r'^\d{8}_\d{6}$')
#: Validation metrics plotted when none are named: COCO AP and AP50 of boxes and masks, when logged.
DEFAULT_METRIC_KEYS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50')


class TrainLogError(UserError, ValueError):
    """A training log that cannot be plotted as asked (a line that is not a json object, no training record, a
    key no record has, a legend of the wrong length); the message names the file."""


def find_json_log(path: str) -> str:
    """Resolve a work dir, run dir, ``vis_data`` dir or json file to the scalar log file to read.

    In a work dir the latest run (``YYYYMMDD_HHMMSS`` folder, by name) that holds a log is taken; in a
    ``vis_data`` folder ``scalars.json`` is preferred to ``<timestamp>.json``.

    Raises:
        FileNotFoundError: when ``path`` does not exist or holds no such log.
    """
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise FileNotFoundError(f'training log not found: {path}')

    def in_vis_data(vis_dir: str, stamp: Optional[str]) -> Optional[str]:
        names = ['scalars.json'] + ([f'{stamp}.json'] if stamp else [])
        names += sorted(n for n in os.listdir(vis_dir) if _RUN_DIR.match(osp.splitext(n)[0]) and n.endswith('.json'))
        for name in names:
            if osp.isfile(osp.join(vis_dir, name)):
                return osp.join(vis_dir, name)
        return None

    if osp.basename(osp.normpath(path)) == 'vis_data':
        found = in_vis_data(path, None)
    elif osp.isdir(osp.join(path, 'vis_data')):
        found = in_vis_data(osp.join(path, 'vis_data'), osp.basename(osp.normpath(path)))
    else:
        found = None
        for run in sorted((d for d in os.listdir(path) if _RUN_DIR.match(d)), reverse=True):
            vis_dir = osp.join(path, run, 'vis_data')
            if osp.isdir(vis_dir) and (found := in_vis_data(vis_dir, run)):
                break
    if found is None:
        raise FileNotFoundError(f'no scalars.json or <timestamp>.json log under {path} '
                                '(expected <work_dir>/<timestamp>/vis_data/scalars.json)')
    return found


def _run_name(log_file: str) -> str:
    """``<work_dir name>`` for ``<work_dir>/<timestamp>/vis_data/<file>``, else the file name without extension."""
    parts = osp.abspath(log_file).split(os.sep)
    if len(parts) >= 4 and parts[-2] == 'vis_data':
        return parts[-4]
    return osp.splitext(parts[-1])[0]


def load_json_log(path: str) -> Dict[str, list]:
    """Read an mmengine json log into its training and validation records.

    Args:
        path (str): a log file or a folder (see :func:`find_json_log`).

    Returns:
        dict: ``file`` (the file read), ``train`` and ``val`` (lists of dicts in file order), ``by_epoch``
        (whether training records carry ``epoch``) and ``val_iters`` (per validation record, the ``iter`` of the
        last training record before it, 0 if none).

    Raises:
        FileNotFoundError: see :func:`find_json_log`.
        TrainLogError: (a ``ValueError``) when a line is not a json object (the message names the file and line).
    """
    path = find_json_log(path)
    train, val, val_iters = [], [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainLogError(f'{path}:{lineno}: not a json line ({e})') from None
            if not isinstance(rec, dict):
                raise TrainLogError(f'{path}:{lineno}: expected a json object, got {type(rec).__name__}')
            if 'lr' in rec or 'iter' in rec or any(k.startswith('loss') for k in rec):
                train.append(rec)
            elif 'step' in rec and any('/' in k for k in rec):
                val.append(rec)
                val_iters.append(train[-1].get('iter', train[-1].get('step', 0)) if train else 0)
    return dict(file=path, train=train, val=val, by_epoch=any('epoch' in r for r in train), val_iters=val_iters)


def plot_train_curves(json_logs: Union[str, Sequence[str]],
                      out_file: str,
                      loss_keys: Optional[Sequence[str]] = None,
                      metric_keys: Optional[Sequence[str]] = None,
                      legend: Optional[Sequence[str]] = None,
                      title: Optional[str] = None) -> Dict[str, dict]:
    """Plot losses, learning rate and validation metrics of one or several runs into one PNG (three panels).

    Args:
        json_logs (str | Sequence[str]): logs or folders (see :func:`find_json_log`), one per run.
        out_file (str): the figure (PNG; format from the extension), written atomically.
        loss_keys (Sequence[str], optional): loss keys to plot. Defaults to every ``loss*`` key of a single run,
            or just ``loss`` (the total) when several runs are compared.
        metric_keys (Sequence[str], optional): validation keys to plot. Defaults to those of
            :data:`DEFAULT_METRIC_KEYS` that are logged.
        legend (Sequence[str], optional): one name per run. Defaults to the run folder names.
        title (str, optional): figure title.

    Returns:
        dict: per run name: ``file``, ``iters``, ``losses`` (key -> values), ``lr``, ``val_steps``, ``metrics``
        (key -> values) and ``val_x`` ('epoch' or 'iter') - the series that were plotted.

    Raises:
        FileNotFoundError: when a log is missing.
        TrainLogError: (a ``ValueError``) when ``legend`` has the wrong length, a log holds no training record, or
            a named key is in no record of its log (the message names the file and the key).
    """
    json_logs = [json_logs] if isinstance(json_logs, str) else list(json_logs)
    if legend is not None and len(legend) != len(json_logs):
        raise TrainLogError(f'{len(legend)} --legend names for {len(json_logs)} logs: give one per log')
    logs = [load_json_log(p) for p in json_logs]
    if legend is None:
        legend = [_run_name(log['file']) for log in logs]
    fig, axes = new_figure(1, 3, figsize=(16, 4.5))
    ax_loss, ax_lr, ax_ap = axes[0]
    series = {}
    for name, log in zip(legend, logs):
        if not log['train']:
            raise TrainLogError(f'{log["file"]}: no training record (lr/loss lines)')
        train_keys = {k for r in log['train'] for k in r}
        keys = list(loss_keys) if loss_keys else (
            ['loss'] if len(logs) > 1 else sorted(k for k in train_keys if k.startswith('loss')))
        val_keys = {k for r in log['val'] for k in r}
        mkeys = list(metric_keys) if metric_keys else [k for k in DEFAULT_METRIC_KEYS if k in val_keys]
        for key in keys:
            if key not in train_keys:
                raise TrainLogError(f'{log["file"]}: no training record has "{key}" (--keys; it has '
                                    f'{sorted(train_keys)})')
        for key in mkeys:
            if key not in val_keys:
                raise TrainLogError(f'{log["file"]}: no validation record has "{key}" (--metric-keys; it has '
                                    f'{sorted(val_keys)})')
        prefix = f'{name}: ' if len(logs) > 1 else ''
        iters = [r.get('iter', r.get('step')) for r in log['train']]
        s = dict(file=log['file'], iters=iters, losses={}, lr=[], metrics={}, val_steps=[],
                 val_x='epoch' if log['by_epoch'] else 'iter')
        for key in keys:
            xs = [i for i, r in zip(iters, log['train']) if key in r]
            ys = [r[key] for r in log['train'] if key in r]
            ax_loss.plot(xs, ys, lw=1, label=prefix + key)
            s['losses'][key] = ys
        lr_pts = [(i, r['lr']) for i, r in zip(iters, log['train']) if 'lr' in r]
        if lr_pts:
            ax_lr.plot(*zip(*lr_pts), lw=1, label=prefix + 'lr')
            s['lr'] = [v for _, v in lr_pts]
        val_steps = [r['step'] for r in log['val']]
        if not log['by_epoch'] and not all(0 < a < b for a, b in zip(val_steps, val_steps[1:] + [float('inf')])):
            val_steps = log['val_iters']  # logged at the epoch (0) of an iteration-based loop: see module doc
        for key in mkeys:
            pts = [(x, r[key]) for x, r in zip(val_steps, log['val']) if key in r]
            ax_ap.plot(*zip(*pts), marker='o', ms=3, lw=1, label=prefix + key.split('/')[-1])
            s['metrics'][key] = [v for _, v in pts]
            s['val_steps'] = [p[0] for p in pts]
        series[name] = s

    ax_loss.set(xlabel='iter', ylabel='loss', title='Training losses')
    ax_lr.set(xlabel='iter', ylabel='learning rate', title='Learning rate')
    val_x = {s['val_x'] for s in series.values()}
    ax_ap.set(xlabel=' / '.join(sorted(val_x)), ylabel='AP', title='Validation')
    for ax in (ax_loss, ax_lr, ax_ap):
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, 'not logged', ha='center', va='center', transform=ax.transAxes, color='gray')
    if title:
        fig.suptitle(title)
    save_figure(fig, out_file)
    return series
