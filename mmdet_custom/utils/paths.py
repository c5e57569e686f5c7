"""Where the package finds its configs and the shared real data: one function each, installed or in a checkout.

The configs ship as package data under ``mmdet_custom/.mim/configs``, the layout mmdet uses for its own
(``mmdet/.mim/configs``): a wheel holds a copy of the repository's ``configs/``, a checkout (editable install) a link
to it. Nothing here climbs from the package to a repository root. Imports nothing beyond the standard library.
"""
import os
import os.path as osp

#: Environment variable naming the folder of the shared real data (``isaid_devkit``, ``cells``, ...).
SHARED_DATA_ENV = 'MMDET_CUSTOM_SHARED_DATA'
_PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))


def config_dir() -> str:
    """Absolute path of the folder of the shipped configs (``mmdet_custom/.mim/configs``).

    In a checkout it is a link to the repository's ``configs/`` (edits show at once); an installed wheel holds a
    copy. A config of one's own inherits a shipped one by its path (mmengine 0.10.7 resolves ``pkg::`` scopes only
    for OpenMMLab's packages): ``_base_ = '<config_path(...)>'``.
    """
    return osp.join(_PACKAGE_DIR, '.mim', 'configs')


def config_path(name: str) -> str:
    """Absolute path of a shipped config.

    Args:
        name (str): path relative to the configs folder, with or without a leading ``configs/``, e.g.
            ``'mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'`` or ``'configs/_base_/datasets/isaid_instance.py'``.

    Raises:
        FileNotFoundError: no such file among the shipped configs (the message names the folder searched).

    Example:
        >>> osp.basename(config_path('configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'))
        'mask-rcnn_r50_fpn_1x_isaid.py'
    """
    rel = name.replace('\\', '/')
    rel = rel[len('configs/'):] if rel.startswith('configs/') else rel
    path = osp.join(config_dir(), rel)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {name!r} is not among the shipped configs ({config_dir()})')
    return path


def shared_data_dir() -> str:
    """The folder of the shared real data (never in the repository): ``$MMDET_CUSTOM_SHARED_DATA`` when set, else
    ``../shared/data`` beside the checkout the package is used from (found through the configs link), else, for an
    installed package, ``../shared/data`` relative to the working folder. The folder may not exist: callers check
    and fall back (random data) or skip."""
    if os.environ.get(SHARED_DATA_ENV):
        return os.environ[SHARED_DATA_ENV]
    configs = config_dir()
    if osp.islink(configs):  # a checkout: <checkout>/configs
        return osp.join(osp.dirname(osp.dirname(osp.realpath(configs))), 'shared', 'data')
    return osp.abspath(osp.join(os.pardir, 'shared', 'data'))
