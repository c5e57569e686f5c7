"""Evaluation time of 1000-detection results (``make bench-eval``): pycocotools vs faster-coco-eval, same numbers.

``python tools/benchmarks/bench_eval.py [--gt JSON] [--per-image 1000] [--repeats 3] [--protocol isaid]
[--backends pycocotools faster-coco-eval] [--seed 0] [--out-json FILE] [--out-md FILE]``

Builds COCO results with exactly ``--per-image`` detections on every image of the ground truth (default: the
devkit's iSAID val patches in ../shared/data; jittered ground truth plus random rotated rectangles, fixed seed:
:func:`mmdet_custom.analysis.eval_bench.synthetic_coco_results`), evaluates them with every backend under the iSAID
protocol (maxDets 1/10/1000, iSAID's size bands), interleaved, and prints the time per backend and IoU type, the
speed-up over the first backend measured in the same run, and whether the 12 summary numbers and per-class APs are
identical.
"""
import argparse
import os.path as osp

from mmdet_custom.analysis.eval_bench import (
    format_eval_markdown,
    format_eval_table,
    synthetic_coco_results,
    time_eval_backends,
)
from mmdet_custom.utils.cli import run_cli
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_path, dump_json_atomic, load_json
from mmdet_custom.utils.paths import shared_data_dir

DEFAULT_GT = 'isaid_devkit_reference/instancesonly_filtered_val.json'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--gt', default=None,
                        help=f'ground-truth COCO json with polygon masks (default: ../shared/data/{DEFAULT_GT})')
    parser.add_argument('--per-image', type=int, default=1000, help='detections per image (default 1000)')
    parser.add_argument('--repeats', type=int, default=3, help='runs per backend and IoU type (default 3)')
    parser.add_argument('--protocol', default='isaid', choices=['isaid', 'coco'], help='default isaid')
    parser.add_argument('--backends', nargs='+', default=['pycocotools', 'faster-coco-eval'],
                        help='the first is the reference of the speed-ups')
    parser.add_argument('--iou-types', nargs='+', default=['segm', 'bbox'], choices=['segm', 'bbox'])
    parser.add_argument('--seed', type=int, default=0, help='seed of the synthetic results (default 0)')
    parser.add_argument('--out-json', default=None, help='write the timings and summary numbers here')
    parser.add_argument('--out-md', default=None, help='write the markdown table here (the docs copy it)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    gt_file = args.gt or osp.join(shared_data_dir(), DEFAULT_GT)
    if args.per_image < 1 or args.repeats < 1:
        raise UserError('--per-image and --repeats must be at least 1')
    gt = load_json(gt_file, 'ground-truth json (--gt)')
    results = synthetic_coco_results(gt, per_image=args.per_image, seed=args.seed)
    result = time_eval_backends(gt_file, results, backends=args.backends, iou_types=args.iou_types,
                                protocol=args.protocol, repeats=args.repeats)
    print(format_eval_table(result))
    if args.out_json:
        dump_json_atomic(result, args.out_json, indent=1)
        print(f'written: {args.out_json}')
    if args.out_md:
        with atomic_path(args.out_md) as tmp, open(tmp, 'w') as f:
            f.write(format_eval_markdown(result))
        print(f'written: {args.out_md}')
    return result


if __name__ == '__main__':
    run_cli(main)
