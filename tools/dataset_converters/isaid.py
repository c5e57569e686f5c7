"""Cut raw iSAID (official devkit layout) into COCO-format patches: a thin CLI over
:func:`mmdet_custom.converters.isaid.convert_isaid` (layouts read and written: see that module's docstring).

Example::

    python tools/dataset_converters/isaid.py data/iSAID_raw data/isaid --splits train val test
    python tools/dataset_converters/isaid.py raw out --patch-size 512 --overlap 128 --rle \\
        --classes my_classes.py   # a config with metainfo = dict(classes=..., palette=...)
"""
import argparse
from typing import Optional, Sequence

from mmdet_custom.converters.isaid import convert_isaid, format_summary, parse_class_spec


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Convert iSAID (devkit layout) to COCO-format patches')
    parser.add_argument('raw_dir', help='raw iSAID root holding <split>/images (and optionally the official jsons)')
    parser.add_argument('out_dir', help='output root: <out_dir>/<split>/images, <out_dir>/annotations')
    parser.add_argument('--splits', nargs='+', default=['train', 'val', 'test'], help='splits to convert')
    parser.add_argument('--patch-size', type=int, default=800, help='patch side in pixels')
    parser.add_argument('--overlap', type=int, default=200, help='overlap of neighbouring patches in pixels')
    parser.add_argument('--max-boxes', type=int, default=400,
                        help='train: drop patches with more instances (0 keeps all)')
    parser.add_argument('--max-empty-fraction', type=float, default=0.3,
                        help='train: at most this fraction of the kept patches is empty (1 keeps all)')
    parser.add_argument('--rle', action='store_true', help='write masks as RLE instead of polygons')
    parser.add_argument('--classes', default=None,
                        help='class names: "a,b,c" or a .json/.py file with classes (or metainfo.classes)')
    parser.add_argument('--palette', default=None,
                        help='class colours of the colour masks: "R,G,B;R,G,B", "[[R,G,B],...]" or a .json/.py file '
                        'with palette (or metainfo.palette); a file given to --classes is also read for it')
    parser.add_argument('--source', choices=['auto', 'masks', 'json'], default='auto',
                        help='annotations from the PNG masks or the official iSAID_<split>.json (auto: json if found)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the empty-patch choice')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bars')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    classes, palette = parse_class_spec(args.classes, args.palette)
    summary = convert_isaid(
        args.raw_dir,
        args.out_dir,
        splits=args.splits,
        patch_size=args.patch_size,
        overlap=args.overlap,
        max_boxes=args.max_boxes or None,
        max_empty_fraction=args.max_empty_fraction,
        rle=args.rle,
        classes=classes,
        palette=palette,
        seed=args.seed,
        source=args.source,
        show_progress=not args.no_progress)
    print(format_summary(summary))
    return summary


if __name__ == '__main__':
    main()
