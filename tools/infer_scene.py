"""Predict instances on whole scenes: ``python tools/infer_scene.py CONFIG CHECKPOINT SCENE... --out-dir DIR``.

Scenes of any size (PNG/JPEG read whole; GeoTIFF and any GDAL raster read window by window) are cut into
``--window`` px windows overlapping by ``--overlap`` px (the iSAID devkit tiling), run through the model
``--batch-size`` windows at a time while ``--num-workers`` processes read ahead, and merged once: duplicates across
window overlaps are matched per class by mask IoU (or ``--match ios``) inside the overlap, and a detection cut by an
inner window border yields to one from a window that holds the object whole. ``DIR`` receives ``results.json``
(COCO results in scene pixels, RLE masks) with ``scenes.json``, ``<stem>.geojson`` (map coordinates and CRS when
the raster is georeferenced), ``<stem>.gpkg`` (with geopandas + pyogrio), ``<stem>_overlay.png`` and
``summary.json``; with ``--gt RAW_ISAID_DIR`` also ``eval.json`` (whole-scene segm and bbox AP, iSAID protocol).
The last line printed names the folder and its files.
The model runs with output-preserving speedups (BatchNorm folded, chunked channels_last mask head;
``--no-speedups`` turns them off). The logic lives in :mod:`mmdet_custom.apis.scene`.
"""
import argparse
import os

from mmdet_custom.utils.cli import add_cfg_options, add_device, run_cli
from mmdet_custom.utils.errors import UserError

_LISTED = 8  # output files named in the last line


def _value_range(values):
    if values == ['auto']:
        return 'auto'
    if len(values) != 2:
        raise argparse.ArgumentTypeError('--value-range takes LOW HIGH or auto')
    return float(values[0]), float(values[1])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Whole-scene inference (mmdet_custom)')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='scene rasters (PNG, JPEG, TIFF, GeoTIFF, ...)')
    parser.add_argument('--out-dir', required=True, help='output folder (written whole at the end)')
    parser.add_argument('--window', type=int, default=800, help='window side in pixels (default: 800)')
    parser.add_argument('--overlap', type=int, default=200, help='overlap of neighbouring windows (default: 200)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='windows per model call (default: 1 on a CPU, where batching gains no speed and a '
                        'second window adds ~150 MB to the peak (measured), else 2)')
    parser.add_argument('--num-workers', type=int, default=2,
                        help='processes reading windows ahead of the model (default: 2; 0 reads in the main one)')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch intra-op threads (default: 0, torch\'s own: one per core). On a CPU shared with '
                        'other jobs, 1 thread with --num-workers 1 is faster (measured on 2 busy cores: 4.0 s per '
                        'window with 1 thread, 6.9-8.3 s with 2)')
    parser.add_argument('--score-thr', type=float, default=0.05, help='minimum score kept (default: 0.05)')
    parser.add_argument('--max-per-window', type=int, default=1000,
                        help='detections kept per window, highest scores first (default: 1000, the iSAID budget '
                        'per image; the scene has no cap)')
    add_device(parser)
    parser.add_argument('--match', choices=('iou', 'ios'), default='iou',
                        help='duplicate test inside the overlap of two windows: mask IoU or intersection over the '
                        'smaller mask (default: iou)')
    parser.add_argument('--match-thr', type=float, default=0.5, help='duplicate threshold (default: 0.5)')
    parser.add_argument('--border-margin', type=int, default=2,
                        help='px from an inner window border within which a detection counts as cut (default: 2)')
    parser.add_argument('--bands', type=int, nargs='+', metavar='BAND',
                        help='GDAL band numbers (from 1) read as R G B, or one band as grey; needed for rasters '
                        'with more than 3 bands other than RGBA')
    parser.add_argument('--value-range', nargs='+', metavar='LOW HIGH | auto',
                        help='scaling of non-8-bit data to 0..255: LOW HIGH (clipped) or auto (2nd-98th '
                        'percentile per band); needed for 16-bit and float rasters')
    parser.add_argument('--gt', metavar='RAW_ISAID_DIR',
                        help='raw iSAID folder (devkit layout) with the masks of the same scenes: writes eval.json '
                        '(whole-scene segm and bbox AP, iSAID protocol)')
    parser.add_argument('--overlay-max-side', type=int, default=2048,
                        help='longer side of <stem>_overlay.png in pixels (default: 2048; 0: no overlay)')
    parser.add_argument('--no-speedups', action='store_true',
                        help='run the model as built: no BatchNorm folding, no chunked channels_last mask head '
                        '(the speedups keep the detections, to float rounding)')
    parser.add_argument('--no-gpkg', action='store_true', help='do not write GeoPackages')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    if args.value_range is not None:
        try:
            args.value_range = _value_range(args.value_range)
        except (argparse.ArgumentTypeError, ValueError) as e:
            parser.error(f'--value-range: {e}')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads < 0:
        raise UserError(f'--threads must be >= 0 (0: torch\'s default), got {args.threads}')
    from mmdet_custom.apis.scene import SceneInferencer, infer_scenes
    from mmdet_custom.models.builder import default_device
    batch_size = args.batch_size
    if batch_size is None:
        batch_size = 1 if (args.device or default_device()).startswith('cpu') else 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    inferencer = SceneInferencer.from_config(
        args.config, args.checkpoint, device=args.device, cfg_options=args.cfg_options,
        speedups=not args.no_speedups, window=args.window,
        overlap=args.overlap, batch_size=batch_size, num_workers=args.num_workers, score_thr=args.score_thr,
        max_per_window=args.max_per_window, match=args.match, match_thr=args.match_thr,
        border_margin=args.border_margin, progress=not args.no_progress)
    summary = infer_scenes(inferencer, args.inputs, args.out_dir, gt_dir=args.gt, bands=args.bands,
                           value_range=args.value_range, overlay_max_side=args.overlay_max_side,
                           geopackage=not args.no_gpkg)
    files = sorted(f for f in os.listdir(args.out_dir) if not f.startswith('.'))  # not this project's marker
    listed = ', '.join(files[:_LISTED]) + (f' and {len(files) - _LISTED} more' if len(files) > _LISTED else '')
    print(f'written to {args.out_dir}: {listed}')
    return summary


if __name__ == '__main__':
    run_cli(main)
