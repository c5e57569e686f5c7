"""Patch filters of the train split (ours, off by default: the devkit keeps every patch)."""
from typing import List, Optional, Tuple

import numpy as np


def filter_train(patches: List, max_boxes: Optional[int], max_empty_fraction: Optional[float],
                 seed: int) -> Tuple[List, int, int]:
    """Drop crowded patches, then keep at most ``max_empty_fraction`` of the kept patches empty (seeded).

    Args:
        patches (list): objects with an ``annotations`` list.
        max_boxes (int, optional): patches with more annotations are dropped; None keeps all.
        max_empty_fraction (float, optional): at most this fraction of the kept patches is empty, the empty ones
            kept chosen at random with ``seed``; None or 1 keeps all.
        seed (int): seed of the choice.

    Returns:
        tuple: ``(kept, dropped_crowded, dropped_empty)``; ``kept`` in the input order.
    """
    dropped_crowded = 0
    if max_boxes is not None:
        kept = [p for p in patches if len(p.annotations) <= max_boxes]
        dropped_crowded = len(patches) - len(kept)
        patches = kept
    empty = [i for i, p in enumerate(patches) if not p.annotations]
    num_full = len(patches) - len(empty)
    if max_empty_fraction is None or max_empty_fraction >= 1:
        keep_empty = len(empty)
    else:  # largest k with k <= f * (num_full + k)
        keep_empty = min(len(empty), int(np.floor(max_empty_fraction * num_full / (1 - max_empty_fraction) + 1e-9)))
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(empty, size=keep_empty, replace=False).tolist()) if keep_empty else set()
    dropped_empty = len(empty) - keep_empty
    kept = [p for i, p in enumerate(patches) if p.annotations or i in chosen]
    return kept, dropped_crowded, dropped_empty
