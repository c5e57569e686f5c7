"""Command-line pieces shared by ``tools/*.py`` (mmdet's flag names and help texts)."""
import argparse

from mmengine.config import DictAction


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    """Add mmdet's ``--cfg-options key=value ...`` (merged into the config with ``Config.merge_from_dict``)."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will be merged into '
        'config file.')
