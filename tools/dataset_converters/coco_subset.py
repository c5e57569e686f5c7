"""Keep chosen classes of a COCO instances json, renumbered 1..K:
``python tools/dataset_converters/coco_subset.py IN_JSON OUT_JSON [--classes ...] [--drop-empty]``.

The logic lives in :mod:`mmdet_custom.converters.coco_subset`.
"""
import argparse


def parse_args(argv=None):
    from mmdet_custom.converters.coco_subset import COCO_SUBSET_CLASSES
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
    from mmdet_custom.converters.coco_subset import convert_coco_subset
    stats = convert_coco_subset(args.in_file, args.out_file, classes=args.classes, drop_empty=args.drop_empty)
    print(f'{stats["images"]} images, {stats["annotations"]} annotations {stats["per_class"]} -> {args.out_file}')


if __name__ == '__main__':
    main()
