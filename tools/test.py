"""Test a detector: ``python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--max-per-img 1000] ...``.

Prints bbox and segm AP, AP50, AP75, APs/APm/APl and the per-class AP table (CocoMetric, classwise) and writes the
metrics to ``<work_dir>/test_metrics.json`` (NaN as ``null``). With ``--format-only --out results.json`` it exports
COCO results (bbox xywh, score, RLE segmentation) for images without labels instead. Its last line names the files
written (metrics, log folder, ``--out``). Before inference it refuses a checkpoint that does not fit the config's
model (``--strict false`` tests it anyway, with a warning), an ``--out`` that cannot be written, a malformed
``--name-to-ids`` and missing or unreadable test images. ``--device cpu|cuda|cuda:N`` sets the runner's device
(default: mmengine's, the GPU when one is visible); a CUDA device without a usable GPU is refused at once. The logic
lives in :func:`mmdet_custom.apis.test`.
"""
import argparse

from mmdet_custom.utils.cli import (
    add_cfg_options,
    add_data_root,
    add_device,
    add_launcher,
    parse_with_launcher,
    run_cli,
)


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ('true', '1', 'yes', 'on'):
        return True
    if value in ('false', '0', 'no', 'off'):
        return False
    raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a detector (mmdet_custom)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='with --format-only: the COCO results json to write; otherwise dump predictions '
                        'to a pickle file for offline evaluation. Written whole or not at all (an existing file is '
                        'replaced only by a complete one); an input of the run (checkpoint, test ann_file) is refused')
    parser.add_argument('--format-only', action='store_true',
                        help='export results without evaluating (images without labels)')
    parser.add_argument('--score-thr', type=float, default=0.0, help='with --format-only: minimum score kept')
    parser.add_argument('--max-per-img', type=int, default=None,
                        help='detections kept and evaluated per image (iSAID: 1000)')
    parser.add_argument('--name-to-ids', default=None,
                        help='json mapping image file name -> image id for the exported results')
    parser.add_argument('--drop-border', action='store_true',
                        help='with --format-only: drop instances whose mask touches the image border')
    parser.add_argument('--strict', type=_bool, default=True, metavar='{true,false}',
                        help='refuse a checkpoint whose weights do not fit the config\'s model (missing, unexpected '
                        'or other-shaped keys); false tests it anyway, with those layers left at their '
                        'initialisation (default: true)')
    parser.add_argument('--no-strict', dest='strict', action='store_false', help='the same as --strict false')
    parser.add_argument('--no-image-check', action='store_true',
                        help='skip the check of every test image (exists, readable header) before inference')
    add_device(parser)  # None: mmengine's choice (cuda when a GPU is visible); launched ranks take cuda:LOCAL_RANK
    add_data_root(parser)
    add_cfg_options(parser)
    add_launcher(parser)
    return parse_with_launcher(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.apis import test
    from mmdet_custom.utils.device import DeviceError, use_device
    if args.launcher != 'none' and args.device not in (None, 'cuda'):
        raise DeviceError(f'--device {args.device} with --launcher {args.launcher}: each launched process takes the '
                          'GPU of its LOCAL_RANK; leave --device out or pass cuda')
    with use_device(args.device):
        metrics = test(args.config, args.checkpoint, work_dir=args.work_dir, cfg_options=args.cfg_options,
                       out=args.out, format_only=args.format_only, score_thr=args.score_thr,
                       max_per_img=args.max_per_img, name_to_ids=args.name_to_ids, drop_border=args.drop_border,
                       launcher=args.launcher, strict=args.strict, check_image_files=not args.no_image_check,
                       data_root=args.data_root)
    written = [f'metrics {metrics.metrics_file}', f'log {metrics.log_dir}']
    if metrics.out is not None:
        written.append(f'{"results" if args.format_only else "predictions"} {metrics.out}')
    print('written: ' + ', '.join(written))
    return metrics


if __name__ == '__main__':
    run_cli(main)
