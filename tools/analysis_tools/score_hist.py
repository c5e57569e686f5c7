"""Histogram of the detection scores of a model on a dataset, with the raw scores (CSV and json).

``python tools/analysis_tools/score_hist.py CONFIG [CHECKPOINT] --output-dir DIR [--split test] [--num-images N]
[--cfg-options model.test_cfg.rcnn.score_thr=0]``. The logic lives in
:func:`mmdet_custom.analysis.score_hist.score_histogram`.
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, add_device, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Histogram of detection scores')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', nargs='?', default=None, help='checkpoint file (default: random weights)')
    parser.add_argument('--output-dir', required=True, help='folder of scores.csv, scores.json, score_hist.png')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='test', help='dataloader to score')
    parser.add_argument('--num-images', type=int, default=None, help='only the first N images (default: all)')
    parser.add_argument('--bins', type=int, default=50, help='histogram bins on [0, 1]')
    parser.add_argument('--top-classes', type=int, default=5, help='classes drawn as their own lines')
    add_device(parser)
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.utils.config import read_config
    cfg = read_config(args.config, args.cfg_options)  # unknown --cfg-options keys are refused here
    import mmdet_custom.register  # noqa: F401  (registers the project's modules)
    from mmdet_custom.analysis.score_hist import score_histogram
    summary = score_histogram(cfg, args.checkpoint, args.output_dir, split=args.split,
                              num_images=args.num_images, bins=args.bins, top_classes=args.top_classes,
                              device=args.device)
    mean = 'n/a' if summary['mean_score'] is None else f'{summary["mean_score"]:.3f}'
    print(f'{summary["detections"]} detections on {summary["images"]} images, mean score {mean} '
          f'(model score_thr {summary["score_thr"]})')
    for name, count in summary['per_class'].items():
        print(f'    {name:<20s} {count}')
    print(f'written: {", ".join(summary["files"].values())}')
    return summary


if __name__ == '__main__':
    run_cli(main)
