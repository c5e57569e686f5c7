"""Inference speed and peak memory of a detector at several batch sizes.

What is timed: ``model.test_step`` on a ready batch, i.e. normalisation and padding (data preprocessor), the forward
pass and the post-processing (NMS, mask pasting at the original size); image decoding and the data pipeline are done
once beforehand and not timed. On CUDA the device is synchronised around every step.

Peak memory:

- CUDA: ``torch.cuda.max_memory_allocated`` over the warm-up and timed steps of that batch size (reset before it);
  tensors only, not the caching allocator's reserve.
- CPU: the growth of the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over
  the resident size just before the first batch size was run (model and batches already loaded). The peak of a
  process can only grow, so batch sizes run in increasing order and each figure is the peak up to and including
  that batch size - the peak of that batch size when memory grows with the batch, as it does for detectors.
"""
import os
import resource
import sys
import time
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from mmdet_custom.models.builder import build_model
from mmdet_custom.utils.tables import plain_table

from .inference import build_dataset, load_cfg

_MIB = 2**20


def _rss_bytes() -> int:
    """Current resident set size (Linux ``/proc/self/statm``), else the peak so far (``ru_maxrss``)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024  # bytes on macOS, KiB on Linux


def benchmark_inference(config: Union[str, Config],
                        checkpoint: Optional[str] = None,
                        batch_sizes: Sequence[int] = (1, 2, 4),
                        num_warmup: int = 2,
                        num_iters: int = 5,
                        split: str = 'test',
                        cfg_options: Optional[dict] = None,
                        device: Optional[str] = None) -> List[Dict]:
    """Time ``model.test_step`` on batches of the config's ``split`` images and record the peak memory.

    The first ``max(batch_sizes)`` images of the split are loaded once (cycled when the split is smaller); a batch
    of size ``b`` is the first ``b`` of them.

    Args:
        config (str | Config): detector config.
        checkpoint (str, optional): weights; None times random weights (the speed is the same up to the number of
            detections kept, which affects the post-processing).
        batch_sizes (Sequence[int]): batch sizes, run in increasing order. Defaults to (1, 2, 4).
        num_warmup (int): untimed steps before timing each batch size. Defaults to 2.
        num_iters (int): timed steps per batch size. Defaults to 5.
        split (str): dataloader of the config whose images are used. Defaults to 'test'.
        cfg_options (dict, optional): overrides merged into the config.
        device (str, optional): defaults to 'cuda' when available, else 'cpu'.

    Returns:
        list[dict]: one row per batch size: ``batch_size``, ``iters``, ``ms_per_img``, ``img_per_s``,
        ``peak_mem_mib`` and ``mem_kind`` ('cuda max_memory_allocated' or 'cpu peak RSS growth'), ``device``.

    Raises:
        ValueError: when a batch size or ``num_iters`` is < 1, ``num_warmup`` < 0, or the split is empty.
    """
    batch_sizes = sorted(set(int(b) for b in batch_sizes))
    if not batch_sizes or batch_sizes[0] < 1 or num_iters < 1 or num_warmup < 0:
        raise ValueError(f'need batch sizes >= 1, num_iters >= 1, num_warmup >= 0; got {batch_sizes}, '
                         f'{num_iters}, {num_warmup}')
    cfg = load_cfg(config, cfg_options)
    dataset = build_dataset(cfg, split)
    if len(dataset) == 0:
        raise ValueError(f'the {split} dataset of the config is empty')
    model = build_model(cfg, checkpoint, device, dataset.metainfo)
    dev = next(model.parameters()).device
    cuda = dev.type == 'cuda'
    samples = [dataset[i % len(dataset)] for i in range(batch_sizes[-1])]

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    rows = []
    rss_base = _rss_bytes()
    with torch.no_grad():
        for bs in batch_sizes:
            batch = pseudo_collate(samples[:bs])
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            for _ in range(num_warmup):
                model.test_step(batch)
            sync()
            start = time.perf_counter()
            for _ in range(num_iters):
                model.test_step(batch)
            sync()
            elapsed = time.perf_counter() - start
            if cuda:
                peak, kind = torch.cuda.max_memory_allocated(dev), 'cuda max_memory_allocated'
            else:
                peak, kind = max(_peak_rss_bytes() - rss_base, 0), 'cpu peak RSS growth'
            rows.append(dict(batch_size=bs, iters=num_iters, ms_per_img=1000 * elapsed / (num_iters * bs),
                             img_per_s=num_iters * bs / elapsed, peak_mem_mib=peak / _MIB, mem_kind=kind,
                             device=str(dev)))
    return rows


def format_table(rows: Sequence[Dict]) -> str:
    """The rows of :func:`benchmark_inference` as a text table (terminaltables)."""
    body = [[str(r['batch_size']), str(r['iters']), f'{r["ms_per_img"]:.1f}', f'{r["img_per_s"]:.2f}',
             f'{r["peak_mem_mib"]:.1f}', f'{r["mem_kind"]} ({r["device"]})'] for r in rows]
    return plain_table([['batch', 'iters', 'ms/img', 'img/s', 'peak MiB', 'memory']] + body, right_columns=range(5))
