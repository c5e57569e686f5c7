"""Data and configs shared by the scale-out / recipe-tool tests (dist_train, hpo, lr_find, ValLossHook)."""
from pathlib import Path

from helpers import REPO_ROOT  # noqa: F401  (re-exported to test_lr_find, test_distributed, test_hpo)


def make_smoke_patches(root: Path, train: int = 2, val: int = 1, size: int = 128, seed: int = 0) -> Path:
    """The generated smoke dataset (``mmdet_custom/converters/smoke.py``) converted to COCO patches under
    ``root/patches`` (one window per image); returns that folder."""
    from mmdet_custom.converters.isaid import convert_isaid
    from mmdet_custom.converters.smoke import generate_smoke_dataset
    generate_smoke_dataset(str(root / 'raw'), {'train': train, 'val': val}, size=size, seed=seed)
    convert_isaid(str(root / 'raw'), str(root / 'patches'), splits=('train', 'val'), patch_size=size, overlap=0,
                  max_empty_fraction=1.0, show_progress=False)
    return root / 'patches'


def shared_smoke_patches(tmp_path_factory, train: int = 2, val: int = 1) -> Path:
    """:func:`make_smoke_patches` once per pytest session (in its base temp folder), shared by the test modules."""
    root = tmp_path_factory.getbasetemp() / f'recipe_tools_smoke_{train}_{val}'
    if not (root / 'patches' / 'annotations' / 'instances_val.json').is_file():
        make_smoke_patches(root, train=train, val=val)
    return root / 'patches'


def tiny_cfg(data_root: Path, work_dir: Path, scale=(128, 128), max_iters: int = 2, val_interval: int = 2):
    """:func:`helpers.tiny_isaid_cfg` (ResNet-18 smoke model, 2 iterations) with the given loop length."""
    from helpers import tiny_isaid_cfg
    from mmengine.config import ConfigDict
    cfg = tiny_isaid_cfg(data_root, work_dir, scale=scale)
    cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
    cfg.default_hooks.checkpoint.interval = max_iters
    return cfg
