"""Dense scenes (``make bench-dense``): one training step with 100 to 3,000 objects per 800 px patch, mmdet's
MaxIoUAssigner + bitmap masks against the shipped SparseMaxIoUAssigner + polygon masks, side by side in one run.

``python tools/benchmarks/bench_dense.py [CONFIG ...] [--objects 100 500 1239 3000] [--variants mmdet ours]
[--max-gib 20] [--img-size 800] [--batch 2] [--steps 2] [--device cpu] [--threads N] [--timeout S] [--profile]
[--out-md FILE] [--out-json FILE]``

Without CONFIGs: stock-anchor R50 (``configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py``) and the full model
(``configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py``). Each step runs in its own process through the
config's train dataset class and pipeline (random weights); peak RSS (CUDA max allocated on a GPU) and seconds
(pipeline, step) are reported, and a step whose memory passes ``--max-gib`` is stopped and reported as such. How it
works: :mod:`mmdet_custom.analysis.dense_bench`.
"""
import argparse

from mmdet_custom.utils.cli import add_device, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='*', metavar='CONFIG', help='configs (default: stock R50 and full model)')
    parser.add_argument('--objects', type=int, nargs='+', default=[100, 500, 1239, 3000],
                        help='objects per patch (default 100 500 1239 3000)')
    parser.add_argument('--variants', nargs='+', default=['mmdet', 'ours'], choices=['mmdet', 'ours'],
                        help="'mmdet' (MaxIoUAssigner, bitmap masks) and/or 'ours' (the config as shipped)")
    parser.add_argument('--max-gib', type=float, default=20.0,
                        help='stop a step whose resident memory passes this (GiB, default 20)')
    parser.add_argument('--img-size', type=int, default=800, help='patch side in pixels (default 800)')
    parser.add_argument('--batch', type=int, default=2, help='patches per step (default 2)')
    add_device(parser, 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch threads per step (default: torch)')
    parser.add_argument('--timeout', type=float, default=None, help='seconds allowed to one step')
    parser.add_argument('--steps', type=int, default=2,
                        help='steps on the batch; the last is timed (default 2: one warm-up, one timed)')
    parser.add_argument('--profile', action='store_true', help='torch.profiler top operators by time and memory')
    parser.add_argument('--out-md', default=None, help='write the markdown table here')
    parser.add_argument('--out-json', default=None, help='write the raw measurements here')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.analysis.dense_bench import DEFAULT_CONFIGS, format_markdown, run_dense_benchmark
    from mmdet_custom.utils.errors import UserError
    from mmdet_custom.utils.fileio import atomic_path, check_writable, dump_json_atomic
    if min(args.objects) < 0 or args.batch < 1 or args.max_gib <= 0 or args.steps < 1:
        raise UserError('--objects must be >= 0, --batch and --steps >= 1 and --max-gib > 0')
    for path, flag in ((args.out_md, '--out-md'), (args.out_json, '--out-json')):
        if path:
            check_writable(path, flag)
    configs = {c: c for c in args.configs} if args.configs else DEFAULT_CONFIGS
    report = run_dense_benchmark(configs, args.objects, args.variants, max_gib=args.max_gib,
                                 img_size=args.img_size, batch=args.batch, device=args.device, threads=args.threads,
                                 timeout=args.timeout, profile=args.profile, steps=args.steps)
    table = format_markdown(report)
    print(table)
    if args.profile:
        for row in report['rows']:
            for kind, ops in row.get('profile', {}).items():
                print(f"{row['model']} {row['objects']} {row['variant']} top self CPU {kind}: "
                      + ', '.join(f'{k} {v:.3g}' for k, v in ops[:6]))
    if args.out_md:
        with atomic_path(args.out_md) as tmp, open(tmp, 'w') as f:
            f.write(table)
    if args.out_json:
        dump_json_atomic(report, args.out_json)


if __name__ == '__main__':
    run_cli(main)
