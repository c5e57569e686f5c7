"""Statistics of a COCO-format dataset: instances per class, objects per image (outliers), object sizes.

``python tools/analysis_tools/dataset_stats.py data/isaid/annotations/instances_train.json --output-dir DIR``
writes CSVs, PNG plots and summary.json; see :mod:`mmdet_custom.analysis.dataset_stats`.
"""
import argparse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Statistics of a COCO instances json')
    parser.add_argument('ann_file', help='COCO instances json')
    parser.add_argument('--output-dir', required=True, help='folder of the CSVs, PNGs and summary.json')
    parser.add_argument('--outlier-k', type=float, default=1.5,
                        help='images with more than Q3 + k IQR (or fewer than Q1 - k IQR) objects are outliers')
    parser.add_argument('--bins', type=int, default=40, help='bins of the object-size histogram')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.analysis.dataset_stats import dataset_stats, format_stats
    summary = dataset_stats(args.ann_file, args.output_dir, outlier_k=args.outlier_k, bins=args.bins)
    print(format_stats(summary))
    print(f'written to {args.output_dir}')
    return summary


if __name__ == '__main__':
    main()
