"""Parameters, model size and FLOPs per component of a detector:
``python tools/analysis_tools/model_stats.py CONFIG [--out-csv stats.csv] [--shape 800 800]``.

Prints a table (backbone, CBAM, neck, rpn_head, bbox_head, bbox_predictor, mask_head, total: parameters, share,
size at FP32 / FP16 / INT8, GFLOPs per image of the dense part and MFLOPs per RoI of the RoI heads) and writes it as
CSV with ``--out-csv``. The model is built with random init (nothing is downloaded). The logic lives in
:mod:`mmdet_custom.analysis.model_stats`.
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters, size and FLOPs of a detector, per component')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--out-csv', help='write the table to this CSV file')
    parser.add_argument('--shape', type=int, nargs='+', default=[800, 800],
                        help='input image size (height width, or one side for a square) of the FLOPs count')
    parser.add_argument('--no-flops', action='store_true', help='count parameters and size only')
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    if len(args.shape) == 1:
        args.shape = [args.shape[0]] * 2
    elif len(args.shape) != 2:
        parser.error(f'--shape takes 1 or 2 integers (height width), got {args.shape}')
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.utils.config import read_config
    cfg = read_config(args.config, args.cfg_options)  # unknown --cfg-options keys are refused here
    from mmdet_custom.analysis.model_stats import format_table, model_stats, write_csv
    stats = model_stats(cfg, shape=None if args.no_flops else tuple(args.shape))
    print(format_table(stats))
    if args.out_csv:
        write_csv(stats, args.out_csv)
        print(f'written: {args.out_csv}')
    return stats


if __name__ == '__main__':
    run_cli(main)
