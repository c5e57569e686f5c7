"""Windows of a scene as a torch ``Dataset``: read (in DataLoader workers, overlapped with the model) and passed
through the config's own test pipeline, then batched for mmdet's ``test_step``."""
import copy
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope

from mmdet_custom.utils.config import is_annotation_loader
from mmdet_custom.utils.errors import UserError

from .memory import release_free_memory
from .reader import SceneReader


def build_window_pipeline(cfg) -> Compose:
    """The config's test pipeline fed from arrays: ``LoadImageFromFile`` becomes mmdet's ``LoadImageFromNDArray``
    (same options), annotation loading is dropped; resizing, normalisation and packing stay the config's, so a
    window is seen exactly as a patch of the same size in ``tools/test.py``.

    Args:
        cfg (Config): a detector config with ``test_dataloader.dataset.pipeline`` (or ``test_pipeline``).

    Raises:
        UserError: the config has no test pipeline or no image-loading transform in it.
    """
    loader = cfg.get('test_dataloader') or {}
    pipeline = copy.deepcopy((loader.get('dataset') or {}).get('pipeline') or cfg.get('test_pipeline'))
    if not pipeline:
        raise UserError('the config has neither test_dataloader.dataset.pipeline nor test_pipeline: whole-scene '
                        'inference reuses the test pipeline')
    pipeline = [t for t in pipeline if not is_annotation_loader(t)]
    loads = [i for i, t in enumerate(pipeline) if str(t.get('type', '')).split('.')[-1] == 'LoadImageFromFile']
    if not loads:
        raise UserError(f'the test pipeline has no LoadImageFromFile to feed windows through: '
                        f'{[t.get("type") for t in pipeline]}')
    pipeline[loads[0]]['type'] = 'mmdet.LoadImageFromNDArray'
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet')):
        return Compose(pipeline)


class WindowDataset(torch.utils.data.Dataset):
    """Item ``i``: window ``i`` of the scene, read and run through ``pipeline``; returns ``(i, packed)``.

    Args:
        reader (SceneReader): the scene.
        windows (np.ndarray): (K, 4) ``x0, y0, x1, y1``.
        pipeline (callable): turns ``dict(img=BGR uint8 (h, w, 3), img_id=i, img_path=None)`` into
            ``dict(inputs=..., data_samples=...)`` (see :func:`build_window_pipeline`).
    """

    def __init__(self, reader: SceneReader, windows: np.ndarray, pipeline):
        self.reader, self.windows, self.pipeline = reader, np.asarray(windows), pipeline

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> Tuple[int, dict]:
        if torch.utils.data.get_worker_info() is not None:  # a reading worker: the main process trims its own heap
            release_free_memory()
        image = self.reader.read(self.windows[i])
        return i, self.pipeline(dict(img=image, img_id=int(i), img_path=None))


def collate_windows(items: Sequence[Tuple[int, dict]]) -> Tuple[List[int], dict]:
    """Window indices and mmengine's ``pseudo_collate`` of their packed inputs (what ``test_step`` takes)."""
    return [i for i, _ in items], pseudo_collate([d for _, d in items])


def window_loader(dataset: WindowDataset, batch_size: int = 2, num_workers: int = 2,
                  prefetch_factor: Optional[int] = 2) -> torch.utils.data.DataLoader:
    """A DataLoader over the windows in order; ``num_workers`` processes read ahead while the model runs."""
    kwargs = dict(prefetch_factor=prefetch_factor) if num_workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       collate_fn=collate_windows, **kwargs)
