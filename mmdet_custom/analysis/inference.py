"""Build a detector and a dataset from a config and run it image by image: the common ground of the analysis tools.

Unlike :func:`mmdet.apis.init_detector`, a missing checkpoint means *random weights* (PyTorch's default
initialisation; ``init_cfg`` such as ImageNet ``Pretrained`` is not applied, so nothing is downloaded), and the class
names come from the dataset of the config rather than from COCO.
"""
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

SPLITS = ('train', 'val', 'test')


def load_cfg(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    """Read ``config`` (path or :class:`Config`, copied) and merge ``cfg_options``; set the default scope."""
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def build_dataset(cfg: Config, split: str = 'test'):
    """Build the dataset of ``cfg.<split>_dataloader`` (its own pipeline: ``val``/``test`` use the test pipeline).

    Raises:
        ValueError: when ``split`` is not one of ``train``, ``val``, ``test`` or the config has no such loader.
    """
    from mmdet.registry import DATASETS
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise ValueError(f'the config has no {split}_dataloader')
    return DATASETS.build(loader.dataset)


def build_detector(cfg: Config,
                   checkpoint: Optional[str] = None,
                   device: Optional[str] = None,
                   dataset_meta: Optional[dict] = None) -> torch.nn.Module:
    """Build ``cfg.model`` in eval mode on ``device``, load ``checkpoint`` if given, set ``dataset_meta``.

    Args:
        cfg (Config): a config (see :func:`load_cfg`).
        checkpoint (str, optional): weights to load (``weights_only`` loading, see :mod:`mmdet_custom.checkpoint`).
            None keeps random weights.
        device (str, optional): 'cpu', 'cuda', 'cuda:1'... Defaults to :func:`default_device`.
        dataset_meta (dict, optional): ``classes`` and ``palette``; else the checkpoint's meta, else none.
    """
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        ckpt = load_checkpoint(model, checkpoint, map_location='cpu')
        dataset_meta = dataset_meta or ckpt.get('meta', {}).get('dataset_meta')
    model.cfg = cfg
    model.dataset_meta = dataset_meta or {}
    return model.to(device or default_device()).eval()


def select_indices(dataset, num_images: Optional[int] = None, indices: Optional[Sequence[int]] = None) -> List[int]:
    """``indices`` if given (checked), else the first ``num_images`` of the dataset (all when None).

    Raises:
        IndexError: when an index is outside the dataset.
    """
    n = len(dataset)
    if indices is not None:
        for i in indices:
            if not -n <= i < n:
                raise IndexError(f'image index {i} outside the dataset of {n} images')
        return [i % n for i in indices]
    return list(range(n if num_images is None else min(num_images, n)))


def predict(model: torch.nn.Module,
            dataset,
            indices: Sequence[int],
            batch_size: int = 1) -> Iterator[Tuple[int, object]]:
    """Run ``model.test_step`` on ``dataset[i]`` for each index; yield ``(index, DetDataSample)``.

    The data samples hold ``pred_instances`` in original-image pixels (``bboxes`` (N, 4) xyxy, ``scores``,
    ``labels``, ``masks`` (N, H, W) bool) and, when the pipeline loads annotations after ``Resize`` (mmdet's test
    pipelines do), ``gt_instances`` in original-image pixels too.
    """
    indices = list(indices)
    with torch.no_grad():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            outputs = model.test_step(pseudo_collate([dataset[i] for i in chunk]))
            for i, sample in zip(chunk, outputs):
                yield i, sample.cpu()
