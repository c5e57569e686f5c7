"""Search RPN anchors by exact recall: ``python tools/anchor_search.py CONFIG --trials 200 --study-name NAME``.

Optuna TPE over per-level anchor sizes (steps of stride / 2) and the shared ratio set, with the number of anchors
per location of the config. The config's anchors are the first trial; rerunning with the same ``--storage`` and
``--study-name`` resumes the study (trials left RUNNING by a killed run are marked FAIL), and several workers may
share one study: trial ``n`` draws with the seed ``(--seed, n)``, so they never repeat each other. Writes the best
setting as a config fragment (``--out``), prints a comparison (config / stride-adjusted / data-suggested / best)
and saves the optimisation history and parameter importances as PNG under ``--work-dir``; both outputs are
checked before the first trial. The logic lives in :mod:`mmdet_custom.anchor_search`. Input mistakes end with one
``error:`` line and exit code 2 (``--debug`` shows the traceback).
"""
import argparse
import os.path as osp

from mmdet_custom.utils.cli import add_cfg_options, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Search RPN anchors by exact anchor recall (Optuna TPE)')
    parser.add_argument('config', help='config file path (its train dataset, pipeline and RPN anchors are used)')
    parser.add_argument('--trials', type=int, default=200,
                        help='trials to run now (added to a resumed study; 0 only reports a resumed study)')
    parser.add_argument('--storage', default='sqlite:///work_dirs/anchor_search.db', help='Optuna storage URL')
    parser.add_argument('--study-name', default=None, help='study name (default: the config name)')
    parser.add_argument('--out', default=None,
                        help='config fragment to write (default: configs/_base_/anchors/<study-name>.py)')
    parser.add_argument('--work-dir', default=None,
                        help='folder for the PNG plots (default: work_dirs/anchor_search/<study-name>)')
    parser.add_argument('--seed', type=int, default=0,
                        help='base seed of the TPE sampler; trial n draws with the seed (seed, n), so parallel '
                        'workers of one study never repeat trials and one worker is reproducible')
    parser.add_argument('--weights', nargs='+', default=['pos=0.7', '0.7=0.3'], metavar='IOU=WEIGHT',
                        help='objective = sum of weight x recall@IOU; IOU "pos" is the RPN assigner pos_iou_thr')
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    if args.trials < 0:
        parser.error(f'--trials must be >= 0, got {args.trials}')
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config

    from mmdet_custom.anchor_search import (
        check_writable_path,
        format_comparison,
        format_groups,
        fragment_header,
        parse_weights,
        save_study_plots,
        search_anchors,
        write_anchor_fragment,
    )
    weights = parse_weights(args.weights)
    study_name = args.study_name or osp.splitext(osp.basename(args.config))[0]
    out = args.out or osp.join('configs', '_base_', 'anchors', f'{study_name}.py')
    work_dir = args.work_dir or osp.join('work_dirs', 'anchor_search', study_name)
    # outputs first: an unwritable place must not be found after all trials
    check_writable_path(out, '--out')
    check_writable_path(work_dir, '--work-dir', is_dir=True)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)

    result = search_anchors(cfg, args.trials, args.storage, study_name, weights, seed=args.seed)
    write_anchor_fragment(out, result.best.setting, fragment_header(result, args.storage))
    plots = save_study_plots(result.study, work_dir)

    gt = result.gt
    print(f'\n{len(gt)} boxes in {gt.num_images} images of {gt.source} '
          f'({gt.num_crowd} crowd, {gt.num_zero_size} zero-size skipped)')
    print(format_comparison(result.rows))
    print('\nper class and COCO size (box area in network-input pixels):')
    print(format_groups([('config', result.baseline), ('best', result.best)]))
    print(f'\nwrote {out}')
    for path in plots:
        print(f'wrote {path}')
    return result


if __name__ == '__main__':
    run_cli(main)
