"""Command-line pieces shared by ``tools/*.py`` (mmdet's flag names and help texts)."""
import argparse
import os

from mmengine.config import DictAction


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    """Add mmdet's ``--cfg-options key=value ...`` (merged into the config with ``Config.merge_from_dict``)."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will be merged into '
        'config file.')


def add_launcher(parser: argparse.ArgumentParser) -> None:
    """Add mmdet's ``--launcher`` and ``--local-rank`` (the latter is passed by ``torch.distributed.launch``)."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_with_launcher(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` and export ``LOCAL_RANK`` from ``--local-rank`` unless the launcher already set it."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args
