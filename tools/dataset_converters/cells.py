"""Convert microscopy cells to COCO: ``python tools/dataset_converters/cells.py ROOT -o OUT_DIR [options]``.

Reads ``ROOT/train/<id>/image.tif`` + ``class1.tif .. class4.tif`` (``.tiff`` too, see
:func:`mmdet_custom.converters.cells.find_cell_files`) and writes ``OUT_DIR/images/<id>.png`` and
``OUT_DIR/annotations/instances_{train,val}.json``; with ``--test-dir`` and ``--test-name-to-ids`` it also writes
``OUT_DIR/test/<stem>.png`` and ``OUT_DIR/annotations/image_info_test.json``. ``OUT_DIR`` is replaced in one atomic
swap: a failed or killed run leaves the previous output whole. The logic lives in
:mod:`mmdet_custom.converters.cells`. Input mistakes end with one ``error:`` line and exit code 2 (``--debug``
shows the traceback).
"""
import argparse
import os
import sys
import warnings

from mmdet_custom.converters.cells import convert_cells
from mmdet_custom.utils.cli import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Convert cell folders (image.tif + classK.tif) to COCO jsons')
    parser.add_argument('root', help='dataset root holding train/<id>/image.tif and classK.tif label images')
    parser.add_argument('-o', '--out-dir', default='data/cells', help='output root (default: data/cells)')
    parser.add_argument('--val-fraction', type=float, default=0.2, help='share of images in val (default: 0.2)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the train/val split (default: 0)')
    parser.add_argument('--drop-border', action='store_true', help='drop instances touching the image border')
    parser.add_argument('--class-names', nargs='+', help='category names of class1.tif, class2.tif, ... '
                        '(default: class1 class2 class3 class4)')
    parser.add_argument('--test-dir', help='folder of unlabelled test images to convert as well')
    parser.add_argument('--test-name-to-ids', help='json mapping test file names to image ids '
                        '(test_image_name_to_ids.json); required with --test-dir')
    args = parser.parse_args(argv)
    if bool(args.test_dir) != bool(args.test_name_to_ids):
        parser.error('--test-dir and --test-name-to-ids go together')
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f'--val-fraction must be in [0, 1), got {args.val_fraction}')
    return args


def main(argv=None):
    args = parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', UserWarning)
        stats = convert_cells(args.root, args.out_dir, val_fraction=args.val_fraction, seed=args.seed,
                              drop_border=args.drop_border, class_names=args.class_names,
                              test_dir=args.test_dir, test_name_to_ids=args.test_name_to_ids)
    for w in caught:
        print(f'warning: {w.message}', file=sys.stderr)
    print(f'{stats["images"]} images ({stats["train_images"]} train, {stats["val_images"]} val), '
          f'{stats["instances"]} instances, {stats["dropped_border"]} dropped at the border -> {args.out_dir}')
    if args.test_dir:
        print(f'{stats["test_images"]} test images -> '
              f'{os.path.join(args.out_dir, "annotations", "image_info_test.json")}')
    return stats


if __name__ == '__main__':
    run_cli(main)
