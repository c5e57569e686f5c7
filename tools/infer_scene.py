"""Predict instances on a region of whole scenes:
``python tools/infer_scene.py CONFIG CHECKPOINT INPUT... --out-dir DIR [--shard I/N] [--crs EPSG:xxxx]``.

``INPUT`` is a scene file, a folder of rasters, a quoted glob (``'tiles/*.tif'``) or a text file (``.txt``/``.lst``)
with one scene path per line. Scenes of any size (PNG/JPEG read whole; GeoTIFF and any GDAL raster read window by
window) are cut into ``--window`` px windows overlapping by ``--overlap`` px (the iSAID devkit tiling), run through
the model ``--batch-size`` windows at a time while ``--num-workers`` processes read ahead, and merged once per scene.

``DIR`` holds ``manifest.json`` (settings that change outputs; a rerun with other settings is refused),
``scenes/<stem>/`` (each scene's GeoJSON, GeoPackage, overlay, COCO results and record, written whole as soon as the
scene is done; a rerun skips complete scenes) and ``region/`` (every scene merged: ``results.json`` +
``scenes.json``, ``region.gpkg`` in one CRS, ``summary.json``, ``eval.json`` with ``--gt``), written by the process
that completes the last scene, or by ``--merge-only``. ``--shard I/N`` (or torchrun's ``RANK``/``WORLD_SIZE``)
runs a deterministic share of the scenes; no process group is used. The last line printed names the folder and its
files. The logic lives in :mod:`mmdet_custom.apis.scene` (:func:`~mmdet_custom.apis.scene.infer_region`).
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
    parser.add_argument('config', nargs='?', help='model config file')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint file')
    parser.add_argument('inputs', nargs='*', metavar='INPUT',
                        help='scene rasters (PNG, JPEG, TIFF, GeoTIFF, ...), folders of them, quoted globs, or .txt '
                        'files with one scene path per line')
    parser.add_argument('--out-dir', required=True,
                        help='region folder: manifest.json, scenes/<stem>/ (each written whole when done), region/')
    parser.add_argument('--shard', metavar='I/N',
                        help='run shard I of N (from 0) of the scenes; default: torchrun\'s RANK/WORLD_SIZE, else 0/1')
    parser.add_argument('--crs', metavar='CRS',
                        help='CRS of region/region.gpkg (e.g. EPSG:32633): scenes in other CRSs are reprojected; '
                        'without it scenes in different CRSs are refused')
    parser.add_argument('--merge-only', action='store_true',
                        help='only merge the complete scenes of --out-dir into region/ (no model; CONFIG, '
                        'CHECKPOINT and INPUT not needed)')
    parser.add_argument('--max-scenes', type=int, default=None,
                        help='run at most this many scenes of this shard now (the others on a later run)')
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
    parser.add_argument('--overlay-scores', action='store_true', help='write each detection\'s score on the overlay')
    parser.add_argument('--no-speedups', action='store_true',
                        help='run the model as built: no BatchNorm folding, no chunked channels_last mask head '
                        '(the speedups keep the detections, to float rounding)')
    parser.add_argument('--no-gpkg', action='store_true', help='do not write GeoPackages')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar (the bar counts windows across this shard\'s scenes, with the ETA)')
    add_cfg_options(parser)
    args = parser.parse_args(argv)
    if args.value_range is not None:
        try:
            args.value_range = _value_range(args.value_range)
        except (argparse.ArgumentTypeError, ValueError) as e:
            parser.error(f'--value-range: {e}')
    return args


def _last_line(out_dir, summary) -> str:
    """The line naming what was written: the region's files, or how many scenes are complete."""
    if 'missing' in summary:
        done, total = summary['complete'], summary['complete'] + len(summary['missing'])
        return (f'{done} of {total} scenes complete in {out_dir}/scenes; region/ is written by the run that completes '
                f'the last scene (or --merge-only)')
    region = os.path.join(out_dir, 'region')
    files = sorted(f for f in os.listdir(region) if not f.startswith('.'))  # not this project's marker
    listed = ', '.join(files[:_LISTED]) + (f' and {len(files) - _LISTED} more' if len(files) > _LISTED else '')
    return f'written to {out_dir}: manifest.json, scenes/ ({len(summary["scenes"])} scenes), region/ ({listed})'


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.apis.scene import merge_region
    if args.merge_only:
        summary = merge_region(args.out_dir, crs=args.crs, gt_dir=args.gt)
        print(_last_line(args.out_dir, summary))
        return summary
    if args.config is None or args.checkpoint is None or not args.inputs:
        raise UserError('give CONFIG CHECKPOINT INPUT... (or --merge-only --out-dir DIR)')
    if args.threads < 0:
        raise UserError(f'--threads must be >= 0 (0: torch\'s default), got {args.threads}')
    if args.max_scenes is not None and args.max_scenes < 0:
        raise UserError(f'--max-scenes must be >= 0, got {args.max_scenes}')
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{what} not found: {path}')
    from mmengine.config import Config

    from mmdet_custom.apis.scene import SceneInferencer, expand_scene_inputs, infer_region, resolve_shard
    from mmdet_custom.apis.scene.inputs import MASK_SUFFIXES
    from mmdet_custom.apis.scene.manifest import config_sha256, file_sha256
    from mmdet_custom.models.builder import default_device
    shard = resolve_shard(args.shard)
    skipped = []
    inputs = expand_scene_inputs(args.inputs, skipped)
    if skipped:
        print(f'skipped {len(skipped)} iSAID annotation mask(s) found in the folders/patterns '
              f'(*{" and *".join(MASK_SUFFIXES)}); name a file alone to predict on it anyway')
    device = args.device or default_device()
    if device == 'cuda' and 'LOCAL_RANK' in os.environ:  # torchrun: one GPU per local rank
        device = f'cuda:{int(os.environ["LOCAL_RANK"])}'
    batch_size = args.batch_size
    if batch_size is None:
        batch_size = 1 if device.startswith('cpu') else 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model_id = dict(config_sha256=config_sha256(cfg), checkpoint_sha256=file_sha256(args.checkpoint),
                    speedups=not args.no_speedups)
    inferencer = SceneInferencer.from_config(
        args.config, args.checkpoint, device=device, cfg_options=args.cfg_options,
        speedups=not args.no_speedups, window=args.window,
        overlap=args.overlap, batch_size=batch_size, num_workers=args.num_workers, score_thr=args.score_thr,
        max_per_window=args.max_per_window, match=args.match, match_thr=args.match_thr,
        border_margin=args.border_margin, progress=False)
    summary = infer_region(inferencer, inputs, args.out_dir, model_id=model_id, shard=shard, gt_dir=args.gt,
                           bands=args.bands, value_range=args.value_range, overlay_max_side=args.overlay_max_side,
                           overlay_scores=args.overlay_scores, geopackage=not args.no_gpkg, crs=args.crs,
                           max_scenes=args.max_scenes, progress=not args.no_progress)
    print(_last_line(args.out_dir, summary))
    return summary


if __name__ == '__main__':
    run_cli(main)
