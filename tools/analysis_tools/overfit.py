"""Overfit check: train on K images until their mask AP50 reaches a target, evaluating every M iterations.

``python tools/analysis_tools/overfit.py CONFIG --work-dir DIR [--num-images 1] [--img-ids 3] [--target-ap50 0.5]
[--val-interval 20] [--max-iters 300] [--lr 0.02]``. Prints AP50 by iteration and saves the ground truth vs
prediction figure of each image under ``DIR/vis``; see :mod:`mmdet_custom.analysis.overfit`.
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Overfit a detector on a few training images')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', required=True, help='the dir to save logs, history and figures')
    parser.add_argument('--num-images', type=int, default=1, help='the first K training images with instances')
    parser.add_argument('--img-ids', type=int, nargs='+', default=None, help='image ids to use instead')
    parser.add_argument('--target-ap50', type=float, default=0.5, help='stop when the metric reaches it')
    parser.add_argument('--metric', default='segm_mAP_50', help='CocoMetric key without "coco/"')
    parser.add_argument('--val-interval', type=int, default=20, help='iterations between evaluations')
    parser.add_argument('--max-iters', type=int, default=300, help='iteration cap')
    parser.add_argument('--lr', type=float, default=None, help="learning rate (default: the config's)")
    parser.add_argument('--warmup-iters', type=int, default=None, help='linear warm-up iterations')
    parser.add_argument('--show-score-thr', type=float, default=0.3, help='score threshold of the figure')
    parser.add_argument('--max-time', type=float, default=None, help='wall-clock cap on training, in seconds')
    parser.add_argument('--save-checkpoint', action='store_true', help='save the final weights')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.utils.config import read_config
    cfg = read_config(args.config, args.cfg_options)  # unknown --cfg-options keys are refused here
    import mmdet_custom.register  # noqa: F401  (registers the project's modules)
    from mmdet_custom.analysis.overfit import format_history, overfit
    result = overfit(cfg, args.work_dir, num_images=args.num_images, img_ids=args.img_ids,
                     target_ap50=args.target_ap50, metric=args.metric, val_interval=args.val_interval,
                     max_iters=args.max_iters, lr=args.lr, warmup_iters=args.warmup_iters,
                     show_score_thr=args.show_score_thr, max_time_s=args.max_time,
                     save_checkpoint=args.save_checkpoint, seed=args.seed)
    print(format_history(result))
    print(f'figures: {", ".join(result["figures"])}')
    return result


if __name__ == '__main__':
    run_cli(main)
