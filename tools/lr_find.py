"""LR range test: ``python tools/lr_find.py CONFIG [--start 1e-7 --end 1 --iters 100] [--out lr_find.png]``.

Trains the config for at most ``--iters`` iterations with the lr raised exponentially from ``--start`` to
``--end`` (Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, Sec. 3.3), stops when the
smoothed loss exceeds ``--diverge`` times its minimum, saves the loss-vs-lr plot (and the curve as json beside it)
and prints the suggested lr: where the smoothed loss falls fastest (steepest descent against log lr); the lr of
the minimum loss divided by 10 is printed too. Nothing is saved to the config's work dir and the config file and
its checkpoints are only read. The logic lives in :mod:`mmdet_custom.apis.lr_find`.
"""
import argparse
import os.path as osp

from mmdet_custom.utils.cli import add_cfg_options, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='LR range test (Smith 2017, Sec. 3.3)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--start', type=float, default=1e-7, help='lr of the first iteration (default 1e-7)')
    parser.add_argument('--end', type=float, default=1.0, help='lr reached at the last iteration (default 1)')
    parser.add_argument('--iters', type=int, default=100, help='iterations at most (default 100)')
    parser.add_argument('--smooth', type=float, default=0.98,
                        help='exponential moving average factor of the smoothed loss (default 0.98)')
    parser.add_argument('--diverge', type=float, default=4.0,
                        help='stop when the smoothed loss exceeds this many times its minimum (default 4)')
    parser.add_argument('--out', default=None,
                        help='plot file (default work_dirs/lr_find/<config name>.png); the curve is written '
                        'beside it as <name>.json')
    parser.add_argument('--work-dir', default=None,
                        help='keep mmengine\'s logs of the run here (default: a temporary folder, removed)')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.apis.lr_find import default_out, lr_range_test, plot_lr_find
    from mmdet_custom.utils.fileio import check_writable, dump_json_atomic
    out = args.out or default_out(args.config)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config not found: {args.config}')
    check_writable(out, '--out')
    result = lr_range_test(args.config, start=args.start, end=args.end, iters=args.iters, smooth=args.smooth,
                           diverge=args.diverge, work_dir=args.work_dir, cfg_options=args.cfg_options)
    plot_lr_find(result, out, title=f'LR range test: {osp.basename(args.config)}')
    curve = osp.splitext(out)[0] + '.json'
    dump_json_atomic(result.to_dict(), curve, indent=1)
    stop = 'stopped early: the loss diverged' if result.stopped_early else 'ran every iteration'
    print(f'{len(result.lrs)} iterations, lr {result.lrs[0]:.3g} .. {result.lrs[-1]:.3g} ({stop})')
    if result.steepest_lr is not None:
        print(f'steepest descent of the smoothed loss at lr {result.steepest_lr:.3g}')
    print(f'lowest smoothed loss at lr {result.min_loss_lr:.3g} (/10: {result.min_loss_lr / 10:.3g})')
    print(f'suggested lr: {result.suggested_lr:.3g}')
    print(f'saved {out} and {curve}')
    return result


if __name__ == '__main__':
    run_cli(main)
