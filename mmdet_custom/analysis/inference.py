"""Build a detector and a dataset from a config and run it image by image: the common ground of the analysis tools.

Models are built by :func:`mmdet_custom.models.builder.build_model`: unlike :func:`mmdet.apis.init_detector`, a
missing checkpoint means *random weights* (PyTorch's default initialisation; ``init_cfg`` such as ImageNet
``Pretrained`` is not applied, so nothing is downloaded), and the class names come from the dataset of the config
rather than from COCO.
"""
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from mmdet_custom.models.builder import build_model, default_device  # noqa: F401  (re-exported)
from mmdet_custom.utils.config import read_config
from mmdet_custom.utils.errors import UserError

SPLITS = ('train', 'val', 'test')


class AnalysisInputError(UserError, ValueError):
    """A split the config does not have, or one that is not train / val / test."""


class ImageIndexError(UserError, IndexError):
    """An image index outside the dataset (``--indices``)."""

    __str__ = UserError.__str__  # the message as written, not IndexError's repr


def load_cfg(config: Union[str, Config], cfg_options: Optional[dict] = None) -> Config:
    """Read ``config`` (path or :class:`Config`, copied) with :func:`mmdet_custom.utils.config.read_config` (unknown
    ``cfg_options`` keys refused) and set its default scope."""
    cfg = read_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


def build_dataset(cfg: Config, split: str = 'test'):
    """Build the dataset of ``cfg.<split>_dataloader`` (its own pipeline: ``val``/``test`` use the test pipeline).

    Raises:
        AnalysisInputError: (a ``ValueError``) when ``split`` is not one of ``train``, ``val``, ``test`` or the
            config has no such loader (the message names the config file).
    """
    from mmdet.registry import DATASETS
    if split not in SPLITS:
        raise AnalysisInputError(f'--split must be one of {", ".join(SPLITS)}, got {split!r}')
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise AnalysisInputError(f'{cfg.filename or "the config"} has no {split}_dataloader: choose another --split')
    return DATASETS.build(loader.dataset)


# the one model-build path (random init unless a checkpoint is given): mmdet_custom.models.builder.build_model;
# kept under this name for the callers that import it from here (scene inference)
build_detector = build_model


def select_indices(dataset, num_images: Optional[int] = None, indices: Optional[Sequence[int]] = None) -> List[int]:
    """``indices`` if given (checked), else the first ``num_images`` of the dataset (all when None).

    Raises:
        ImageIndexError: (an ``IndexError``) when an index is outside the dataset (the message names its
            annotation file).
    """
    n = len(dataset)
    if indices is not None:
        for i in indices:
            if not -n <= i < n:
                ann = getattr(dataset, 'ann_file', None)
                raise ImageIndexError(f'--indices {i} is outside the dataset of {n} images'
                                      + (f' ({ann})' if ann else ''))
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
