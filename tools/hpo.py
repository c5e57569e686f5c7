"""Recipe search with Optuna: ``python tools/hpo.py CONFIG --space SPACE.py --trials N --storage URL
--study-name NAME [--n-workers K] [--metric coco/segm_mAP] [--pruner median|hyperband|none] ...``.

Each trial trains CONFIG with the values that SPACE.py's ``space(trial)`` suggests (config key -> value), reports
the validation metric to Optuna after every validation (the pruner stops poor trials early) and keeps its work dir
``<work-dir>/trial_NNNN`` (resolved ``config.py``, ``metrics.json``, logs, checkpoints, ``error.txt`` if it failed).
Several processes (``--n-workers``, or this command started on several machines with the same ``--storage`` and
``--study-name``) share one study; a worker that dies leaves its trial to be failed and retried by the others; the
same command resumes a study. Workers register in the study and beat; at the end the last worker of the study to finish
(of this command or of others sharing the storage) writes ``best_config.py``, ``study_summary.json`` and
``plots/{optimization_history,param_importances,parallel_coordinate}.png`` in its work dir, once (the study
attribute ``result`` records where); with no trial left to run, the command rewrites them. Example space:
configs/hpo/space_mask-rcnn_isaid.py. The logic lives in :mod:`mmdet_custom.hpo` on the study engine
:mod:`mmdet_custom.studies`.
"""
import argparse
import os.path as osp

from mmdet_custom.utils.cli import add_cfg_options, add_data_root, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Recipe search over a config with Optuna')
    parser.add_argument('config', help='train config file searched over')
    parser.add_argument('--space', required=True, help='search space file defining space(trial) -> {cfg key: value}')
    parser.add_argument('--trials', type=int, required=True,
                        help='trial budget of the study (complete + pruned + failed with an error; trials lost with '
                        'a dead worker are retried and do not count)')
    parser.add_argument('--storage', default=None,
                        help='Optuna RDB URL: sqlite:///study.db (one machine), postgresql://user:pw@host/db or '
                        'mysql://... (several); default sqlite:///<work-dir>/study.db')
    parser.add_argument('--study-name', required=True, help='the study in the storage (created or resumed)')
    parser.add_argument('--n-workers', type=int, default=1, help='worker processes on this machine (default 1)')
    parser.add_argument('--work-dir', default=None, help='study folder (default work_dirs/hpo/<study-name>)')
    parser.add_argument('--metric', default='coco/segm_mAP',
                        help='validation metric optimised (default coco/segm_mAP, iSAID protocol); val/loss adds '
                        'the ValLossHook')
    parser.add_argument('--direction', choices=['maximize', 'minimize'], default=None,
                        help='default: minimize for loss metrics, else maximize')
    parser.add_argument('--pruner', choices=['median', 'hyperband', 'none'], default='median')
    parser.add_argument('--pruner-startup', type=int, default=5,
                        help='median pruner: complete trials before pruning starts (default 5)')
    parser.add_argument('--pruner-warmup', type=int, default=0,
                        help='median pruner: steps (iterations or epochs) of a trial before it may be pruned')
    parser.add_argument('--sampler', choices=['tpe', 'random'], default='tpe')
    parser.add_argument('--seed', type=int, default=None, help='sampler seed (worker k uses seed + k)')
    parser.add_argument('--enqueue', action='append', default=[], metavar='JSON',
                        help='a parameter set to try first, e.g. \'{"lr": 0.02}\' (repeatable; once per study)')
    parser.add_argument('--heartbeat-interval', type=int, default=60,
                        help='seconds between heartbeats of a running trial (default 60)')
    parser.add_argument('--grace-period', type=int, default=None,
                        help='seconds without heartbeat after which a trial\'s worker counts as dead (default: 2 '
                        'heartbeat intervals)')
    parser.add_argument('--max-retry', type=int, default=1, help='retries of a trial whose worker died (default 1)')
    parser.add_argument('--out', default=None, help='best config file (default <work-dir>/best_config.py)')
    parser.add_argument('--no-plots', action='store_true', help='do not draw the Optuna plots')
    parser.add_argument('--no-image-check', action='store_true',
                        help='skip the check of every train/val image in each worker\'s first trial')
    add_data_root(parser)
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.hpo.study import StudySpec, parse_enqueue, run_study
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config not found: {args.config}')
    work_dir = args.work_dir or osp.join('work_dirs', 'hpo', args.study_name)
    storage = args.storage or f'sqlite:///{osp.abspath(osp.join(work_dir, "study.db"))}'
    direction = args.direction or ('minimize' if 'loss' in args.metric else 'maximize')
    spec = StudySpec(config=args.config, space=args.space, storage=storage, study_name=args.study_name,
                     n_trials=args.trials, work_dir=work_dir, metric=args.metric, direction=direction,
                     pruner=args.pruner, pruner_startup=args.pruner_startup, pruner_warmup=args.pruner_warmup,
                     sampler=args.sampler, seed=args.seed, heartbeat_interval=args.heartbeat_interval,
                     grace_period=args.grace_period, max_retry=args.max_retry, cfg_options=args.cfg_options,
                     enqueue=parse_enqueue(args.enqueue), check_image_files=not args.no_image_check,
                     data_root=args.data_root)
    summary = run_study(spec, n_workers=args.n_workers, best_config=args.out, plots=not args.no_plots)
    c, best = summary['counts'], summary['best']
    print(f'study {spec.study_name}: {c["complete"]} complete, {c["pruned"]} pruned, {c["failed"]} failed, '
          f'{c["died"]} lost with their worker')
    print(f'best: trial {best["number"]}, {spec.metric} = {best["value"]}, params {best["params"]}')
    for name, path in summary['files'].items():
        print(f'{name}: {path}')
    return summary


if __name__ == '__main__':
    run_cli(main)
