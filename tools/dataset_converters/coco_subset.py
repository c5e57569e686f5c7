"""Keep chosen classes of a COCO instances json, renumbered 1..K:
``python tools/dataset_converters/coco_subset.py IN_JSON OUT_JSON [--classes ...] [--drop-empty]``.

The input is validated first (no images, duplicated category names or ids, annotations pointing to missing images
or categories are refused: one ``error:`` line, exit code 2, nothing written); the output is written atomically.
The logic lives in :mod:`mmdet_custom.converters.coco_subset`.
"""
import argparse
import sys
import warnings

from mmdet_custom.converters.coco_subset import COCO_SUBSET_CLASSES, convert_coco_subset
from mmdet_custom.utils.cli import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Keep chosen classes of a COCO instances json (ids -> 1..K)')
    parser.add_argument('in_file', help='COCO instances json, e.g. annotations/instances_train2017.json')
    parser.add_argument('out_file', help='output json, e.g. annotations/instances_train2017_subset.json')
    parser.add_argument('--classes', nargs='+', default=list(COCO_SUBSET_CLASSES),
                        help=f'category names to keep, in their new id order (default: {COCO_SUBSET_CLASSES})')
    parser.add_argument('--drop-empty', action='store_true',
                        help='drop images left without any annotation of a kept class')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', UserWarning)
        stats = convert_coco_subset(args.in_file, args.out_file, classes=args.classes, drop_empty=args.drop_empty)
    for w in caught:
        print(f'warning: {w.message}', file=sys.stderr)
    print(f'{stats["images"]} images, {stats["annotations"]} annotations {stats["per_class"]} -> {args.out_file}')
    return stats


if __name__ == '__main__':
    run_cli(main)
