"""Whole-scene inference against SAHI: same model, same windows, same machine, one run.

``python tools/benchmarks/bench_scene.py [--size 6000] [--model-size 6000] [--repeats 2] [--threads N] [--device cpu]``

Needs ``sahi`` (``pip install -r requirements/bench.txt``) and the iSAID samples under ``../shared/data/isaid_devkit``
(or ``$MMDET_CUSTOM_SHARED_DATA``). Part 1 merges the ground truth cut to the windows with both methods (found once,
duplicates left, lost, segm/bbox AP, merge time); part 2 runs the same detector with both, each run in a fresh
process (windows/s, time in and outside the model, duplicate pairs, peak RSS, post-load baseline, growth). What is
measured and how: :mod:`mmdet_custom.apis.scene_bench`.
"""
import argparse
import os.path as osp

from mmdet_custom.apis.scene_bench import run_scene_benchmark
from mmdet_custom.utils.cli import add_device, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=6000,
                        help='mosaic side of the merge-quality part in pixels (default: 6000)')
    parser.add_argument('--model-size', type=int, default=6000,
                        help='mosaic side of the model runs in pixels (default: 6000: 100 windows; 3000 has 25)')
    parser.add_argument('--repeats', type=int, default=2, help='rounds of model runs; the fastest is kept')
    parser.add_argument('--skip-quality', action='store_true', help='only the model runs')
    parser.add_argument('--no-eval', action='store_true',
                        help='merge-quality part: speed and memory only (no matching against the ground truth)')
    parser.add_argument('--window', type=int, default=800)
    parser.add_argument('--overlap', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=1,
                        help='windows per model call of ours (B in --runs; default: 1, infer_scene\'s CPU default)')
    parser.add_argument('--num-workers', type=int, default=1, help='reading workers of ours (W in --runs; default: 1)')
    parser.add_argument('--score-thr', type=float, default=0.05)
    parser.add_argument('--max-per-img', type=int, default=100, help='detections per window of the default model')
    add_device(parser, 'cpu')
    parser.add_argument('--config', help='model config (default: the CPU-sized ResNet-18 model, random init)')
    parser.add_argument('--checkpoint', help='checkpoint of --config (default: random init, saved here)')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'bench_scene'),
                        help='where the mosaics, the model and the report go (default: work_dirs/bench_scene)')
    parser.add_argument('--skip-model', action='store_true', help='only the merge-quality part')
    parser.add_argument('--timeout', type=int, default=3600, help='seconds per model run')
    parser.add_argument('--threads', type=int, default=0,
                        help='torch intra-op threads of every model run (default: 0, torch\'s own choice)')
    parser.add_argument('--runs', nargs='+', metavar='METHOD:FORMAT:BATCH:WORKERS:SPEEDUPS',
                        default=['sahi:png:1:0:0', 'sahi:png:1:0:1', 'ours:tif:B:W:1'],
                        help='model runs, in this order each round: sahi|ours, png|tif, batch size (B: '
                        '--batch-size), reading workers (W: --num-workers), speedups 0|1 (default: SAHI as is, SAHI '
                        'with our speedups applied to its model, ours as shipped (GeoTIFF, --batch-size, '
                        '--num-workers, speedups); ours:png:1:0:0 runs ours as SAHI does)')
    return parser.parse_args(argv)


def main(argv=None):
    return run_scene_benchmark(parse_args(argv))


if __name__ == '__main__':
    run_cli(main)
