"""Training curves (losses, learning rate, validation AP) of one or more runs from mmengine's json logs.

``python tools/analysis_tools/plot_train_curves.py WORK_DIR_OR_JSON [...] --out curves.png [--keys loss loss_mask]
[--metric-keys coco/segm_mAP] [--legend a b]``; see :mod:`mmdet_custom.analysis.train_curves`.
"""
import argparse

from mmdet_custom.utils.cli import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Plot training curves from mmengine json logs')
    parser.add_argument('json_logs', nargs='+',
                        help='scalars.json / <timestamp>.json, or a run or work dir (its latest run)')
    parser.add_argument('--out', required=True, help='output figure (PNG)')
    parser.add_argument('--keys', nargs='+', default=None,
                        help='loss keys (default: every loss of one run, total loss when comparing runs)')
    parser.add_argument('--metric-keys', nargs='+', default=None,
                        help='validation keys (default: coco/{bbox,segm}_mAP{,_50} when logged)')
    parser.add_argument('--legend', nargs='+', default=None, help='one name per log')
    parser.add_argument('--title', default=None, help='figure title')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.analysis.train_curves import plot_train_curves
    series = plot_train_curves(args.json_logs, args.out, loss_keys=args.keys, metric_keys=args.metric_keys,
                               legend=args.legend, title=args.title)
    for name, s in series.items():
        last = {k: v[-1] for k, v in s['metrics'].items() if v}
        print(f'{name}: {len(s["iters"])} training records from {s["file"]}; last validation: {last or "none"}')
    print(f'saved {args.out}')
    return series


if __name__ == '__main__':
    run_cli(main)
