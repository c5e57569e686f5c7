"""Helpers on dataset configs (no torch)."""
from typing import Any, Mapping

__all__ = ['innermost_dataset_cfg']


def innermost_dataset_cfg(dataset_cfg: Any) -> Any:
    """The dataset config inside mmengine's dataset wrappers (``RepeatDataset``, ``ClassBalancedDataset``,
    ``MultiImageMixDataset``, ...: any config holding a ``dataset`` key), the config itself when unwrapped.

    ``ConcatDataset`` (``datasets``, a list) is not unwrapped. The pipeline of a test split is read with
    :func:`mmdet.utils.get_test_pipeline_cfg`.

    Args:
        dataset_cfg (Mapping): a dataset config (e.g. ``cfg.train_dataloader.dataset``).

    Returns:
        the innermost config, the same object (not a copy), so that editing it edits ``dataset_cfg``.

    Example:
        >>> innermost_dataset_cfg(dict(type='RepeatDataset', times=2, dataset=dict(type='CocoDataset')))
        {'type': 'CocoDataset'}
    """
    while isinstance(dataset_cfg, Mapping) and 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg
