"""Statistics of a COCO-format instance dataset: instances per class, objects per image, object sizes.

Written to ``out_dir``::

    instances_per_class.csv / .png   class, category_id, instances, images holding it, small/medium/large, median
                                     sqrt(area) in pixels
    objects_per_image.csv / .png     one row per image: image_id, file_name, objects, outlier (Tukey fences)
    box_sizes.csv / .png             one row per instance: ann_id, image_id, class, bbox w/h, area, sqrt(area), size
    summary.json                     totals, quartiles and fences of objects per image, small/medium/large counts

Crowd annotations (``iscrowd=1``) are left out of every count (COCOeval ignores them) and only totalled in the
summary. Object size follows COCOeval (Lin et al., Microsoft COCO, ECCV 2014; ``cocoeval.py`` area ranges): the
annotation's ``area`` (the mask area, or the box area when ``area`` is absent) with small < 32^2 <= medium < 96^2
<= large, in pixels of the image as stored in the json.
"""
import os
import os.path as osp
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from mmdet_custom.evaluation.functional.coco_eval import PROTOCOLS, size_band
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import dump_json_atomic, load_json, write_csv_atomic

from ._io import new_figure, save_figure

#: COCOeval's area thresholds (pixels^2) between small/medium and medium/large.
SMALL_AREA, MEDIUM_AREA = PROTOCOLS['coco'].area_ranges[2][0], PROTOCOLS['coco'].area_ranges[3][0]


def coco_size(area: float) -> str:
    """COCO size bucket of an object of ``area`` pixels^2: 'small' (< 32^2), 'medium' (< 96^2) or 'large'."""
    return size_band(area, 'coco')


def tukey_fences(values, k: float = 1.5):
    """Tukey's outlier fences ``(Q1 - k IQR, Q3 + k IQR)`` of ``values`` (linear-interpolated quartiles).

    Returns:
        tuple[float, float, float, float]: ``q1, q3, low_fence, high_fence``.
    """
    q1, q3 = np.percentile(np.asarray(values, dtype=float), [25, 75])
    iqr = q3 - q1
    return float(q1), float(q3), float(q1 - k * iqr), float(q3 + k * iqr)


class DatasetStatsError(UserError, ValueError):
    """An annotation file that :func:`dataset_stats` cannot count; the message names the file and field."""


def _load(ann_file: str) -> dict:
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    coco = load_json(ann_file, 'COCO annotation file')
    if not isinstance(coco, dict):
        raise DatasetStatsError(f'{ann_file}: expected a COCO json object, got {type(coco).__name__}')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            raise DatasetStatsError(f'{ann_file}: field "{key}" missing or not a list')
    for key, fields in (('images', ('id', )), ('categories', ('id', 'name'))):
        for i, item in enumerate(coco[key]):
            if not isinstance(item, dict) or any(f not in item for f in fields):
                raise DatasetStatsError(f'{ann_file}: {key}[{i}] lacks one of the fields {list(fields)}')
    return coco


def dataset_stats(ann_file: str, out_dir: str, outlier_k: float = 1.5, bins: int = 40) -> Dict:
    """Count instances per class, objects per image and object sizes of a COCO json; write CSVs and PNG plots.

    Args:
        ann_file (str): COCO instances json (``images``, ``annotations`` with ``image_id``, ``category_id``,
            ``bbox`` [x, y, w, h] and optionally ``area`` and ``iscrowd``; ``categories`` with ``id``, ``name``).
        out_dir (str): folder for the files listed in the module docstring (created if missing).
        outlier_k (float): an image is an outlier when its object count lies outside
            ``[Q1 - k IQR, Q3 + k IQR]``. Defaults to 1.5 (Tukey).
        bins (int): bins of the object-size histogram (log-spaced sqrt(area)). Defaults to 40.

    Returns:
        dict: the summary also written to ``summary.json``: ``images``, ``instances``, ``crowd_instances``,
        ``instances_per_class`` (name -> count), ``objects_per_image`` (``min``, ``median``, ``max``, ``q1``,
        ``q3``, ``low_fence``, ``high_fence``, ``outlier_images``), ``sizes`` (``small``, ``medium``, ``large``
        counts) and ``files`` (the paths written).

    Warns:
        UserWarning: when the json holds no image or no (non-crowd) instance: the files are written, but empty.

    Raises:
        FileNotFoundError: when ``ann_file`` does not exist.
        UserError: when ``ann_file`` is not valid json (line and column named).
        DatasetStatsError: (a ``ValueError``) when the json lacks ``images``/``annotations``/``categories``, or an
            annotation lacks ``bbox`` or names an ``image_id`` or ``category_id`` that the json does not list (the
            message names the file, the annotation id and the field).
    """
    coco = _load(ann_file)
    counts = _count(coco, ann_file)
    images, rows_box = coco['images'], counts.rows_box
    if not images or not rows_box:
        warnings.warn(f'{ann_file}: {len(images)} images and {len(rows_box)} (non-crowd) instances: the statistics '
                      f'are empty')
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    _write_instances_per_class(counts, len(images), out_dir, files)
    per_image = _write_objects_per_image(counts, images, outlier_k, out_dir, files)
    sizes = _write_box_sizes(rows_box, bins, out_dir, files)

    summary = dict(
        ann_file=osp.abspath(ann_file),
        images=len(images),
        instances=int(sum(counts.per_class.values())),
        crowd_instances=counts.crowd,
        instances_per_class={counts.cat_name[c['id']]: counts.per_class[c['id']] for c in counts.cats},
        objects_per_image=per_image,
        sizes={k: sizes[k] for k in ('small', 'medium', 'large')},
        files=files)
    files['summary_json'] = osp.join(out_dir, 'summary.json')
    dump_json_atomic(summary, files['summary_json'], indent=2)
    return summary


@dataclass
class _Counts:
    """What one pass over the annotations counts (non-crowd instances only, except ``crowd``)."""
    cats: List[dict]
    cat_name: Dict[int, str]
    rows_box: List[list] = field(default_factory=list)  # one box_sizes.csv row per instance
    per_image: Counter = field(default_factory=Counter)
    per_class: Counter = field(default_factory=Counter)
    per_class_images: Dict[int, set] = field(default_factory=dict)
    per_class_sizes: Dict[int, Counter] = field(default_factory=dict)
    per_class_sqrt: Dict[int, List[float]] = field(default_factory=dict)
    crowd: int = 0


def _count(coco: dict, ann_file: str) -> _Counts:
    """Check every annotation (raising :class:`DatasetStatsError` naming the file, the annotation and the field)
    and count instances per class, per image and per size."""
    cats = sorted(coco['categories'], key=lambda c: c['id'])
    cat_name = {c['id']: c['name'] for c in cats}
    image_ids = {img['id'] for img in coco['images']}
    counts = _Counts(cats, cat_name, per_class_images={c['id']: set() for c in cats},
                     per_class_sizes={c['id']: Counter() for c in cats}, per_class_sqrt={c['id']: [] for c in cats})
    for ann in coco['annotations']:
        aid = ann.get('id')
        for key in ('image_id', 'category_id', 'bbox'):
            if key not in ann:
                raise DatasetStatsError(f'{ann_file}: annotation {aid} has no "{key}"')
        if ann['category_id'] not in cat_name:
            raise DatasetStatsError(f'{ann_file}: annotation {aid}: category_id {ann["category_id"]} is not in '
                                    f'categories')
        if ann['image_id'] not in image_ids:
            raise DatasetStatsError(f'{ann_file}: annotation {aid}: image_id {ann["image_id"]} is not in images')
        bbox = ann['bbox']
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise DatasetStatsError(f'{ann_file}: annotation {aid}: bbox {bbox!r} is not [x, y, w, h]')
        if ann.get('iscrowd', 0):
            counts.crowd += 1
            continue
        cid = ann['category_id']
        w, h = float(ann['bbox'][2]), float(ann['bbox'][3])
        area = float(ann['area']) if 'area' in ann else w * h
        size = coco_size(area)
        counts.per_image[ann['image_id']] += 1
        counts.per_class[cid] += 1
        counts.per_class_images[cid].add(ann['image_id'])
        counts.per_class_sizes[cid][size] += 1
        counts.per_class_sqrt[cid].append(np.sqrt(area))
        counts.rows_box.append([aid, ann['image_id'], cat_name[cid], round(w, 2), round(h, 2), round(area, 2),
                                round(float(np.sqrt(area)), 3), size])
    return counts


def _write_instances_per_class(counts: _Counts, num_images: int, out_dir: str, files: Dict[str, str]) -> None:
    """instances_per_class.csv and .png."""
    cats, cat_name, per_class = counts.cats, counts.cat_name, counts.per_class
    files['instances_per_class_csv'] = osp.join(out_dir, 'instances_per_class.csv')
    write_csv_atomic(
        files['instances_per_class_csv'],
        ['class', 'category_id', 'instances', 'images', 'small', 'medium', 'large', 'median_sqrt_area'],
        [[cat_name[c['id']], c['id'], per_class[c['id']], len(counts.per_class_images[c['id']]),
          counts.per_class_sizes[c['id']]['small'], counts.per_class_sizes[c['id']]['medium'],
          counts.per_class_sizes[c['id']]['large'],
          round(float(np.median(counts.per_class_sqrt[c['id']])), 3) if counts.per_class_sqrt[c['id']] else '']
         for c in cats])
    # many categories (e.g. COCO's 80): plot only those present
    shown = [c for c in cats if per_class[c['id']]] if len(cats) > 30 else cats
    fig, axes = new_figure(figsize=(min(max(6, 0.45 * len(shown) + 2), 30), 4.5))
    ax = axes[0, 0]
    names = [cat_name[c['id']] for c in shown]
    bar_counts = [per_class[c['id']] for c in shown]
    bars = ax.bar(range(len(shown)), bar_counts, color='tab:blue')
    ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(len(shown)), names, rotation=60, ha='right', fontsize=8)
    ax.set_ylabel('instances')
    ax.set_title(f'Instances per class ({sum(per_class.values())} in {num_images} images)')
    if any(bar_counts):
        ax.set_yscale('symlog', linthresh=10)
    files['instances_per_class_png'] = osp.join(out_dir, 'instances_per_class.png')
    save_figure(fig, files['instances_per_class_png'])


def _write_objects_per_image(counts: _Counts, images: List[dict], outlier_k: float, out_dir: str,
                             files: Dict[str, str]) -> Dict:
    """objects_per_image.csv and .png (outliers by Tukey's fences); returns the summary's ``objects_per_image``."""
    n_obj = np.array([counts.per_image[img['id']] for img in images], dtype=int)
    q1, q3, low, high = tukey_fences(n_obj, outlier_k) if len(n_obj) else (0., 0., 0., 0.)
    outlier = (n_obj < low) | (n_obj > high)
    files['objects_per_image_csv'] = osp.join(out_dir, 'objects_per_image.csv')
    write_csv_atomic(files['objects_per_image_csv'], ['image_id', 'file_name', 'objects', 'outlier'],
                     [[img['id'], img.get('file_name', ''), int(n), int(o)]
                      for img, n, o in zip(images, n_obj, outlier)])
    fig, axes = new_figure()
    ax = axes[0, 0]
    if len(n_obj):
        top = int(n_obj.max())
        edges = np.arange(top + 2) - 0.5 if top < 60 else np.linspace(-0.5, top + 0.5, 61)
        inlier_hist, _ = np.histogram(n_obj[~outlier], bins=edges)
        outlier_hist, _ = np.histogram(n_obj[outlier], bins=edges)
        centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        ax.bar(centres, inlier_hist, width=widths, color='tab:blue', label='images')
        if outlier.any():
            ax.bar(centres, outlier_hist, width=widths, bottom=inlier_hist, color='tab:red',
                   label=f'outlier images ({int(outlier.sum())})')
        ax.axvline(high, color='tab:red', ls='--', lw=1, label=f'Q3 + {outlier_k:g} IQR = {high:.1f}')
        ax.legend()
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel('objects per image')
    ax.set_ylabel('images')
    ax.set_title(f'Objects per image (median {np.median(n_obj) if len(n_obj) else 0:g}, Q1 {q1:g}, Q3 {q3:g})')
    files['objects_per_image_png'] = osp.join(out_dir, 'objects_per_image.png')
    save_figure(fig, files['objects_per_image_png'])
    return dict(min=int(n_obj.min()) if len(n_obj) else 0, median=float(np.median(n_obj)) if len(n_obj) else 0.,
                max=int(n_obj.max()) if len(n_obj) else 0, q1=q1, q3=q3, low_fence=low, high_fence=high,
                outlier_images=int(outlier.sum()))


def _write_box_sizes(rows_box: List[list], bins: int, out_dir: str, files: Dict[str, str]) -> Counter:
    """box_sizes.csv and .png (log-spaced histogram of sqrt(area)); returns the count per size band."""
    files['box_sizes_csv'] = osp.join(out_dir, 'box_sizes.csv')
    write_csv_atomic(files['box_sizes_csv'],
                     ['ann_id', 'image_id', 'class', 'bbox_w', 'bbox_h', 'area', 'sqrt_area', 'size'], rows_box)
    sqrt_area = np.array([r[6] for r in rows_box], dtype=float)
    sizes = Counter(r[7] for r in rows_box)
    fig, axes = new_figure()
    ax = axes[0, 0]
    if len(sqrt_area):
        lo, hi = max(sqrt_area.min(), 1.0), max(sqrt_area.max(), 2.0)
        ax.hist(sqrt_area, bins=np.geomspace(lo * 0.99, hi * 1.01, bins), color='tab:blue')
        ax.set_xscale('log')
    for thr, name in ((SMALL_AREA**0.5, 'small | medium'), (MEDIUM_AREA**0.5, 'medium | large')):
        ax.axvline(thr, color='tab:red', ls='--', lw=1)
        ax.text(thr, 0.98, f' {name}', color='tab:red', rotation=90, va='top', fontsize=8,
                transform=ax.get_xaxis_transform())
    ax.set_xlabel('sqrt(area) [pixels]')
    ax.set_ylabel('instances')
    ax.set_title(f'Object size: small {sizes["small"]}, medium {sizes["medium"]}, large {sizes["large"]}')
    files['box_sizes_png'] = osp.join(out_dir, 'box_sizes.png')
    save_figure(fig, files['box_sizes_png'])
    return sizes


def format_stats(summary: Dict, top: Optional[int] = None) -> str:
    """A readable text table of :func:`dataset_stats`'s summary (classes with instances by count, ``top`` of them)."""
    s = summary
    opi = s['objects_per_image']
    lines = [f'{s["images"]} images, {s["instances"]} instances ({s["crowd_instances"]} crowd left out)',
             f'objects per image: min {opi["min"]}, Q1 {opi["q1"]:g}, median {opi["median"]:g}, Q3 {opi["q3"]:g}, '
             f'max {opi["max"]}; {opi["outlier_images"]} outlier images (> {opi["high_fence"]:.1f} or '
             f'< {opi["low_fence"]:.1f})',
             'sizes: ' + ', '.join(f'{k} {v}' for k, v in s['sizes'].items())]
    ranked = sorted(((n, c) for n, c in s['instances_per_class'].items() if c), key=lambda kv: -kv[1])[:top]
    lines += [f'    {name:<20s} {count}' for name, count in ranked]
    empty = sum(not c for c in s['instances_per_class'].values())
    if empty:
        lines.append(f'    ({empty} classes without instances)')
    return '\n'.join(lines)
