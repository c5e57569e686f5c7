"""Benchmark exact anchor recall (one anchor-search trial) against the brute-force reference.

``python tools/benchmarks/bench_anchor_recall.py [--num-boxes 1000000] [--subset 2000] [--threads 1]``

Boxes: real iSAID box sizes read from the devkit instance-id PNGs under ``../shared/data/isaid_devkit`` (or
``$MMDET_CUSTOM_SHARED_DATA``), replicated with +-10 % log-normal jitter and placed uniformly in 800 x 800 inputs;
without that data, a log-normal size distribution (median side 14 px, as iSAID training patches). Prints boxes
per second of one trial (max IoU over the whole anchor grid + recall), the speed ratio against the brute-force
reference (timed on ``--subset`` boxes and scaled by the box count) and the largest absolute difference of the
max IoU and of recall@0.5/0.7/0.75 between the two, for two anchor settings: P2-P5 (4 levels x 2 sizes x 3 ratios
= 24 anchor shapes) and P2-P6, the setting of the configs (``configs/_base_/anchors/isaid_stride_adjusted.py``:
5 levels x 2 sizes x 3 ratios = 30 shapes). Targets: difference <= 1e-9, >= 1000x faster, 1M boxes in <= 1 s for
the configs' 30 shapes.
"""
import argparse
import glob
import os
import os.path as osp
import time

import numpy as np

from mmdet_custom.anchor_search import AnchorSetting, max_iou_brute_force, max_iou_exact, recall_table
from mmdet_custom.utils.cli import run_cli
from mmdet_custom.utils.paths import shared_data_dir

INPUT = 800
THRESHOLDS = (0.5, 0.7, 0.75)


def isaid_box_sizes(root: str) -> np.ndarray:
    """(N, 2) widths and heights (pixels) of the instances of every ``*_instance_id_RGB.png`` under ``root``."""
    from PIL import Image
    from scipy import ndimage

    sizes = []
    for path in sorted(glob.glob(osp.join(root, '**', '*_instance_id_RGB.png'), recursive=True)):
        rgb = np.asarray(Image.open(path).convert('RGB'), dtype=np.int64)
        ids = rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
        _, labels = np.unique(ids, return_inverse=True)   # 0 = background (id 0, the smallest); objects 1..
        for sl in ndimage.find_objects(labels.reshape(ids.shape)):
            if sl is not None:
                sizes.append((sl[1].stop - sl[1].start, sl[0].stop - sl[0].start))
    return np.asarray(sizes, dtype=np.float64).reshape(-1, 2)


def make_boxes(num: int, seed: int = 0):
    """(num, 4) boxes inside an ``INPUT`` x ``INPUT`` input and a description of their source."""
    rng = np.random.default_rng(seed)
    root = osp.join(shared_data_dir(), 'isaid_devkit')
    real = isaid_box_sizes(root) if osp.isdir(root) else np.zeros((0, 2))
    if len(real):
        wh = real[rng.integers(0, len(real), num)] * np.exp(rng.normal(0., 0.1, (num, 2)))
        source = f'{len(real)} real iSAID box sizes from {root}, replicated with 10% jitter'
    else:
        wh = np.exp(rng.normal(np.log(14.), 0.9, (num, 2)))
        source = 'synthetic log-normal sizes (median 14 px); iSAID devkit sample not found'
    wh = np.minimum(wh, INPUT)
    x1 = rng.uniform(0, INPUT - wh[:, 0])
    y1 = rng.uniform(0, INPUT - wh[:, 1])
    return np.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], axis=1), source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-boxes', type=int, default=1_000_000)
    parser.add_argument('--subset', type=int, default=2000, help='boxes for the brute-force reference')
    parser.add_argument('--threads', type=int, default=1, help='threads of the exact path')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs of the exact path (best is kept)')
    args = parser.parse_args(argv)

    boxes, source = make_boxes(args.num_boxes)
    shapes = np.array([INPUT, INPUT])
    settings = {
        'P2-P5 (2,4)xstride x 3 ratios': AnchorSetting((4, 8, 16, 32), tuple((2. * s, 4. * s) for s in (4, 8, 16, 32)),
                                                       (0.5, 1.0, 2.0)),
        'P2-P6 (2,4)xstride x 3 ratios (the configs\' anchors)': AnchorSetting((4, 8, 16, 32, 64),
                                                       tuple((2. * s, 4. * s) for s in (4, 8, 16, 32, 64)),
                                                       (0.5, 1.0, 2.0)),
    }
    print(f'boxes: {len(boxes):,} ({source}); input {INPUT}x{INPUT}; {os.cpu_count()} CPU(s), '
          f'{args.threads} thread(s)')
    for name, anchors in settings.items():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ious = max_iou_exact(boxes, shapes, anchors, num_threads=args.threads)
            recall_table(ious, THRESHOLDS)
            times.append(time.perf_counter() - start)
        t_exact = min(times)

        sub = boxes[:args.subset]
        start = time.perf_counter()
        ref = max_iou_brute_force(sub, shapes, anchors)
        t_brute = time.perf_counter() - start
        t_brute_scaled = t_brute * len(boxes) / len(sub)
        diff_iou = float(np.abs(ious[:len(sub)] - ref).max())
        rec_fast = recall_table(ious[:len(sub)], THRESHOLDS)['all']
        rec_ref = recall_table(ref, THRESHOLDS)['all']
        diff_recall = max(abs(rec_fast[t] - rec_ref[t]) for t in THRESHOLDS)
        num_anchors = sum(int(np.ceil(INPUT / s))**2 for s in anchors.strides) * len(anchors.ratios) * \
            len(anchors.sizes[0])
        print(f'\n{name}: {anchors.num_shapes} anchor shapes, {num_anchors:,} anchors per image')
        print(f'  exact:        {t_exact:.3f} s for {len(boxes):,} boxes = {len(boxes) / t_exact:,.0f} boxes/s '
              f'(best of {args.repeats})')
        print(f'  brute force:  {t_brute:.2f} s for {len(sub):,} boxes = {len(sub) / t_brute:,.0f} boxes/s '
              f'-> {t_brute_scaled:,.0f} s for {len(boxes):,} (scaled)')
        print(f'  speed-up:     {t_brute_scaled / t_exact:,.0f}x')
        print(f'  max |IoU diff| on {len(sub):,} boxes: {diff_iou:.3g}; max |recall diff| at '
              f'{"/".join(map(str, THRESHOLDS))}: {diff_recall:.3g}')
        print(f'  recall@{"/".join(map(str, THRESHOLDS))}: '
              + ' / '.join(f'{rec_fast[t]:.4f}' for t in THRESHOLDS) + f' (first {len(sub):,} boxes)')


if __name__ == '__main__':
    run_cli(main)
