"""Convert microscopy cells to COCO: ``python tools/dataset_converters/cells.py ROOT -o OUT_DIR [options]``.

Reads ``ROOT/train/<id>/image.tif`` + ``class1.tif .. class4.tif`` and writes ``OUT_DIR/images/<id>.png`` and
``OUT_DIR/annotations/instances_{train,val}.json``; with ``--test-dir`` and ``--test-name-to-ids`` it also writes
``OUT_DIR/test/<stem>.png`` and ``OUT_DIR/annotations/image_info_test.json``. The logic lives in
:mod:`mmdet_custom.converters.cells`.
"""
import argparse


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
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.converters.cells import convert_cells, convert_cells_test
    stats = convert_cells(args.root, args.out_dir, val_fraction=args.val_fraction, seed=args.seed,
                          drop_border=args.drop_border, class_names=args.class_names)
    print(f'{stats["images"]} images ({stats["train_images"]} train, {stats["val_images"]} val), '
          f'{stats["instances"]} instances, {stats["dropped_border"]} dropped at the border -> {args.out_dir}')
    if args.test_dir:
        test_stats = convert_cells_test(args.test_dir, args.test_name_to_ids, args.out_dir,
                                        class_names=args.class_names)
        print(f'{test_stats["images"]} test images -> {args.out_dir}/annotations/image_info_test.json')


if __name__ == '__main__':
    main()
