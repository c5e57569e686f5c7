"""Search RPN anchors by exact recall: ``python tools/anchor_search.py CONFIG --trials 200 --study-name NAME
[--storage URL] [--n-workers K]``.

Optuna TPE over per-level anchor sizes (steps of stride / 2) and the shared ratio set, with the number of anchors
per location of the config. The config (read with ``mmdet_custom.utils.config.read_config``: ``--cfg-options`` keys
are checked) gives the training boxes, the input size and the anchors; the config's anchors are the first trial.

Scaling out: ``--storage`` takes any Optuna RDB URL (``sqlite:///file.db`` on one machine,
``postgresql://user:password@host/db`` or ``mysql://...`` across machines); ``--n-workers K`` runs K worker
processes here, and the same command started on other machines with the same ``--storage`` and ``--study-name``
joins the study. ``--trials N`` are this command's trials, split between its workers. Trial ``n`` draws with the
seed ``(--seed, n)``, so workers never repeat each other; a killed worker's trial is marked FAIL once its heartbeat
is ``--grace-period`` seconds old, and rerunning the command resumes the study.

Outputs -- the rule: the fragment (``--out``) and the plots (``--work-dir``) are written once, from the study's best
trial, by whichever worker finishes last. A worker whose trials ran waits until no other registered worker of the
study is running (a worker silent for ``--grace-period`` seconds counts as dead, so a killed worker never blocks the
write), then claims the write with a compare-and-swap on the study record ``fragment``; exactly one claim succeeds,
and that worker writes atomically (temporary file, then rename) on its machine. A study whose completed trials were
already written is not written again; ``--trials 0`` rewrites the fragment of a finished study. Every command prints
the comparison table (config / stride-adjusted / data-suggested / best) and where the fragment was written. Both
outputs are checked before the first trial. The logic lives in :mod:`mmdet_custom.anchor_search` (the rule in
:mod:`mmdet_custom.studies.once`). Input mistakes end with one ``error:`` line and exit code 2 (``--debug``
shows the traceback); so does a worker of this command that failed or was killed, after the others finished.

Per-class cost: at the end the command prints the recall of every class and COCO size (small / medium / large, box
area in network-input pixels) for the config's anchors and the best trial, and the change; the writer of the fragment
also writes it as ``<work-dir>/recall_change.json``. ``--min-recall NAME[@IOU]=VALUE`` (repeatable; NAME a class of
the training set, a size or ``all``; IOU default the RPN positive IoU) makes trials below a floor infeasible (Optuna
constraints, see :mod:`mmdet_custom.anchor_search.floors`); the fragment is the best trial meeting every floor, and
when none does nothing is written and the command ends with exit code 2.
"""
import argparse
import os.path as osp

from mmdet_custom.utils.cli import add_cfg_options, add_data_root, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Search RPN anchors by exact anchor recall (Optuna TPE)')
    parser.add_argument('config', help='config file path (its train dataset, pipeline and RPN anchors are used)')
    parser.add_argument('--trials', type=int, default=200,
                        help='trials this command runs (split between its workers; added to a resumed study; 0 only '
                        'reports a study and rewrites its fragment)')
    parser.add_argument('--storage', default='sqlite:///work_dirs/anchor_search.db',
                        help='Optuna RDB URL: sqlite:///file.db (one machine), postgresql://user:pw@host/db or '
                        'mysql://... (workers on several machines)')
    parser.add_argument('--study-name', default=None, help='study name (default: the config name)')
    parser.add_argument('--n-workers', type=int, default=1,
                        help='worker processes on this machine (default 1); other machines join with the same '
                        '--storage and --study-name')
    parser.add_argument('--out', default=None,
                        help='config fragment to write (default: configs/_base_/anchors/<study-name>.py), by the '
                        'last worker of the study to finish, on its machine')
    parser.add_argument('--work-dir', default=None,
                        help='folder for the PNG plots (default: work_dirs/anchor_search/<study-name>)')
    parser.add_argument('--seed', type=int, default=0,
                        help='base seed of the TPE sampler; trial n draws with the seed (seed, n), so parallel '
                        'workers of one study never repeat trials and one worker is reproducible')
    parser.add_argument('--weights', nargs='+', default=['pos=0.7', '0.7=0.3'], metavar='IOU=WEIGHT',
                        help='objective = sum of weight x recall@IOU; IOU "pos" is the RPN assigner pos_iou_thr')
    parser.add_argument('--heartbeat-interval', type=int, default=10,
                        help='seconds between heartbeats of a running trial and of a worker (default 10)')
    parser.add_argument('--min-recall', action='append', default=[], metavar='NAME[@IOU]=VALUE',
                        help='recall floor of a class of the training set, a size (small, medium, large: COCO box area '
                        'in network-input pixels) or all, at IOU (default: the RPN positive IoU), e.g. '
                        'Small_Vehicle@0.5=0.95; trials below a floor are infeasible (repeatable)')
    parser.add_argument('--grace-period', type=int, default=60,
                        help='seconds without heartbeat after which a trial is failed and a worker counts as dead '
                        '(default 60)')
    add_data_root(parser)
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    if args.trials < 0:
        parser.error(f'--trials must be >= 0, got {args.trials}')
    if args.n_workers < 1:
        parser.error(f'--n-workers must be >= 1, got {args.n_workers}')
    if args.heartbeat_interval < 1 or args.grace_period <= args.heartbeat_interval:
        parser.error(f'--heartbeat-interval must be >= 1 s and --grace-period longer than it, got '
                     f'{args.heartbeat_interval} and {args.grace_period}')
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.anchor_search import (
        AnchorSearchError,
        format_comparison,
        format_recall_change,
        fragment_name,
        parse_floors,
        parse_weights,
        search_anchors,
    )
    from mmdet_custom.datasets.utils import set_data_root
    from mmdet_custom.utils.config import read_config
    from mmdet_custom.utils.fileio import check_writable
    weights = parse_weights(args.weights)
    floors = parse_floors(args.min_recall)
    study_name = args.study_name or osp.splitext(osp.basename(args.config))[0]
    out = args.out or osp.join('configs', '_base_', 'anchors', f'{study_name}.py')
    work_dir = args.work_dir or osp.join('work_dirs', 'anchor_search', study_name)
    # outputs first: an unwritable place must not be found after all trials
    check_writable(out, '--out')
    check_writable(work_dir, '--work-dir', is_dir=True)
    cfg = read_config(args.config, args.cfg_options)
    if args.data_root is not None:
        set_data_root(cfg, args.data_root, args.cfg_options)

    result = search_anchors(cfg, args.trials, args.storage, study_name, weights, seed=args.seed,
                            n_workers=args.n_workers, out=out, work_dir=work_dir,
                            heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
                            log=lambda line: print(line, flush=True), min_recall=floors)

    gt = result.gt
    print(f'\n{len(gt)} boxes in {gt.num_images} images of {gt.source} '
          f'({gt.num_crowd} crowd, {gt.num_zero_size} zero-size skipped)')
    print(format_comparison(result.rows))
    print(f'\nrecall per class and COCO size (box area in network-input pixels), {result.rows[-1][0]} against the '
          f'config\'s anchors:')
    print(format_recall_change(result.change))
    frag = result.fragment
    if not result.feasible:
        raise AnchorSearchError(
            f'no completed trial of study {study_name!r} meets every --min-recall floor (the best trial regardless of '
            f'them is shown above); nothing was written. Lower a floor, or run more trials with the same command')
    if frag:
        who = 'this command' if frag.get('by_me') else f'worker {frag.get("writer", "?").split(":", 1)[-1]}'
        print(f'\nfragment of trial {frag.get("best_trial")} ({frag.get("complete_trials")} completed trials) '
              f'written by {who} on {frag.get("host")}: {frag.get("path")}')
        for path in frag.get('plots', []):
            print(f'plot: {path}')
        if frag.get('recall_change'):
            print(f'recall change: {frag["recall_change"]}')
        print(f'use: _base_ = [<config>, \'{frag.get("path")}\'] and model = _base_.{fragment_name(study_name)} '
              f'(anchors and RPN pos_iou_thr {result.pos_iou:g})')
    else:
        print('\nno fragment written: the study holds no completed trial')
    if result.errors:
        raise AnchorSearchError('; '.join(result.errors) + ' (its error is printed above; the other workers '
                                'finished, and the study resumes with the same command)')
    return result


if __name__ == '__main__':
    run_cli(main)
