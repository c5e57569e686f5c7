"""Evaluation time of 1000-detection results (``tools/benchmarks/bench_eval.py``, ``make bench-eval``): COCO
evaluation backends (pycocotools, faster-coco-eval) timed on the same synthetic worst-case results, interleaved, and
checked to give the same numbers.

Imports neither torch nor mmdet.
"""
import datetime
import importlib.metadata
import math
import os
import platform
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from mmdet_custom.evaluation.functional import evaluate_coco_reports, load_coco_gt
from mmdet_custom.utils.tables import plain_table

from .bench_report import fmt_value, median_of, spread_of
from .resources import cpu_model, load_average, usable_cores


def synthetic_coco_results(gt: Dict, per_image: int = 1000, copies: int = 8, seed: int = 0) -> List[Dict]:
    """COCO results with exactly ``per_image`` detections on every image of ``gt``, a detector's worst case.

    Per image: ``copies`` jittered copies of each ground-truth instance (polygons scaled by U(0.8, 1.2) per axis
    about the box centre and shifted by N(0, sigma) x its box size, sigma cycling over 0.02 / 0.05 / 0.1 / 0.2;
    10% of them relabelled to a random category), then random rotated rectangles (sides log-uniform in 2..600 px,
    so every iSAID size band gets detections) of random categories until ``per_image``. Scores are U(0, 1). Masks
    are compressed RLEs (``counts`` as str) on the image's size; each ``bbox`` is its mask's extent (xywh, px).

    Args:
        gt (dict): a COCO instances json (polygon segmentations), e.g. the devkit's ``instancesonly_filtered_val``.
        per_image (int): detections per image. Defaults to 1000 (the iSAID protocol's budget).
        copies (int): jittered copies per ground-truth instance (fewer when they would exceed ``per_image``).
        seed (int): NumPy seed; the same inputs give the same list.

    Returns:
        list[dict]: ``{image_id, category_id, score, bbox, segmentation}`` entries, image by image.
    """
    rng = np.random.default_rng(seed)
    cat_ids = [c['id'] for c in gt['categories']]
    by_image: Dict[int, list] = {}
    for ann in gt['annotations']:
        if isinstance(ann.get('segmentation'), list) and ann['segmentation']:
            by_image.setdefault(ann['image_id'], []).append(ann)
    sigmas = (0.02, 0.05, 0.1, 0.2)
    results = []
    for img in gt['images']:
        height, width = img['height'], img['width']
        anns = by_image.get(img['id'], [])
        polygons = []
        for k in range(min(copies * len(anns), per_image)):
            ann = anns[k % len(anns)]
            x, y, w, h = ann['bbox']
            centre = np.array([x + w / 2, y + h / 2])
            scale = rng.uniform(0.8, 1.2, 2)
            shift = rng.normal(0, sigmas[(k // len(anns)) % len(sigmas)], 2) * [w, h]
            polys = [((np.asarray(p, float).reshape(-1, 2) - centre) * scale + centre + shift).ravel().tolist()
                     for p in ann['segmentation']]
            cat = ann['category_id'] if rng.random() >= 0.1 else int(rng.choice(cat_ids))
            polygons.append((polys, cat))
        while len(polygons) < per_image:
            w, h = np.exp(rng.uniform(np.log(2), np.log(600), 2))
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            angle = rng.uniform(0, np.pi)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 @ rot.T + [cx, cy]
            polygons.append(([corners.ravel().tolist()], int(rng.choice(cat_ids))))
        for polys, cat in polygons:
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
            bbox = mask_utils.toBbox(rle).tolist()
            rle['counts'] = rle['counts'].decode()
            results.append(dict(image_id=img['id'], category_id=cat, score=float(rng.random()), bbox=bbox,
                                segmentation=rle))
    return results


def time_eval_backends(gt_file: str, results: Sequence[Dict], backends: Sequence[str] = ('pycocotools',
                                                                                         'faster-coco-eval'),
                       iou_types: Sequence[str] = ('segm', 'bbox'), protocol: str = 'isaid', repeats: int = 3,
                       classes: Optional[Sequence[str]] = None) -> Dict:
    """Time :func:`~mmdet_custom.evaluation.functional.evaluate_coco_reports` per backend and IoU type, interleaved.

    A run is one ``evaluate_coco_reports(coco_gt, results, [iou_type], protocol, backend=...)`` call: loading the
    results (``loadRes``), ``evaluate``, ``accumulate`` and reading the 12 summary numbers, i.e. what
    ``MaxDetsCocoMetric`` spends per IoU type after writing its results file. The ground truth is loaded fresh
    before each run, untimed (both backends write into its annotations). One untimed warm-up run per backend on 100
    results, then repeats interleave the backends. Wall time
    and process CPU time (all threads: faster-coco-eval computes mask IoUs on a thread pool) are recorded.

    Args:
        gt_file (str): ground-truth COCO json.
        results (Sequence[dict]): COCO results (e.g. :func:`synthetic_coco_results`).
        backends (Sequence[str]): backends to compare; the first is the reference of the ratios.
        iou_types (Sequence[str]): ``'segm'`` and/or ``'bbox'``.
        protocol (str): ``'isaid'`` (default) or ``'coco'``.
        repeats (int): runs per backend and IoU type.
        classes (Sequence[str], optional): class names (categories matched by name). Default: the json's.

    Returns:
        dict: ``rows`` (one per backend and IoU type: ``backend``, ``iou_type``, ``wall_s`` and ``cpu_s``
        (median over repeats), ``spread`` ((max - min) / median of wall time), ``ratio`` (the reference backend's
        median wall time over this one's: the speed-up), ``cpu_ratio``), ``differences`` (IoU type -> the largest
        absolute difference of any backend's 12 summary numbers and per-class APs from the reference's),
        ``identical`` (IoU type -> that difference <= 1e-12: the same numbers up to float rounding), ``stats``
        (backend -> IoU type -> summary numbers), ``detections``, ``images``, ``loads`` (1-minute load averages
        before and after), ``machine`` (CPU model, cores, versions) and ``date`` (UTC, YYYY-MM-DD).
    """
    iou_types = list(iou_types)
    times = {(b, t): [] for b in backends for t in iou_types}
    cpu = {(b, t): [] for b in backends for t in iou_types}
    reports = {}
    loads = [load_average()]
    for backend in backends:  # warm-up, untimed: imports, first-call allocations
        evaluate_coco_reports(load_coco_gt(gt_file, iou_types, what=gt_file), results[:100], iou_types[:1],
                              protocol, classes, gt_name=gt_file,
                              **({} if backend == 'pycocotools' else dict(backend=backend)))
    for _ in range(repeats):
        for iou_type in iou_types:
            for backend in backends:
                coco_gt = load_coco_gt(gt_file, iou_types, what=gt_file)
                kwargs = {} if backend == 'pycocotools' else dict(backend=backend)  # pycocotools: the default
                t0, c0 = time.perf_counter(), time.process_time()
                report = evaluate_coco_reports(coco_gt, results, [iou_type], protocol, classes, gt_name=gt_file,
                                               **kwargs)[0]
                times[backend, iou_type].append(time.perf_counter() - t0)
                cpu[backend, iou_type].append(time.process_time() - c0)
                reports[backend, iou_type] = report
    loads.append(load_average())
    ref = backends[0]
    rows = []
    for iou_type in iou_types:
        for backend in backends:
            wall, cpu_s = median_of(times[backend, iou_type]), median_of(cpu[backend, iou_type])
            rows.append(dict(backend=backend, iou_type=iou_type, wall_s=wall, cpu_s=cpu_s,
                             spread=spread_of(times[backend, iou_type]),
                             ratio=median_of(times[ref, iou_type]) / wall if wall else None,
                             cpu_ratio=median_of(cpu[ref, iou_type]) / cpu_s if cpu_s else None))

    def difference(a, b) -> float:
        """Largest |a - b| over the summary numbers and per-class APs (inf: other names, or NaN against a number)."""
        pairs = [(a.stats[k], b.stats.get(k, math.inf)) for k in a.stats]
        if [n for n, _ in a.per_class] != [n for n, _ in b.per_class] or list(a.stats) != list(b.stats):
            return math.inf
        pairs += [(x, y) for (_, va), (_, vb) in zip(a.per_class, b.per_class) for x, y in zip(va, vb)]
        return max([0.0] + [0.0 if x != x and y != y else abs(x - y) if x == x and y == y else math.inf
                            for x, y in pairs])

    differences = {t: max(difference(reports[ref, t], reports[b, t]) for b in backends) for t in iou_types}
    versions = {}
    for package in ('pycocotools', 'faster-coco-eval'):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    machine = dict(cpu=cpu_model(), cores=os.cpu_count(), usable_cores=usable_cores(),
                   python=platform.python_version(), **versions)
    return dict(rows=rows, identical={t: d <= 1e-12 for t, d in differences.items()}, differences=differences,
                loads=loads, machine=machine, protocol=protocol,
                date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d'),
                repeats=repeats, detections=len(results), images=len({r['image_id'] for r in results}),
                stats={b: {t: dict(reports[b, t].stats) for t in iou_types} for b in backends})


def format_eval_table(result: Dict) -> str:
    """The backend timings as a plain table (seconds, speed-up vs the first backend), the equality verdict per IoU
    type, and the machine and load."""
    rows = [['iou_type', 'backend', 'wall s', 'spread', 'speed-up', 'CPU s', 'CPU speed-up']]
    for r in result['rows']:
        rows.append([r['iou_type'], r['backend'], fmt_value(r['wall_s']),
                     '-' if r['spread'] is None else f'{r["spread"]:.0%}', f'{fmt_value(r["ratio"], 2)}x',
                     fmt_value(r['cpu_s']), f'{fmt_value(r["cpu_ratio"], 2)}x'])
    machine, loads = result['machine'], [x for x in result['loads'] if x is not None]
    lines = [f'{result["detections"]} detections on {result["images"]} images, {result["protocol"]} protocol, '
             f'median of {result["repeats"]} interleaved runs per backend (evaluate_coco_reports: loadRes + '
             f'evaluate + accumulate + summary)', plain_table(rows, right_columns=[2, 3, 4, 5, 6])]
    for iou_type, same in result['identical'].items():
        diff = result['differences'][iou_type]
        lines.append(f'{iou_type}: the 12 summary numbers and per-class APs of every backend are '
                     + ('IDENTICAL to the first' if same else 'NOT identical (see --out-json stats)')
                     + (' (exactly equal)' if diff == 0 else f' (largest difference {diff:.1e})'))
    load = f'load {min(loads):.1f}-{max(loads):.1f}' if loads else 'load unknown'
    lines.append(f'machine: {machine["cpu"]}, {machine["usable_cores"]}/{machine["cores"]} usable cores, {load}; '
                 f'pycocotools {machine.get("pycocotools")}, faster-coco-eval {machine.get("faster-coco-eval")}')
    return '\n'.join(lines)


def format_eval_markdown(result: Dict) -> str:
    """The backend timings of :func:`time_eval_backends` as a markdown table (the docs' evaluation benchmark block):
    seconds per backend and IoU type, speed-up over the first backend in the same run, and the equality verdict."""
    lines = [f'{result["detections"]} detections on {result["images"]} images, {result["protocol"]} protocol, median '
             f'of {result["repeats"]} interleaved runs per backend (loadRes + evaluate + accumulate + summary):', '',
             '| IoU type | backend | wall s | spread | speed-up | CPU s | CPU speed-up |',
             '|---|---|--:|--:|--:|--:|--:|']
    for r in result['rows']:
        spread = '-' if r['spread'] is None else f'{r["spread"]:.0%}'
        lines.append(f'| {r["iou_type"]} | {r["backend"]} | {fmt_value(r["wall_s"])} | {spread} | '
                     f'{fmt_value(r["ratio"], 2)}x | {fmt_value(r["cpu_s"])} | {fmt_value(r["cpu_ratio"], 2)}x |')
    loads = [x for x in result['loads'] if x is not None]
    verdicts = [f'{t}: ' + ('identical numbers' if same else 'numbers DIFFER')
                + (' (exactly equal)' if result['differences'][t] == 0
                   else f' (largest difference {result["differences"][t]:.1e})')
                for t, same in result['identical'].items()]
    lines += ['', '; '.join(verdicts) + (f'; load {min(loads):.1f}-{max(loads):.1f}.' if loads else '.')]
    return '\n'.join(lines) + '\n'
