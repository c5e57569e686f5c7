"""Whole-scene inference against SAHI: same model, same windows, same machine, one run
(``tools/benchmarks/bench_scene.py``, ``make bench-scene``).

Needs ``sahi`` (``pip install -r requirements/bench.txt``). Scenes are mosaics of the real iSAID images under
``../shared/data/isaid_devkit`` (or ``$MMDET_CUSTOM_SHARED_DATA``) that have masks (val P0003, train P0005), tiled
alternately, with their instances shifted and clipped into them: real-image scenes with known ground truth, written
as a PNG (what SAHI reads) and as a tiled GeoTIFF (what this project reads window by window). Windows are 800 px with
an overlap of 200 px for both; the script checks they equal SAHI's ``get_slice_bboxes``.

1. **Merge quality** (``--size`` mosaic, oracle): the ground truth cut to each window is fed back as the window
   predictions (score 1) and merged by both methods: SAHI's mmdet wrapper's conversion to ``ObjectPrediction``
   (polygons) and its default post-processing (GREEDYNMM, intersection over smaller 0.5, per class); this project's
   whole pipeline (GeoTIFF windows, batching, :func:`merge_scene_detections`). Reported: objects found exactly once,
   duplicates left (extra detections matching an object at mask IoU >= 0.5), objects lost (no detection at
   IoU >= 0.5), segm/bbox AP (iSAID protocol) and the merge time.
2. **Model runs** (``--model-size`` mosaic): the same detector (``--config``; default a ResNet-18 Mask R-CNN with
   128-channel FPN and heads at 800 px, random init, up to 100 detections per window: CPU-sized; speed and memory do
   not depend on the weights) on the same windows, each run in its own fresh process, ``--repeats`` rounds in turn
   (the rounds interleave the methods, so machine load hits all of them), the fastest round kept. ``--runs`` lists
   them; by default: SAHI's ``get_sliced_prediction`` (its defaults, without the extra full-image pass so that the
   windows are the same) on the PNG, as is and with :func:`~mmdet_custom.models.speedups.apply_inference_speedups`
   applied to the detector it built; :class:`SceneInferencer` as shipped (GeoTIFF read window by window,
   ``--batch-size``, ``--num-workers``, speedups).
   Reported: windows per second (model load and a warm-up window excluded), seconds per window inside the model's
   ``test_step`` (forward, mmdet's post-processing, mask pasting) and outside it (the method's own overhead:
   reading, slicing, mask conversion, merging), duplicate pairs left in the output (same class, mask IoU >= 0.5),
   and memory: the **absolute peak RSS** of the run (``VmHWM`` reset after loading and the warm-up; a reading
   worker's peak in brackets, mostly pages shared with its parent), the **post-load baseline** (RSS when the
   timed run starts) and the **growth** of the peak over that baseline (this project trims the C heap per batch, so
   its baseline is lower: compare absolute peaks across methods, growth within one).

SAHI 0.12.8 aborts a whole scene with ``ValueError: Invalid segmentation mask.`` when a window's mask is not empty
but has no contour of 3 points or more (a one-pixel line or a single pixel: the sliver an object cut by a window
border leaves in the next window, or a random-init model's mask); the SAHI runs here keep such a mask as its box
polygon instead (:func:`sahi_polygons_or_box`).

The machine is shared (2 cores, several jobs): the numbers are as measured in that run, contention included.
"""
import argparse
import importlib.metadata
import json
import logging
import os
import os.path as osp
import pickle
import subprocess
import sys
import time

import cv2
import numpy as np
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import mmdet_custom.register  # noqa: F401  (registries and safe checkpoint loading, also for SAHI's model)
from mmdet_custom.analysis.resources import peak_rss_mib, reset_peak_rss, rss_mib
from mmdet_custom.analysis.scene_matching import duplicate_pairs, match_counts, to_rle
from mmdet_custom.apis.scene import SceneInferencer, coco_results, evaluate_scenes, scene_gt_coco, scene_windows
from mmdet_custom.apis.scene.gt import find_isaid_masks, read_isaid_instances
from mmdet_custom.apis.scene.memory import release_free_memory
from mmdet_custom.apis.scene.merge import SceneDetections, decode_crop, encode_crops
from mmdet_custom.checkpoint import check_checkpoint_matches
from mmdet_custom.models.speedups import apply_inference_speedups
from mmdet_custom.utils.config import read_config
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES, ISAID_PALETTE
from mmdet_custom.utils.paths import config_path, shared_data_dir

SOURCES = (('val', 'P0003'), ('train', 'P0005'))
#: The CPU-sized benchmark model: the iSAID baseline (800 px windows) with the demo's ResNet-18, 128-channel FPN and
#: heads (configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py), 300 proposals, up to 100 detections per window.
BENCH_CONFIG = """_base_ = {base!r}
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=128)),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(max_per_img={max_per_img})))
"""


# ----------------------------------------------------------------------------------------------------------------
# The scene
# ----------------------------------------------------------------------------------------------------------------
def build_mosaic(size: int, work_dir: str):
    """Write ``mosaic.png`` and ``mosaic.tif`` (size x size) and return their paths and the instances
    ``[(label, (x0, y0, x1, y1), crop)]`` in mosaic pixels."""
    import rasterio  # optional (requirements/optional.txt, geo): only the GeoTIFF writer needs it
    from rasterio.windows import Window

    root = osp.join(shared_data_dir(), 'isaid_devkit')
    sources = []
    for split, stem in SOURCES:
        image = cv2.imread(osp.join(root, split, 'images', f'{stem}.png'), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'the iSAID sample {split}/images/{stem}.png is missing under {root} (set '
                                    f'MMDET_CUSTOM_SHARED_DATA to the folder holding isaid_devkit)')
        inst = read_isaid_instances(*find_isaid_masks(root, stem))
        sources.append((image, [(int(inst.labels[k]), inst.extents[k], decode_crop(inst.extents[k], inst.counts[k]))
                                for k in range(len(inst))]))
    cell_w = max(img.shape[1] for img, _ in sources)
    cell_h = max(img.shape[0] for img, _ in sources)
    mosaic = np.zeros((size, size, 3), np.uint8)
    instances = []
    for r in range(-(-size // cell_h)):
        for c in range(-(-size // cell_w)):
            image, objects = sources[(r + c) % len(sources)]
            ox, oy = c * cell_w, r * cell_h
            h, w = min(image.shape[0], size - oy), min(image.shape[1], size - ox)
            mosaic[oy:oy + h, ox:ox + w] = image[:h, :w]
            for label, (x0, y0, x1, y1), crop in objects:
                cx1, cy1 = min(x1, w), min(y1, h)
                if cx1 <= x0 or cy1 <= y0:
                    continue
                part = crop[:cy1 - y0, :cx1 - x0]
                if part.sum() <= 10:
                    continue
                instances.append((label, (ox + x0, oy + y0, ox + cx1, oy + cy1), part))
    png, tif = osp.join(work_dir, 'mosaic.png'), osp.join(work_dir, 'mosaic.tif')
    for image, path in ((mosaic, png), (mosaic[:800, :800], osp.join(work_dir, 'warmup.png'))):
        cv2.imwrite(path, image)
    for image, path in ((mosaic, tif), (mosaic[:800, :800], osp.join(work_dir, 'warmup.tif'))):
        height, width = image.shape[:2]
        profile = dict(driver='GTiff', height=height, width=width, count=3, dtype='uint8', tiled=True,
                       blockxsize=512, blockysize=512, compress='deflate')
        with rasterio.open(path, 'w', **profile) as ds:
            for y0 in range(0, height, 512):
                rows = image[y0:y0 + 512]
                ds.write(rows[..., ::-1].transpose(2, 0, 1), window=Window(0, y0, width, rows.shape[0]))
    return png, tif, instances


def warmup_path(scene: str) -> str:
    """The 800 x 800 corner of the mosaic in the scene's format: each process runs it once before measuring, so
    that first-call costs (library loading, the model's first forward) are neither timed nor counted as growth."""
    return osp.join(osp.dirname(scene), 'warmup' + osp.splitext(scene)[1])


def instances_to_detections(instances, size):
    """The mosaic's ground truth as :class:`SceneDetections` (one window: the scene; cropped masks only)."""
    dets = SceneDetections(size, size, np.array([[0, 0, size, size]]))
    extents, counts = [], []
    for _, (x0, y0, _, _), crop in instances:
        ext, rle = encode_crops(crop[None])
        extents.append(ext[0] + np.array([x0, y0, x0, y0]))
        counts.append(rle[0])
    n = len(instances)
    dets.extents = np.array(extents, np.int64).reshape(n, 4)
    dets.counts = counts
    dets.bboxes = dets.extents.astype(np.float32)
    dets.scores = np.ones(n, np.float32)
    dets.labels = np.array([i[0] for i in instances], np.int64)
    dets.window_ids = np.zeros(n, np.int64)
    dets.cut = np.zeros(n, bool)
    return dets


def oracle_predictions(instances, window):
    """Ground truth cut to ``window``: ``[(label, box (4,) window px, dense window mask)]``."""
    x0, y0, x1, y1 = (int(v) for v in window)
    out = []
    for label, (ex0, ey0, ex1, ey1), crop in instances:
        ix0, iy0, ix1, iy1 = max(x0, ex0), max(y0, ey0), min(x1, ex1), min(y1, ey1)
        if ix0 >= ix1 or iy0 >= iy1:
            continue
        piece = crop[iy0 - ey0:iy1 - ey0, ix0 - ex0:ix1 - ex0]
        if not piece.any():
            continue
        mask = np.zeros((y1 - y0, x1 - x0), bool)
        mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = piece
        ys, xs = np.nonzero(mask)
        out.append((label, np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32), mask))
    return out


class OracleDetector:
    """``test_step`` returns the ground truth cut to each window (score 1); see :func:`oracle_predictions`."""

    def __init__(self, instances, windows, classes):
        self.instances, self.windows = instances, windows
        self.dataset_meta = dict(classes=classes)
        self.cfg = Config(dict(test_pipeline=[dict(type='LoadImageFromFile'), dict(
            type='PackDetInputs', meta_keys=('img_id', 'ori_shape', 'img_shape'))]))

    def test_step(self, batch):
        out = []
        for sample in batch['data_samples']:
            x0, y0, x1, y1 = self.windows[sample.img_id]
            preds = oracle_predictions(self.instances, (x0, y0, x1, y1))
            result = DetDataSample(metainfo=sample.metainfo)
            masks = np.stack([m for *_, m in preds]) if preds else np.zeros((0, y1 - y0, x1 - x0), bool)
            result.pred_instances = InstanceData(
                bboxes=torch.as_tensor(np.array([b for _, b, _ in preds], np.float32).reshape(-1, 4)),
                scores=torch.ones(len(preds)), labels=torch.as_tensor([lab for lab, _, _ in preds], dtype=torch.long),
                masks=torch.from_numpy(masks))
            out.append(result)
        return out


def save_instances(instances, path: str) -> None:
    """The mosaic's objects as (label, extent, crop RLE) for the worker processes."""
    rows = []
    for label, (x0, y0, _, _), crop in instances:
        ext, counts = encode_crops(crop[None])
        rows.append((label, [int(v) for v in ext[0] + np.array([x0, y0, x0, y0])], counts[0]))
    with open(path, 'wb') as f:
        pickle.dump(rows, f)


def load_instances(path: str) -> list:
    with open(path, 'rb') as f:
        rows = pickle.load(f)
    return [(label, tuple(ext), decode_crop(ext, counts)) for label, ext, counts in rows]


def oracle_worker(args) -> dict:
    """Part 1 in a fresh process: the ground truth cut to the windows as the model output, then merged."""
    instances = load_instances(args.instances)
    size = args.size
    if args.worker == 'sahi-oracle':
        # sahi is optional (requirements/bench.txt): imported by the SAHI runs only
        from sahi.postprocess.combine import GreedyNMMPostprocess
        from sahi.prediction import ObjectPrediction
        from sahi.slicing import slice_image
        slice_image(image=warmup_path(args.scene), slice_height=args.window, slice_width=args.window,
                    auto_slice_resolution=False)
        _reset_peak()
        baseline = rss_mib()
        start = time.perf_counter()
        sliced = slice_image(image=args.scene, slice_height=args.window, slice_width=args.window,
                             overlap_height_ratio=args.overlap / args.window,
                             overlap_width_ratio=args.overlap / args.window, auto_slice_resolution=False)
        preds = []
        for image, (x0, y0) in zip(sliced.images, sliced.starting_pixels):
            window = (x0, y0, x0 + image.shape[1], y0 + image.shape[0])
            for label, box, mask in oracle_predictions(instances, window):  # as sahi's mmdet wrapper converts
                pred = ObjectPrediction(bbox=box.tolist(), category_id=label, score=1.0,
                                        segmentation=sahi_polygons_or_box(mask),
                                        category_name=ISAID_CLASSES[label], shift_amount=[int(x0), int(y0)],
                                        full_shape=[size, size])
                preds.append(pred.get_shifted_object_prediction())
        converted = time.perf_counter()
        merged = GreedyNMMPostprocess(match_threshold=0.5, match_metric='IOS', class_agnostic=False)(preds)
        done = time.perf_counter()
        results = []
        for p in merged:
            item = p.to_coco_prediction(image_id=1).json
            rle = to_rle(item['segmentation'], size, size)
            results.append(dict(image_id=1, category_id=int(item['category_id']) + 1, bbox=item['bbox'],
                                score=float(item['score']), segmentation=dict(rle, counts=rle['counts'].decode())))
        row = dict(method=f'SAHI {sahi_version()} (GREEDYNMM, IOS 0.5)', windows=len(sliced.images),
                   seconds=done - start, merge_s=done - converted, before=len(preds), after=len(merged))
    else:
        windows = scene_windows(size, size, args.window, args.overlap)
        inferencer = SceneInferencer(OracleDetector(instances, windows, ISAID_CLASSES), batch_size=args.batch_size,
                                     num_workers=args.num_workers, progress=False, score_thr=0.0)
        inferencer(warmup_path(args.scene)).reader.close()
        _reset_peak()
        baseline = rss_mib()
        start = time.perf_counter()
        result = inferencer(args.scene)
        done = time.perf_counter()
        result.reader.close()
        results = coco_results(result.detections, 1, range(1, len(ISAID_CLASSES) + 1))
        row = dict(method=f'mmdet_custom (mask IoU 0.5 in the overlap; {osp.splitext(args.scene)[1][1:]}, batch '
                   f'{args.batch_size})', windows=len(windows), seconds=done - start,
                   merge_s=result.timings['merge'], before=result.merge.before, after=result.merge.after)
    with open(args.results_out, 'w') as f:
        json.dump(results, f)
    row.update(baseline_mb=baseline, peak_mb=peak_rss_mib(), workers_peak_mb=peak_rss_mib(children=True))
    return row


def merge_quality(args, png, tif, instances) -> list:
    """Part 1: each method in its own process on the same oracle windows; quality read from its results."""
    size = args.size
    gt = None if args.no_eval else scene_gt_coco([(1, 'mosaic.png', instances_to_detections(instances, size))],
                                                 ISAID_CLASSES)
    path = osp.join(args.work_dir, f'instances{size}.pkl')
    save_instances(instances, path)
    rows = []
    for method, scene in (('sahi-oracle', png), ('ours-oracle', tif)):
        row = run_worker(args, method, scene, '', '', 1, size, extra=['--instances', path], duplicates=False,
                         num_workers=0)
        if 'error' not in row and not args.no_eval:
            with open(row.pop('results_out')) as f:
                results = json.load(f)
            row.update(match_counts(gt, results))
            row.update({k: v for k, v in evaluate_scenes(gt, results)['metrics'].items()
                        if k in ('segm_mAP', 'bbox_mAP')})
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Model runs, each in a fresh process
# ----------------------------------------------------------------------------------------------------------------
class ModelTimer:
    """Seconds spent inside a model's ``test_step`` (forward, mmdet's post-processing and mask pasting): the rest
    of a run is the method's own overhead (reading, slicing, mask conversion, merging)."""

    def __init__(self, model):
        self.seconds, self.calls = 0.0, 0
        inner = model.test_step

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        model.test_step = timed


def worker(args) -> dict:

    if args.threads:
        torch.set_num_threads(args.threads)
    speedups = 'speedups' if args.speedups else 'no speedups'
    if args.worker == 'sahi':
        # sahi is optional (requirements/bench.txt): imported by the SAHI runs only
        import sahi.models.mmdet as sahi_mmdet
        from sahi.models.mmdet import MmdetDetectionModel
        from sahi.predict import get_sliced_prediction

        sahi_mmdet.get_coco_segmentation_from_bool_mask = sahi_polygons_or_box
        model = MmdetDetectionModel(model_path=args.checkpoint, config_path=args.config, device=args.device,
                                    confidence_threshold=args.score_thr, load_at_init=True)
        detector = model.model.model  # sahi's DetInferencer wrapper -> mmdet's DetInferencer -> the detector
        check_checkpoint_matches(detector, args.checkpoint)  # mmdet loads non-strictly: the one check of every tool
        if args.speedups:
            apply_inference_speedups(detector)

        def predict(scene):
            return get_sliced_prediction(
                scene, model, slice_height=args.window, slice_width=args.window,
                overlap_height_ratio=args.overlap / args.window, overlap_width_ratio=args.overlap / args.window,
                perform_standard_pred=False, postprocess_type='GREEDYNMM', postprocess_match_metric='IOS',
                postprocess_match_threshold=0.5, postprocess_class_agnostic=False, force_postprocess_type=True,
                verbose=0, batch_size=args.batch_size)

        predict(warmup_path(args.scene))
        timer = ModelTimer(detector)
        release_free_memory()  # both methods start from a trimmed heap: growth counts all a run needs
        _reset_peak()
        baseline = rss_mib()
        start = time.perf_counter()
        result = predict(args.scene)
        elapsed = time.perf_counter() - start
        from sahi.slicing import get_slice_bboxes
        num_windows = len(get_slice_bboxes(args.size, args.size, args.window, args.window, False,
                                           args.overlap / args.window, args.overlap / args.window))
        results = []
        for item in result.to_coco_predictions(image_id=1):
            results.append(dict(image_id=1, category_id=int(item['category_id']) + 1, bbox=item['bbox'],
                                score=float(item['score']), segmentation=item['segmentation']))
        with open(args.results_out, 'w') as f:
            json.dump(results, f)
        return dict(method=f'SAHI {sahi_version()} (png, one by one, {speedups})', seconds=elapsed,
                    model_s=timer.seconds, windows=num_windows, detections=len(result.object_prediction_list),
                    postprocess_s=result.durations_in_seconds.get('postprocess'), baseline_mb=baseline,
                    peak_mb=peak_rss_mib(), workers_peak_mb=0.0, threads=torch.get_num_threads())
    inferencer = SceneInferencer.from_config(args.config, args.checkpoint, device=args.device,
                                             speedups=args.speedups, batch_size=args.batch_size,
                                             num_workers=args.num_workers, score_thr=args.score_thr,
                                             window=args.window, overlap=args.overlap, progress=False)
    inferencer(warmup_path(args.scene)).reader.close()
    timer = ModelTimer(inferencer.model)
    release_free_memory()
    _reset_peak()
    baseline = rss_mib()
    start = time.perf_counter()
    result = inferencer(args.scene)
    elapsed = time.perf_counter() - start
    result.reader.close()
    with open(args.results_out, 'w') as f:
        json.dump(coco_results(result.detections, 1, range(1, len(inferencer.classes) + 1)), f)
    return dict(method=f'ours ({osp.splitext(args.scene)[1][1:]}, batch {args.batch_size}, {args.num_workers} reading '
                f'worker(s), {speedups})', seconds=elapsed, model_s=timer.seconds,
                windows=result.num_windows,
                detections=result.merge.after, postprocess_s=result.timings['merge'], baseline_mb=baseline,
                num_workers=args.num_workers, threads=torch.get_num_threads(),
                peak_mb=peak_rss_mib(), workers_peak_mb=peak_rss_mib(children=True))


def sahi_polygons_or_box(mask: np.ndarray) -> list:
    """SAHI's ``get_coco_segmentation_from_bool_mask``, but a non-empty mask without a contour of 3 points or more
    (a 1-px line, a single pixel) becomes its box polygon: sahi 0.12.8 would raise ``ValueError: Invalid
    segmentation mask.`` in ``ObjectPrediction`` and abort the whole scene. Objects cut by a window border leave
    such slivers in the next window; random-init models predict such masks."""
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask
    segmentation = get_coco_segmentation_from_bool_mask(mask)
    if segmentation:
        return segmentation
    ys, xs = np.nonzero(np.squeeze(mask))
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def sahi_version() -> str:
    return importlib.metadata.version('sahi')


def run_worker(args, method: str, scene: str, config: str, checkpoint: str, batch_size: int, size: int,
               extra=(), duplicates: bool = True, num_workers: int = None, speedups: bool = False) -> dict:
    num_workers = args.num_workers if num_workers is None else num_workers
    results_out = osp.join(args.work_dir, f'results_{method}_{osp.basename(scene)}_b{batch_size}_w{num_workers}'
                           f'{"_fast" if speedups else ""}.json')
    cmd = [sys.executable, '-m', 'mmdet_custom.apis.scene_bench', '--worker', method, '--scene', scene,
           '--config', config, '--checkpoint', checkpoint, '--size', str(size), '--device', args.device, '--batch-size',
           str(batch_size), '--num-workers', str(num_workers), '--score-thr', str(args.score_thr),
           '--window', str(args.window), '--overlap', str(args.overlap), '--results-out', results_out,
           '--threads', str(args.threads), *(['--speedups'] if speedups else []), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        return dict(method=method, error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                    f'exit {proc.returncode}')
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row['results_out'] = results_out
    if duplicates:
        with open(results_out) as f:
            row['duplicate_pairs'] = duplicate_pairs(json.load(f), size, size)
    return row


def save_random_checkpoint(config: str, path: str) -> None:

    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(read_config(config).model)
    logging.disable(logging.INFO)  # init_weights logs every parameter
    try:
        model.init_weights()
    finally:
        logging.disable(logging.NOTSET)
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=ISAID_CLASSES, palette=ISAID_PALETTE))), path)


def parse_run(spec: str, args) -> tuple:
    """``METHOD:FORMAT:BATCH:WORKERS:SPEEDUPS`` -> (method, format, batch, workers, speedups)."""
    parts = spec.split(':')
    if len(parts) != 5 or parts[0] not in ('sahi', 'ours') or parts[1] not in ('png', 'tif') or \
            parts[4] not in ('0', '1'):
        raise UserError(f'--runs {spec}: expected METHOD:FORMAT:BATCH:WORKERS:SPEEDUPS, e.g. ours:tif:2:1:1')
    try:
        batch = args.batch_size if parts[2] == 'B' else int(parts[2])
        workers = args.num_workers if parts[3] == 'W' else int(parts[3])
    except ValueError as e:
        raise UserError(f'--runs {spec}: batch and workers are integers (or B, W)') from e
    if parts[0] == 'sahi' and (parts[1] != 'png' or workers):
        raise UserError(f'--runs {spec}: SAHI reads the PNG in its own process (sahi:png:BATCH:0:SPEEDUPS)')
    return parts[0], parts[1], batch, workers, parts[4] == '1'


def model_runs(args) -> list:
    """Part 2: each method in a fresh process, ``--repeats`` rounds in turn; the fastest round of each is kept."""
    runs = [parse_run(spec, args) for spec in args.runs]
    work = osp.join(args.work_dir, f'mosaic{args.model_size}')
    os.makedirs(work, exist_ok=True)
    png, tif, _ = build_mosaic(args.model_size, work)
    config, checkpoint = args.config, args.checkpoint
    if config is None:
        config = osp.join(args.work_dir, 'bench_model.py')
        with open(config, 'w') as f:
            f.write(BENCH_CONFIG.format(base=config_path('mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'),
                                        max_per_img=args.max_per_img))
    if checkpoint is None:
        checkpoint = osp.join(args.work_dir, 'bench_model_random.pth')
        save_random_checkpoint(config, checkpoint)
    # one resolved config file for both methods (SAHI reads it with mmengine, ours with read_config)
    resolved = osp.join(args.work_dir, 'bench_model_resolved.py')
    read_config(config).dump(resolved)
    config = resolved
    best, rounds = {}, {}
    for _ in range(args.repeats):
        for key in runs:
            method, fmt, batch, workers, speedups = key
            row = run_worker(args, method, png if fmt == 'png' else tif, config, checkpoint, batch, args.model_size,
                             num_workers=workers, speedups=speedups)
            if 'error' not in row:
                rounds.setdefault(key, []).append(round(row['windows'] / row['seconds'], 3))
                print(f"  {row['method']}: {row['windows'] / row['seconds']:.3f} windows/s, peak {row['peak_mb']:.0f} "
                      f"MB, load {os.getloadavg()[0]:.1f}", flush=True)
            if key not in best or 'error' in best[key] or ('error' not in row and
                                                           row['seconds'] < best[key]['seconds']):
                best[key] = row
    rows = []
    for key in runs:
        rows.append(dict(best[key], rounds_windows_per_s=rounds.get(key, [])))
    print(f'\nModel runs on the {args.model_size} x {args.model_size} mosaic ({osp.basename(config)}, device '
          f'{args.device}, score_thr {args.score_thr}; fastest of {args.repeats} rounds; load average '
          f'{os.getloadavg()[0]:.1f}):\n')
    print('| method | windows/s (each round) | s/window: model / rest | detections | duplicate pairs '
          '(same class, mask IoU >= 0.5) | peak RSS MB, absolute (reading worker) | post-load baseline RSS MB | '
          'peak growth over baseline MB |')
    print('|---|---|---|---|---|---|---|---|')
    for row in rows:
        if 'error' in row:
            print(f"| {row['method']} | failed: {row['error']} | | | | | | |")
            continue
        workers = f" ({row['workers_peak_mb']:.0f})" if row.get('num_workers') else ''
        per_window = row['seconds'] / row['windows']
        model = row['model_s'] / row['windows']
        each = ', '.join(map(str, row['rounds_windows_per_s']))
        print(f"| {row['method']} | {row['windows'] / row['seconds']:.3f} ({each}) "
              f"| {model:.2f} / {per_window - model:.2f} | {row['detections']} | {row['duplicate_pairs']} | "
              f"{row['peak_mb']:.0f}{workers} | {row['baseline_mb']:.0f} | {row['peak_mb'] - row['baseline_mb']:.0f} |")
    ok = [r for r in rows if 'error' not in r]
    sahi = next((r for r in ok if r['method'].startswith('SAHI') and 'no speedups' in r['method']), None)
    if sahi is not None:
        for row in ok:
            if not row['method'].startswith('SAHI'):
                print(f"{row['method']} vs SAHI as is: {row['seconds'] and sahi['seconds'] / row['seconds']:.2f}x "
                      f"throughput, {row['peak_mb'] / sahi['peak_mb']:.2f}x peak RSS, "
                      f"{(row['peak_mb'] - row['baseline_mb']) / max(sahi['peak_mb'] - sahi['baseline_mb'], 1):.2f}x "
                      f"growth")
    return rows


def worker_parser() -> argparse.ArgumentParser:
    """The flags :func:`run_worker` hands a worker process (``python -m mmdet_custom.apis.scene_bench --worker
    METHOD ...``): the run's method, scene and model, and the benchmark's settings it needs."""
    parser = argparse.ArgumentParser(description='one run of the scene benchmark (internal)')
    parser.add_argument('--worker', required=True, choices=('ours', 'sahi', 'ours-oracle', 'sahi-oracle'))
    parser.add_argument('--scene', required=True)
    parser.add_argument('--results-out', required=True)
    parser.add_argument('--config', default='')
    parser.add_argument('--checkpoint', default='')
    parser.add_argument('--instances', help='the mosaic\'s objects (oracle runs)')
    parser.add_argument('--size', type=int, required=True)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--num-workers', type=int, default=0)
    parser.add_argument('--score-thr', type=float, default=0.05)
    parser.add_argument('--window', type=int, default=800)
    parser.add_argument('--overlap', type=int, default=200)
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--speedups', action='store_true')
    return parser


def run_scene_benchmark(args: argparse.Namespace) -> dict:
    """The whole benchmark (parts 1 and 2 of the module docstring) with the settings of
    ``tools/benchmarks/bench_scene.py`` (``args``: its parsed flags);
    prints its tables and writes ``<work_dir>/bench_scene.json``.

    Returns:
        dict: the report written (``sahi`` version, ``same_windows_<size>``, ``quality`` rows, ``model_runs``).

    Raises:
        UserError: a malformed ``--runs`` entry.
        FileNotFoundError: the iSAID samples are missing (see :func:`shared_data_dir`).
    """
    os.makedirs(args.work_dir, exist_ok=True)
    import sahi  # optional (requirements/bench.txt); the benchmark compares against it
    from sahi.slicing import get_slice_bboxes

    report = dict(sahi=sahi.__version__)
    for size in sorted({args.size, args.model_size}):
        ours_windows = scene_windows(size, size, args.window, args.overlap).tolist()
        sahi_windows = get_slice_bboxes(size, size, args.window, args.window, False, args.overlap / args.window,
                                        args.overlap / args.window)
        same = sorted(map(list, sahi_windows)) == sorted(ours_windows)
        print(f'scene {size} x {size}: {len(ours_windows)} windows of {args.window} px, overlap {args.overlap}; '
              f'SAHI {sahi.__version__} cuts {len(sahi_windows)}, same windows: {same}')
        report[f'same_windows_{size}'] = same
    if not args.skip_quality:
        work = osp.join(args.work_dir, f'mosaic{args.size}')
        os.makedirs(work, exist_ok=True)
        png, tif, instances = build_mosaic(args.size, work)
        print(f'{args.size} x {args.size} mosaic of {SOURCES}: {len(instances)} ground-truth objects')
        quality = report['quality'] = merge_quality(args, png, tif, instances)
        print('\nMerge quality and pipeline speed with a free model (the ground truth cut to the windows is the '
              'window output, score 1), each method in a fresh process:\n')
        print('| method | windows/s | merge s | detections in -> out | found once | duplicates left | lost | '
              'segm AP | bbox AP | peak RSS MB | RSS growth MB |')
        print('|---|---|---|---|---|---|---|---|---|---|---|')
        for q in quality:
            if 'error' in q:
                print(f"| {q['method']} | failed: {q['error']} |" + ' |' * 9)
                continue
            q = dict(dict.fromkeys(('exactly_once', 'duplicates', 'lost', 'segm_mAP', 'bbox_mAP'), float('nan')), **q)
            print(f"| {q['method']} | {q['windows'] / q['seconds']:.2f} | {q['merge_s']:.2f} | {q['before']} -> "
                  f"{q['after']} | {q['exactly_once']} / {len(instances)} | {q['duplicates']} | {q['lost']} | "
                  f"{q['segm_mAP']:.3f} | {q['bbox_mAP']:.3f} | {q['peak_mb']:.0f} | "
                  f"{q['peak_mb'] - q['baseline_mb']:.0f} |")
    if not args.skip_model:
        report['model_runs'] = model_runs(args)
    with open(osp.join(args.work_dir, 'bench_scene.json'), 'w') as f:
        json.dump(report, f, indent=1)
    return report


def _worker_main(argv) -> None:
    """Subprocess entry of one run: ``python -m mmdet_custom.apis.scene_bench --worker METHOD ...``."""
    args = worker_parser().parse_args(argv)
    print(json.dumps(oracle_worker(args) if args.worker.endswith('-oracle') else worker(args)))


def _reset_peak() -> None:
    """Restart the peak-RSS counter before a timed run; refused, the peak would include loading: stop."""
    if not reset_peak_rss():
        raise RuntimeError('cannot reset the peak RSS (/proc/self/clear_refs refused): the peaks would include '
                           'model and library loading')


if __name__ == '__main__':
    _worker_main(sys.argv[1:])
