"""Ground truth vs prediction, side by side, one PNG per image.

``python tools/analysis_tools/visualize_predictions.py CONFIG [CHECKPOINT] --output-dir DIR [--num-images 5]
[--show-score-thr 0.3] [--split test]``. Without a checkpoint the predictions are those of random weights.
The logic lives in :func:`mmdet_custom.analysis.visualize.visualize_predictions`.
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, add_device, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Draw ground truth (left) and predictions (right) per image')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', nargs='?', default=None, help='checkpoint file (default: random weights)')
    parser.add_argument('--output-dir', required=True, help='folder of the PNGs')
    parser.add_argument('--num-images', type=int, default=5, help='the first N images of the split')
    parser.add_argument('--indices', type=int, nargs='+', help='dataset indices to draw instead')
    parser.add_argument('--show-score-thr', type=float, default=0.3, help='score threshold of drawn predictions')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='test', help='dataloader to draw from')
    add_device(parser)
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.utils.config import read_config
    cfg = read_config(args.config, args.cfg_options)  # unknown --cfg-options keys are refused here
    import mmdet_custom.register  # noqa: F401  (registers the project's modules)
    from mmdet_custom.analysis.visualize import visualize_predictions
    files = visualize_predictions(cfg, args.checkpoint, args.output_dir, num_images=args.num_images,
                                  indices=args.indices, show_score_thr=args.show_score_thr, split=args.split,
                                  device=args.device)
    print(f'{len(files)} images written to {args.output_dir}')
    return files


if __name__ == '__main__':
    run_cli(main)
