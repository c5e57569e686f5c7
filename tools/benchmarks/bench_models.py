"""Detectors side by side (``make bench``): training img/s, inference ms/img at 100 and 1000 detections (by part),
peak memory, parameters and GFLOPs, each as a ratio to the first model, from one interleaved run.

``python tools/benchmarks/bench_models.py [[NAME=]CONFIG[+fast] ...] [--img-size 800] [--repeats 3] [--steps 1]
[--warmup 1] [--device cpu] [--threads N] [--data DIR|random] [--profile] [--out-md FILE] [--out-json FILE]``

Without CONFIGs: stock mmdet Mask R-CNN R50-FPN (the reference), the full model, the full model with the
inference speedups (``+fast``: BN folded into convs, channels_last backbone, mask head in chunks of 100 RoIs),
EfficientNet-B0 with a plain FPN and no attention, R50 + CBAM, and torchvision's ``maskrcnn_resnet50_fpn``
(inference only). A CONFIG is a file, ``mmdet::<path>`` (mmdet's own configs) or ``torchvision``. Every model is
measured in its own process (peak memory per model), random weights, repeats interleaved; the report gives the
spread over the repeats and warns when the machine's load exceeded its cores. What is timed and how: see
:mod:`mmdet_custom.analysis.benchmark` (the report: :mod:`mmdet_custom.analysis.bench_report`).
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, add_device, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='*', metavar='CONFIG',
                        help='[NAME=]CONFIG[+fast]; the first is the reference (default: the standard set)')
    parser.add_argument('--img-size', type=int, default=800, help='square input side in pixels (default 800)')
    parser.add_argument('--repeats', type=int, default=3, help='processes per model, interleaved (default 3)')
    parser.add_argument('--steps', type=int, default=1, help='timed steps per phase and process (default 1)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps before each phase (default 1)')
    add_device(parser, 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch threads per process (default: torch)')
    parser.add_argument('--dets', type=int, nargs='+', default=[100, 1000],
                        help='detection budgets (test_cfg.rcnn.max_per_img) of the inference phases')
    parser.add_argument('--train-batch', type=int, default=2, help='images per training step (default 2)')
    parser.add_argument('--data', default=None,
                        help="raw iSAID devkit folder, converted patch folder, or 'random' (default: "
                             '../shared/data/isaid_devkit when present, else random images)')
    parser.add_argument('--profile', action='store_true',
                        help='torch.profiler: top operators per model part (one inference and training step)')
    parser.add_argument('--timeout', type=float, default=None, help='seconds allowed to one measurement')
    parser.add_argument('--out-md', default=None, help='write the markdown report here')
    parser.add_argument('--out-json', default=None, help='write the raw measurements here')
    add_cfg_options(parser)  # merged into every mmdet config (e.g. smaller test_cfg for a quick run)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.analysis.bench_report import format_markdown, format_profile, format_table
    from mmdet_custom.analysis.benchmark import default_specs, parse_spec, run_benchmark
    from mmdet_custom.utils.fileio import atomic_path, check_writable, dump_json_atomic
    specs = [parse_spec(c) for c in args.configs] if args.configs else default_specs()
    for spec in specs:
        spec.cfg_options.update(args.cfg_options or {})
    for path, flag in ((args.out_md, '--out-md'), (args.out_json, '--out-json')):
        if path:
            check_writable(path, flag)  # refused before an hour of measuring
    report = run_benchmark(specs, img_size=args.img_size, repeats=args.repeats, steps=args.steps,
                           warmup=args.warmup, device=args.device, data=args.data, threads=args.threads,
                           dets=args.dets, train_batch=args.train_batch, profile=args.profile, timeout=args.timeout)
    print(format_table(report))
    if args.profile:
        print(format_profile(report))
    if args.out_md:
        with atomic_path(args.out_md) as tmp, open(tmp, 'w') as f:
            f.write(format_markdown(report))
        print(f'written: {args.out_md}')
    if args.out_json:
        dump_json_atomic(report, args.out_json, indent=1)
        print(f'written: {args.out_json}')
    return report


if __name__ == '__main__':
    run_cli(main)
