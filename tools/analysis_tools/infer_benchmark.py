"""Inference benchmark of one detector: ms per image, images per second and peak memory at several batch sizes.

``python tools/analysis_tools/infer_benchmark.py CONFIG [--checkpoint CKPT] [--batch-sizes 1 2 4] [--num-warmup 2]
[--max-iter 5] [--split test] [--device cpu|cuda] [--out bench.json] [--cfg-options ...]``

Timed: ``model.test_step`` on ready batches of the config's ``--split`` images (data preprocessor, forward, NMS and
mask pasting); image loading and the data pipeline are not timed. Without ``--checkpoint`` the weights are
PyTorch's default initialisation (the config's own ``init_cfg`` is not applied): the network costs the same, but the
number of detections kept - and with it the box NMS and mask head / pasting time, which dominate at iSAID's 1000
detections - can differ from a trained model's. Memory: on CUDA ``max_memory_allocated``; on the CPU the growth of
the process's peak RSS over its size before the first batch, not the whole process. Batch sizes run in increasing
order in one process, so a figure is the peak up to that batch size. To compare models side by side (interleaved
runs, time by model part, ratios to stock R50, the machine's load) use ``tools/benchmarks/bench_models.py``. See
:mod:`mmdet_custom.analysis.infer_bench`.
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, add_device, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark inference of a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('--checkpoint', default=None, help='checkpoint file (default: random weights)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 2, 4], help='batch sizes')
    parser.add_argument('--num-warmup', type=int, default=2, help='untimed steps per batch size')
    parser.add_argument('--max-iter', type=int, default=5, help='timed steps per batch size')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='test', help='images of this split')
    add_device(parser)
    parser.add_argument('--out', default=None, help='also write the rows as json')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.utils.config import read_config
    cfg = read_config(args.config, args.cfg_options)  # unknown --cfg-options keys are refused here
    import mmdet_custom.register  # noqa: F401  (registers the project's modules)
    from mmdet_custom.analysis.infer_bench import benchmark_inference, format_table
    from mmdet_custom.utils import dump_json_atomic
    rows = benchmark_inference(cfg, args.checkpoint, batch_sizes=args.batch_sizes,
                               num_warmup=args.num_warmup, num_iters=args.max_iter, split=args.split,
                               device=args.device)
    print(format_table(rows))
    if args.out:
        dump_json_atomic(rows, args.out, indent=2)
    return rows


if __name__ == '__main__':
    run_cli(main)
