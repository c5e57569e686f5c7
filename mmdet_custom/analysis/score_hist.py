"""Histogram of the detection scores of a model on a dataset, with the raw scores as CSV and json.

The scores are those the model returns after its own test-time filtering (for Mask R-CNN:
``model.test_cfg.rcnn.score_thr``, NMS and ``max_per_img``), so the histogram starts at that threshold; lower it
with ``cfg_options={'model.test_cfg.rcnn.score_thr': 0.0}`` to see the whole distribution.

Written to ``out_dir``::

    scores.csv          one row per detection: image_id, file_name, label, class, score
    scores.json         {"classes": [...], "score_thr": ..., "detections": [{image_id, file_name, label, score}]}
    score_hist.png      histogram of all scores, plus one line per class (the ``top_classes`` most frequent)
"""
import os.path as osp
from collections import Counter
from typing import Dict, Optional, Sequence, Union

import numpy as np
from mmengine.config import Config

from mmdet_custom.models.builder import build_model
from mmdet_custom.utils.fileio import dump_json_atomic, write_csv_atomic

from ._io import new_figure, save_figure
from .inference import build_dataset, load_cfg, predict, select_indices


def _test_score_thr(cfg: Config) -> Optional[float]:
    test_cfg = cfg.model.get('test_cfg') or {}
    for stage in ('rcnn', 'rpn', None):
        node = test_cfg.get(stage) if stage else test_cfg
        if isinstance(node, dict) and 'score_thr' in node:
            return float(node['score_thr'])
    return None


def collect_scores(model, dataset, indices: Sequence[int], batch_size: int = 1) -> list:
    """Detections of ``model`` on ``dataset[i]`` for each index, as dicts ``image_id, file_name, label, score``."""
    rows = []
    for _, sample in predict(model, dataset, indices, batch_size):
        pred = sample.pred_instances
        name = osp.basename(sample.metainfo.get('img_path', ''))
        for label, score in zip(pred.labels.tolist(), pred.scores.tolist()):
            rows.append(dict(image_id=sample.metainfo.get('img_id'), file_name=name, label=int(label),
                             score=float(score)))
    return rows


def plot_score_histogram(rows: Sequence[dict], classes: Sequence[str], out_file: str, bins: int = 50,
                         score_thr: Optional[float] = None, top_classes: int = 5, title: str = '') -> None:
    """Histogram of ``rows``' scores on ``[0, 1]`` (log counts), the ``top_classes`` most frequent classes as lines.

    ``score_thr`` (the model's own test threshold) is marked with a dashed line.
    """
    scores = np.array([r['score'] for r in rows], dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    fig, axes = new_figure()
    ax = axes[0, 0]
    ax.hist(scores, bins=edges, color='tab:blue', alpha=0.6, label=f'all ({len(scores)})')
    centres = (edges[:-1] + edges[1:]) / 2
    for label, count in Counter(r['label'] for r in rows).most_common(top_classes):
        hist, _ = np.histogram([r['score'] for r in rows if r['label'] == label], bins=edges)
        name = classes[label] if label < len(classes) else f'class {label}'
        ax.step(centres, hist, where='mid', lw=1, label=f'{name} ({count})')
    if score_thr is not None:
        ax.axvline(score_thr, color='gray', ls='--', lw=1, label=f'test score_thr = {score_thr:g}')
    if len(scores):
        ax.set_yscale('log')
    ax.set_xlim(0, 1)
    ax.set(xlabel='score', ylabel='detections', title=title or 'Detection scores')
    ax.legend(fontsize=8)
    save_figure(fig, out_file)


def score_histogram(config: Union[str, Config],
                    checkpoint: Optional[str],
                    out_dir: str,
                    split: str = 'test',
                    num_images: Optional[int] = None,
                    bins: int = 50,
                    top_classes: int = 5,
                    cfg_options: Optional[dict] = None,
                    device: Optional[str] = None) -> Dict:
    """Run the model on the config's ``split`` and write the score histogram and the raw scores.

    Args:
        config (str | Config): model and dataset config.
        checkpoint (str, optional): weights; None scores with random weights.
        out_dir (str): output folder (files: see the module docstring).
        split (str): 'train', 'val' or 'test' dataloader of the config. Defaults to 'test'.
        num_images (int, optional): only the first images of the split; all when None.
        bins (int): histogram bins on [0, 1]. Defaults to 50.
        top_classes (int): classes drawn as their own lines. Defaults to 5.
        cfg_options (dict, optional): overrides merged into the config.
        device (str, optional): defaults to 'cuda' when available, else 'cpu'.

    Returns:
        dict: ``images``, ``detections``, ``score_thr`` (the model's test threshold, or None), ``mean_score``,
        ``per_class`` (name -> detections) and ``files`` (``csv``, ``json``, ``png``).
    """
    cfg = load_cfg(config, cfg_options)
    dataset = build_dataset(cfg, split)
    model = build_model(cfg, checkpoint, device, dataset.metainfo)
    indices = select_indices(dataset, num_images)
    rows = collect_scores(model, dataset, indices)
    classes = list(dataset.metainfo.get('classes', ()))
    name = lambda label: classes[label] if label < len(classes) else f'class {label}'  # noqa: E731
    score_thr = _test_score_thr(cfg)
    files = dict(csv=osp.join(out_dir, 'scores.csv'), json=osp.join(out_dir, 'scores.json'),
                 png=osp.join(out_dir, 'score_hist.png'))
    write_csv_atomic(files['csv'], ['image_id', 'file_name', 'label', 'class', 'score'],
                     [[r['image_id'], r['file_name'], r['label'], name(r['label']), f'{r["score"]:.6f}'] for r in rows])
    dump_json_atomic(dict(classes=classes, score_thr=score_thr, detections=rows), files['json'])
    plot_score_histogram(rows, classes, files['png'], bins, score_thr, top_classes,
                         title=f'Detection scores on {len(indices)} {split} images')
    per_class = Counter(name(r['label']) for r in rows)
    return dict(images=len(indices), detections=len(rows), score_thr=score_thr,
                mean_score=float(np.mean([r['score'] for r in rows])) if rows else None,
                per_class=dict(per_class.most_common()), files=files)
