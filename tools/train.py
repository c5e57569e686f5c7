"""Train a detector: ``python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] ...``.

The flags are mmdet 3.3's; the logic lives in :func:`mmdet_custom.apis.train`. Before the first iteration the run
checks its ``--cfg-options`` keys (``+key=value`` adds a new key on purpose), hook settings, the class count, the
RPN anchors' recall on the training boxes (``--anchor-check``), and every train/val image (exists, readable
header); a mistake prints one ``error:`` line and exits with code 2 (``--debug`` shows the traceback).
``--data-root DIR`` points every dataset and evaluator at one data folder.

SIGTERM or SIGINT (Ctrl-C; under ``tools/dist_train.sh`` on every rank) finishes the current iteration, saves
``iter_N.pth`` and ``last_checkpoint`` and exits with code 75 (``EX_TEMPFAIL``: rerun with ``--resume auto``); in a
single-process run a second Ctrl-C interrupts at once (exit 130).
"""
import argparse
import sys

from mmdet_custom.engine.hooks.preemption_hook import PREEMPTED_EXIT, preempted_by
from mmdet_custom.utils.cli import add_cfg_options, add_data_root, add_launcher, parse_with_launcher, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a detector (mmdet_custom)',
        epilog=f'SIGTERM / SIGINT: the current iteration is finished, a checkpoint and last_checkpoint are saved and '
        f'the run exits with code {PREEMPTED_EXIT}; rerun the same command with --resume auto to continue.')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False, help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const=True,
        help='CKPT: resume from that checkpoint; no value: from the checkpoint named in the work dir\'s '
        'last_checkpoint (found in the work dir when it was moved), an error when there is none; "auto": from the '
        'newest complete checkpoint in the work dir, or from iteration 0 when there is none (the same command '
        'for the first run and every rerun after a preemption)')
    parser.add_argument('--no-image-check', action='store_true',
                        help='skip the check of every train/val image (exists, readable header) at start')
    parser.add_argument('--anchor-check', choices=['refuse', 'warn', 'off'], default=None,
                        help='before training, the exact recall of the RPN anchors on the training boxes at the '
                        'assigner\'s pos_iou_thr: refuse (default, or the config\'s anchor_check) stops when it is '
                        'below 0.1 (the RPN would see no positive), warn only warns, off skips it')
    add_data_root(parser)
    add_cfg_options(parser)
    add_launcher(parser)
    return parse_with_launcher(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.apis import train
    runner = train(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options, resume=args.resume,
                   amp=args.amp, auto_scale_lr=args.auto_scale_lr, launcher=args.launcher,
                   check_image_files=not args.no_image_check, data_root=args.data_root,
                   anchor_check=args.anchor_check)
    signal_name = preempted_by(runner)
    if signal_name:
        print(f'{signal_name}: stopped after iteration {runner.iter}; rerun with --resume auto to continue',
              file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)
    return runner


if __name__ == '__main__':
    run_cli(main)
