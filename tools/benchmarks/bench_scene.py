"""Whole-scene inference against SAHI: same model, same windows, same machine, one run.

``python tools/benchmarks/bench_scene.py [--size 6000] [--model-size 6000] [--repeats 2] [--threads N] [--device cpu]``

Needs ``sahi`` (``pip install -r requirements/bench.txt``) and the iSAID samples under ``../shared/data/isaid_devkit``
(or ``$MMDET_CUSTOM_SHARED_DATA``). Part 1 merges the ground truth cut to the windows with both methods (found once,
duplicates left, lost, segm/bbox AP, merge time); part 2 runs the same detector with both, each run in a fresh
process (windows/s, time in and outside the model, duplicate pairs, peak RSS, post-load baseline, growth). What is
measured and how: :mod:`mmdet_custom.apis.scene_bench`.
"""
from mmdet_custom.apis.scene_bench import build_parser, run_scene_benchmark
from mmdet_custom.utils.cli import run_cli


def parse_args(argv=None):
    return build_parser(__doc__.split('\n')[0]).parse_args(argv)


def main(argv=None):
    return run_scene_benchmark(parse_args(argv))


if __name__ == '__main__':
    run_cli(main)
