"""Train a detector: ``python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] ...``.

The flags are mmdet 3.3's; the logic lives in :func:`mmdet_custom.apis.train`.
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, add_launcher, parse_with_launcher


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector (mmdet_custom)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False, help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='If specify checkpoint path, resume from it, while if not specify, try to auto resume from the latest '
        'checkpoint in the work directory.')
    add_cfg_options(parser)
    add_launcher(parser)
    return parse_with_launcher(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.apis import train
    train(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options, resume=args.resume, amp=args.amp,
          auto_scale_lr=args.auto_scale_lr, launcher=args.launcher)


if __name__ == '__main__':
    main()
