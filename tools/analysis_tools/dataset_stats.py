"""Statistics of a COCO-format dataset: instances per class, objects per image (outliers), object sizes.

``python tools/analysis_tools/dataset_stats.py data/isaid/annotations/instances_train.json --output-dir DIR``
writes CSVs, PNG plots and summary.json; see :mod:`mmdet_custom.analysis.dataset_stats`. A missing or malformed
json ends with one ``error:`` line naming the file and exit code 2 (``--debug`` shows the traceback).
"""
import argparse
import sys
import warnings

from mmdet_custom.analysis.dataset_stats import dataset_stats, format_stats
from mmdet_custom.utils.cli import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Statistics of a COCO instances json')
    parser.add_argument('ann_file', help='COCO instances json')
    parser.add_argument('--output-dir', required=True, help='folder of the CSVs, PNGs and summary.json')
    parser.add_argument('--outlier-k', type=float, default=1.5,
                        help='images with more than Q3 + k IQR (or fewer than Q1 - k IQR) objects are outliers')
    parser.add_argument('--bins', type=int, default=40, help='bins of the object-size histogram')
    args = parser.parse_args(argv)
    if args.outlier_k < 0:
        parser.error(f'--outlier-k must be >= 0, got {args.outlier_k}')
    if args.bins < 1:
        parser.error(f'--bins must be >= 1, got {args.bins}')
    return args


def main(argv=None):
    args = parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', UserWarning)
        summary = dataset_stats(args.ann_file, args.output_dir, outlier_k=args.outlier_k, bins=args.bins)
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f'warning: {w.message}', file=sys.stderr)
    print(format_stats(summary))
    print(f'written to {args.output_dir}')
    return summary


if __name__ == '__main__':
    run_cli(main)
