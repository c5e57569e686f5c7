"""Cut raw iSAID (official devkit layout) into COCO-format patches, by default exactly as the devkit does: a thin CLI
over :func:`mmdet_custom.converters.isaid.convert_isaid` (layouts read and written: see that package's docstring).

It imports neither torch nor mmdet (the class names come from ``mmdet_custom.utils.isaid_meta``).

Example::

    python tools/dataset_converters/isaid.py data/iSAID_raw data/isaid              # the splits found, devkit output
    python tools/dataset_converters/isaid.py raw out --masks exact                   # masks exact to the pixel
    python tools/dataset_converters/isaid.py raw out --patch-size 512 --overlap 128 --rle \\
        --classes my_classes.py   # a config with metainfo = dict(classes=..., palette=...)
"""
import argparse
from typing import Optional, Sequence

from mmdet_custom.converters.isaid import (
    DEFAULT_SPLITS,
    DEVKIT_AREA_THRESHOLD,
    DEVKIT_SKIP_IMAGES,
    MASK_MODES,
    convert_isaid,
    format_summary,
    parse_class_spec,
)
from mmdet_custom.utils.cli import run_cli


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Convert iSAID (devkit layout) to COCO-format patches; the defaults '
                                     'write what the official devkit writes')
    parser.add_argument('raw_dir', help='raw iSAID root holding <split>/images (and optionally the official jsons)')
    parser.add_argument('out_dir', help='output root: <out_dir>/<split>/images, <out_dir>/annotations; written whole '
                        'or not at all; must lie outside raw_dir')
    parser.add_argument('--splits', nargs='+', default=None,
                        help=f'splits to convert (default: those of {" ".join(DEFAULT_SPLITS)} found under raw_dir)')
    parser.add_argument('--patch-size', type=int, default=800,
                        help='patch side in pixels; an image with a side <= it is kept whole')
    parser.add_argument('--overlap', type=int, default=200, help='overlap of neighbouring patches in pixels')
    parser.add_argument('--masks', choices=MASK_MODES, default='devkit',
                        help='devkit: polygons through boundary-pixel centres, as the official devkit (comparable '
                        'with published iSAID numbers); exact: masks that rasterise back to exactly the pixels')
    parser.add_argument('--area-threshold', type=int, default=DEVKIT_AREA_THRESHOLD,
                        help='drop instances of at most this many pixels (devkit: 10; 0 keeps all)')
    parser.add_argument('--skip-images', nargs='*', default=list(DEVKIT_SKIP_IMAGES), metavar='STEM',
                        help='image stems left out (devkit: P1527 P1530; give the flag alone to keep all)')
    parser.add_argument('--max-boxes', type=int, default=0,
                        help='train: drop patches with more instances (default 0: keep all, as the devkit)')
    parser.add_argument('--max-empty-fraction', type=float, default=1.0,
                        help='train: at most this fraction of the kept patches is empty (default 1: keep all)')
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
        show_progress=not args.no_progress,
        masks=args.masks,
        area_threshold=args.area_threshold,
        skip_images=args.skip_images)
    print(format_summary(summary))
    return summary


if __name__ == '__main__':
    run_cli(main)
