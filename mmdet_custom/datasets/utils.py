"""Helpers on dataset configs (no torch)."""
import os.path as osp
from typing import Any, List, Mapping, Optional, Tuple

from mmdet_custom.utils.errors import UserError

__all__ = ['DATA_SPLITS', 'DataRootError', 'innermost_dataset_cfg', 'leaf_dataset_cfgs', 'set_data_root']


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


def leaf_dataset_cfgs(dataset_cfg: Any) -> List[Any]:
    """Every dataset config inside mmengine's wrappers: those of a ``ConcatDataset`` (``datasets``) too, each
    unwrapped with :func:`innermost_dataset_cfg`; the same objects (not copies).

    Example:
        >>> leaf_dataset_cfgs(dict(type='ConcatDataset', datasets=[
        ...     dict(type='RepeatDataset', dataset=dict(type='A')), dict(type='B')]))
        [{'type': 'A'}, {'type': 'B'}]
    """
    dataset_cfg = innermost_dataset_cfg(dataset_cfg)
    if isinstance(dataset_cfg, Mapping) and 'datasets' in dataset_cfg:
        return [leaf for sub in dataset_cfg['datasets'] for leaf in leaf_dataset_cfgs(sub)]
    return [dataset_cfg] if isinstance(dataset_cfg, Mapping) else []


class DataRootError(UserError, ValueError):
    """``--data-root`` that is no folder, or given together with ``--cfg-options`` that set the same paths."""


#: The dataloaders whose datasets ``--data-root`` moves, and the evaluator of each split that has one.
DATA_SPLITS = (('train_dataloader', None), ('val_dataloader', 'val_evaluator'), ('test_dataloader', 'test_evaluator'))


def _evaluator_metrics(key: str, evaluator: Any) -> List[Tuple[str, Any]]:
    """``(dotted key, metric config)`` of an evaluator config: one metric, a list, or ``dict(metrics=...)``."""
    if isinstance(evaluator, Mapping) and 'metrics' in evaluator:  # mmengine's Evaluator(metrics=[...]) form
        key, evaluator = f'{key}.metrics', evaluator['metrics']
    if isinstance(evaluator, (list, tuple)):
        return [(f'{key}.{i}', m) for i, m in enumerate(evaluator)]
    return [(key, evaluator)]


def set_data_root(cfg: Any, data_root: str, cfg_options: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Point every dataset and evaluator of ``cfg`` at the data in ``data_root`` (``--data-root``), in place.

    mmdet configs name the data folder in several places that do not follow each other: the ``data_root`` of the
    train, val and test datasets, and the ``ann_file`` of the val and test evaluators (a full path, which
    ``data_root`` does not change). Forgetting one evaluator made the evaluation read another dataset's json and
    fail only after inference. Here every dataset of the three dataloaders (inside wrappers, each of a
    ``ConcatDataset``) gets ``data_root``, and each val / test evaluator that reads a json (an ``ann_file`` key)
    gets its dataset's json, ``data_root / <dataset ann_file>``; the top-level ``data_root`` variable too.
    Applied after ``--cfg-options``, so that an ``ann_file`` given for a dataset there is followed by its
    evaluator.

    Args:
        cfg (Config): the config, changed in place.
        data_root (str): the folder holding the converted data (e.g. ``data/isaid/``, the converter's output).
        cfg_options (Mapping, optional): the run's ``--cfg-options``; one that sets a ``data_root`` or an
            evaluator's ``ann_file`` contradicts ``--data-root`` and is refused.

    Returns:
        list[str]: ``key=value`` of every setting made, for the log.

    Raises:
        DataRootError: ``data_root`` is not a folder, or ``cfg_options`` set the same paths.

    Example:
        >>> cfg = dict(train_dataloader=dict(dataset=dict(data_root='data/a/', ann_file='ann/train.json')),
        ...            val_dataloader=dict(dataset=dict(data_root='data/a/', ann_file='ann/val.json')),
        ...            val_evaluator=dict(type='CocoMetric', ann_file='data/a/ann/val.json'))
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = set_data_root(cfg, root)
        >>> cfg['val_evaluator']['ann_file'] == osp.join(root, 'ann/val.json')
        True
    """
    clash = sorted(k for k in (cfg_options or {}) if k.lstrip('+').split('.')[-1] == 'data_root' or (
        k.lstrip('+').split('.')[0].endswith('_evaluator') and k.split('.')[-1] == 'ann_file'))
    if clash:
        raise DataRootError(f'--data-root {data_root} sets every dataset\'s data_root and evaluator\'s ann_file; '
                            f'--cfg-options {", ".join(clash)} sets them too. Give one of the two.')
    if not osp.isdir(data_root):
        raise DataRootError(f'--data-root {data_root}: no such folder (the converter\'s output folder, e.g. '
                            f'data/isaid/, which holds annotations/ and <split>/images/)')
    done = []
    if 'data_root' in cfg:
        cfg['data_root'] = data_root
    for loader_key, evaluator_key in DATA_SPLITS:
        loader = cfg.get(loader_key) or {}
        leaves = leaf_dataset_cfgs(loader.get('dataset')) if isinstance(loader, Mapping) else []
        for i, leaf in enumerate(leaves):
            leaf['data_root'] = data_root
            done.append(f'{loader_key}.dataset{"" if len(leaves) == 1 else f"[{i}]"}.data_root={data_root}')
        if evaluator_key is None or not leaves or not leaves[0].get('ann_file'):
            continue
        ann_file = osp.join(data_root, leaves[0]['ann_file'])
        for key, metric in _evaluator_metrics(evaluator_key, cfg.get(evaluator_key)):
            if isinstance(metric, Mapping) and metric.get('ann_file'):
                metric['ann_file'] = ann_file
                done.append(f'{key}.ann_file={ann_file}')
    return done
