"""Ablation table of a config family: ``python tools/ablate.py CONFIG... (or globs) --iters N [--data DIR]
[--img-size S] [--work-dir DIR] [--out FILE.md] [--random-init] [--cfg-options ...]``.

Each config is trained for the same ``--iters`` iterations with the same seed on the same data, tested, and timed;
one table (markdown, and CSV beside it) gives per config: its parent (first ``_base_``), what it changes against the
parent (the differing keys of the two resolved configs, shortened), segm AP / AP50 / APs and box AP50 (the iSAID
protocol where the config's evaluator uses it), parameters and inference ms/image. The table is rewritten
atomically after each config, so a long run shows its progress. A config that fails gets its error in the table
and the others still run (exit status 1). A rerun of the same command keeps the rows that finished (same
resolved config, same settings) and runs the rest. Example: ``python tools/ablate.py 'configs/cbam/*.py' --iters 3000
--data data/isaid``. Logic: :mod:`mmdet_custom.apis.ablation`.
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train, test and tabulate a family of configs (ablation)')
    parser.add_argument('configs', nargs='+', metavar='CONFIG', help='config files or glob patterns')
    parser.add_argument('--iters', type=int, required=True, help='training iterations per config (same budget)')
    parser.add_argument('--work-dir', default='work_dirs/ablation', help='one sub-folder per config')
    parser.add_argument('--out', default=None, help='markdown table (CSV beside it); default WORK_DIR/ablation.md')
    parser.add_argument('--data', default=None,
                        help="converted iSAID patches or a raw devkit folder for every config (default: each "
                             "config's own data)")
    parser.add_argument('--img-size', type=int, default=None, help='square Resize scale of every pipeline')
    parser.add_argument('--batch-size', type=int, default=None, help='training batch size of every config')
    parser.add_argument('--workers', type=int, default=None, help='dataloader workers')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--infer-iters', type=int, default=3, help='timed inference steps per config')
    parser.add_argument('--random-init', action='store_true', help='no pretrained weights (offline)')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.apis.ablation import expand_configs, run_ablation
    expand_configs(args.configs)  # a pattern matching nothing is refused before anything is built
    rows, md, csv = run_ablation(args.configs, args.work_dir, args.iters, out=args.out, data=args.data,
                                 img_size=args.img_size, seed=args.seed, random_init=args.random_init,
                                 workers=args.workers, batch_size=args.batch_size, infer_iters=args.infer_iters,
                                 cfg_options=args.cfg_options)
    with open(md) as f:
        print(f.read())
    print(f'written: {md}, {csv}')
    failed = [r.config for r in rows if r.error]
    if failed:
        raise SystemExit(f'{len(failed)} config(s) failed: {", ".join(failed)} (errors in the table)')
    return rows


if __name__ == '__main__':
    run_cli(main)
