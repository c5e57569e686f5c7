"""Whole-scene inference: windows, windowed reading, merge across overlaps, outputs, whole-scene AP.

Most tests drive the real :class:`SceneInferencer` (DataLoader, config test pipeline, merge, writers) with a stub
detector whose ``test_step`` returns known masks per window, so every expected value is known exactly.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmdet_custom.apis.scene import (
    SceneDetectionsBuilder,
    SceneInferencer,
    SceneReader,
    SceneReadError,
    SceneSettingError,
    infer_scenes,
    merge_scene_detections,
    read_isaid_instances,
    scene_rle,
    scene_windows,
)
from mmdet_custom.apis.scene.gt import find_isaid_masks
from mmdet_custom.apis.scene.merge import candidate_pairs, decode_crop, encode_crops
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_VEHICLE = ISAID_CLASSES.index('Small_Vehicle')
#: A config that holds only the test pipeline the stub needs (no resize: windows reach the stub as read).
STUB_CFG = Config(dict(test_pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'ori_shape', 'img_shape')),
]))


class StubDetector:
    """A detector whose ``test_step`` returns, for window ``img_id``, what ``predict(window)`` gives.

    ``predict((x0, y0, x1, y1))`` -> list of ``(label, score, dense window mask (h, w) bool)``.
    """

    def __init__(self, windows, predict, classes=ISAID_CLASSES):
        self.cfg = STUB_CFG
        self.dataset_meta = dict(classes=classes)
        self.windows, self.predict = windows, predict
        self.calls = []

    def test_step(self, batch):
        from mmdet.structures import DetDataSample
        self.calls.append(len(batch['inputs']))
        out = []
        for inputs, sample in zip(batch['inputs'], batch['data_samples']):
            x0, y0, x1, y1 = self.windows[sample.img_id]
            assert tuple(inputs.shape) == (3, y1 - y0, x1 - x0)
            preds = [(lab, s, m) for lab, s, m in self.predict((x0, y0, x1, y1)) if m.any()]
            masks = np.stack([m for *_, m in preds]) if preds else np.zeros((0, y1 - y0, x1 - x0), bool)
            ext, _ = encode_crops(masks)
            pred = InstanceData(bboxes=torch.as_tensor(ext, dtype=torch.float32),
                                scores=torch.tensor([s for _, s, _ in preds], dtype=torch.float32),
                                labels=torch.tensor([lab for lab, _, _ in preds], dtype=torch.int64),
                                masks=torch.from_numpy(masks))
            result = DetDataSample(metainfo=sample.metainfo)
            result.pred_instances = pred
            out.append(result)
        return out


def oracle(instances, score_of=lambda k, window: 1.0):
    """``predict`` for :class:`StubDetector`: each instance (label, scene mask extent, crop) cut to the window."""
    def predict(window):
        x0, y0, x1, y1 = window
        out = []
        for k, (label, ext, crop) in enumerate(instances):
            ix0, iy0, ix1, iy1 = max(x0, ext[0]), max(y0, ext[1]), min(x1, ext[2]), min(y1, ext[3])
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            mask = np.zeros((y1 - y0, x1 - x0), bool)
            mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = crop[iy0 - ext[1]:iy1 - ext[1], ix0 - ext[0]:ix1 - ext[0]]
            out.append((label, score_of(k, window), mask))
        return out
    return predict


def rect(x0, y0, x1, y1, label=SMALL_VEHICLE):
    """An instance covering scene pixels [x0, x1) x [y0, y1)."""
    return label, (x0, y0, x1, y1), np.ones((y1 - y0, x1 - x0), bool)


def ellipse(cx, cy, rx, ry, label=SMALL_VEHICLE):
    x0, y0, x1, y1 = cx - rx, cy - ry, cx + rx + 1, cy + ry + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return label, (x0, y0, x1, y1), ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


def scene_mask(instance, height, width):
    _, (x0, y0, x1, y1), crop = instance
    full = np.zeros((height, width), bool)
    full[y0:y1, x0:x1] = crop
    return full


def full_mask(dets, k):
    """Detection ``k`` as a dense scene mask, through the full-scene RLE the COCO results carry."""
    rle = scene_rle(dets.extents[k], dets.counts[k], dets.height, dets.width)
    return mask_utils.decode({'size': rle['size'], 'counts': rle['counts'].encode()}).astype(bool)


def write_png(path, height, width, seed=0):
    import cv2
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 255, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return image


def write_geotiff(path, height, width, count=3, dtype='uint8', transform=None, crs=None, values=None,
                  tiled=True, block=512):
    """A raster written window by window (never whole in memory); ``values(y0, y1, x0, x1) -> (count, h, w)``."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window
    profile = dict(driver='GTiff', height=height, width=width, count=count, dtype=dtype, compress='deflate')
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if transform is not None:
        profile.update(transform=transform, crs=crs)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        ds = rasterio.open(path, 'w', **profile)
    with ds:
        for y0 in range(0, height, block):
            y1 = min(y0 + block, height)
            if values is None:
                ds.write(np.full((count, y1 - y0, width), (y0 // block) % 200, dtype=dtype),
                         window=Window(0, y0, width, y1 - y0))
            else:
                ds.write(values(y0, y1, 0, width).astype(dtype), window=Window(0, y0, width, y1 - y0))


def make_inferencer(windows, predict, **kwargs):
    kwargs.setdefault('num_workers', 0)
    kwargs.setdefault('progress', False)
    model = StubDetector(windows, predict)
    return SceneInferencer(model, **kwargs), model


# ----------------------------------------------------------------------------------------------------------------
# Windows, compact masks
# ----------------------------------------------------------------------------------------------------------------
def test_windows_follow_the_devkit_tiling():
    # 1147 x 1023 (P0003): starts 0 and 1147 - 800 = 347 on x, 0 and 223 on y; stride 600 otherwise
    win = scene_windows(1023, 1147)
    assert win.tolist() == [[0, 0, 800, 800], [347, 0, 1147, 800], [0, 223, 800, 1023], [347, 223, 1147, 1023]]
    assert scene_windows(2000, 3000)[:, 0].tolist()[:5] == [0, 600, 1200, 1800, 2200]
    assert scene_windows(500, 800).tolist() == [[0, 0, 800, 500]]  # small sides: one window, whole
    with pytest.raises(SceneSettingError, match='overlap'):
        scene_windows(100, 100, 800, 800)


def test_scene_rle_equals_dense_encoding():
    rng = np.random.RandomState(0)
    height, width = 37, 53
    for x0, y0, h, w in [(0, 0, 37, 53), (5, 0, 37, 4), (10, 30, 7, 9), (52, 36, 1, 1), (0, 3, 20, 1)]:
        crop = rng.rand(h, w) > 0.4
        crop[0, 0] = True
        full = np.zeros((height, width), bool)
        full[y0:y0 + h, x0:x0 + w] = crop
        ext, counts = encode_crops(full[None])
        assert ext[0].tolist() == [x0 + np.nonzero(crop.any(0))[0][0], y0 + np.nonzero(crop.any(1))[0][0],
                                   x0 + np.nonzero(crop.any(0))[0][-1] + 1, y0 + np.nonzero(crop.any(1))[0][-1] + 1]
        rle = scene_rle(ext[0], counts[0], height, width)
        expected = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
        assert rle['counts'] == expected['counts'].decode()
        assert np.array_equal(decode_crop(ext[0], counts[0]), full[ext[0][1]:ext[0][3], ext[0][0]:ext[0][2]])


# ----------------------------------------------------------------------------------------------------------------
# Merge
# ----------------------------------------------------------------------------------------------------------------
def test_straddling_object_comes_out_once_with_the_whole_window_mask(tmp_path):
    """Windows x: [0, 800) and [600, 1400) on a 1400 x 800 scene."""
    height, width = 800, 1400
    windows = scene_windows(height, width)
    straddling = ellipse(800, 300, 60, 30)                 # x 740..861: cut at x=800 by window 0, whole in window 1
    in_overlap = rect(650, 500, 700, 530)                  # whole in both windows
    big = rect(300, 100, 1100, 140)                        # 800 px: no window holds it whole
    touching = [rect(780, 700, 800, 720), rect(800, 700, 830, 720)]  # two objects meeting at x=800
    instances = [straddling, in_overlap, big, *touching]
    # the cut piece scores higher than the whole one: wholeness, not score, must decide
    scores = {(0, 0): 0.99, (0, 600): 0.6, (1, 0): 0.7, (1, 600): 0.9}
    predict = oracle(instances, lambda k, w: scores.get((k, w[0]), 0.8))
    inferencer, _ = make_inferencer(windows, predict)
    write_png(tmp_path / 'scene.png', height, width)
    result = inferencer(str(tmp_path / 'scene.png'))
    dets = result.detections
    assert result.merge.before == 2 + 2 + 2 + 1 + 2  # every window's pieces
    assert len(dets) == len(instances)
    for inst in instances:
        full = scene_mask(inst, height, width)
        found = [k for k in range(len(dets)) if np.array_equal(full_mask(dets, k), full)]
        assert len(found) == 1, inst[1]
    k_straddling = int(np.argmin(np.abs(dets.extents[:, 0] - 740)))
    assert dets.window_ids[k_straddling] == 1 and np.isclose(dets.scores[k_straddling], 0.6)
    k_overlap = int(np.nonzero(dets.extents[:, 0] == 650)[0][0])
    assert np.isclose(dets.scores[k_overlap], 0.9)        # seen whole twice: the higher score stays
    assert result.merge.suppressed == 3 and result.merge.unioned == 1  # 2 + 1 (the touching pair's cut piece)


def test_merge_cost_follows_the_detections_not_their_square():
    """10,000 small detections in 100 windows: the R-tree yields only the few boxes that meet across windows."""
    rng = np.random.RandomState(0)
    windows = scene_windows(6200, 6200, 800, 200)
    builder = SceneDetectionsBuilder(6200, 6200, windows, score_thr=0.0)
    for w, (x0, y0, x1, y1) in enumerate(windows):
        xs, ys = rng.randint(0, x1 - x0 - 10, 100), rng.randint(0, y1 - y0 - 10, 100)
        boxes = np.stack([xs, ys, xs + 8, ys + 8], axis=1)
        builder.add(w, boxes, rng.rand(100), np.zeros(100, int))
    dets = builder.build()
    assert len(dets) == 100 * len(windows) == 10000
    pairs = candidate_pairs(dets)
    assert 0 < len(pairs) < 5 * len(dets)                 # vs 50 million pairs of all detections
    merged, stats = merge_scene_detections(dets)
    assert stats.candidate_pairs == len(pairs) and stats.after == len(merged) <= len(dets)


def test_box_only_merge_with_intersection_over_smaller():
    """A box model: the box cut by window 0's inner border yields to window 1's whole box; ``ios`` also matches a
    slightly smaller whole box seen by both windows, which ``iou`` at 0.9 keeps apart."""
    windows = scene_windows(800, 1400)                    # x: [0, 800) and [600, 1400)
    builder = SceneDetectionsBuilder(800, 1400, windows)
    builder.add(0, [[740, 10, 800, 50], [650, 100, 700, 140]], [0.99, 0.5], [3, 3])      # cut; whole
    builder.add(1, [[140, 10, 261, 50], [50, 100, 100, 130]], [0.6, 0.4], [3, 3])        # whole; whole, smaller
    dets = builder.build()
    assert dets.cut.tolist() == [True, False, False, False] and not dets.with_masks
    merged, stats = merge_scene_detections(dets, match='ios', match_thr=0.9)
    assert sorted(map(tuple, merged.bboxes.tolist())) == [(650, 100, 700, 140), (740, 10, 861, 50)]
    merged, stats = merge_scene_detections(dets, match='iou', match_thr=0.9)  # IoU 0.75 for the second pair
    assert len(merged) == 3 and stats.suppressed == 1


# ----------------------------------------------------------------------------------------------------------------
# Scene coordinates and outputs
# ----------------------------------------------------------------------------------------------------------------
def test_known_object_round_trips_in_a_3000x2000_scene(tmp_path):
    height, width = 2000, 3000
    windows = scene_windows(height, width)
    obj = ellipse(2250, 1350, 70, 45)                     # inside several windows' overlaps
    inferencer, model = make_inferencer(windows, oracle([obj]), batch_size=4)
    write_png(tmp_path / 'big.png', height, width)
    summary = infer_scenes(inferencer, [str(tmp_path / 'big.png')], str(tmp_path / 'out'), log=lambda *_: None)
    out = tmp_path / 'out'
    assert sorted(model.calls) == sorted([4] * (len(windows) // 4) + ([len(windows) % 4] if len(windows) % 4 else []))
    scene = summary['scenes'][0]
    assert scene['windows'] == len(windows) == 15 and scene['detections_after_merge'] == 1
    assert scene['detections_before_merge'] == 4         # x in windows at 1800 and 2200, y at 600 and 1200
    coco = COCO(str(out / 'scenes.json'))
    res = coco.loadRes(str(out / 'results.json'))
    (ann, ) = res.dataset['annotations']
    assert ann['bbox'] == [2180.0, 1305.0, 141.0, 91.0]
    assert np.array_equal(res.annToMask(ann).astype(bool), scene_mask(obj, height, width))
    geo = json.loads((out / 'big.geojson').read_text())
    assert 'crs' not in geo                               # not georeferenced: pixel coordinates
    from shapely.geometry import shape
    poly = shape(geo['features'][0]['geometry'])
    assert poly.area == obj[2].sum() and poly.bounds == (2180, 1305, 2321, 1396)
    assert geo['features'][0]['properties']['class'] == 'Small_Vehicle'
    import cv2
    overlay = cv2.imread(str(out / 'big_overlay.png'))  # the scene at 2048 px, then the legend on the right
    assert overlay.shape[0] == 1365 and 2048 + 100 < overlay.shape[1] < 2048 + 400


def test_geotiff_polygons_in_map_coordinates(tmp_path):
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import Polygon, shape
    transform = from_origin(500000.0, 4200000.0, 0.5, 0.5)
    write_geotiff(tmp_path / 'geo.tif', 900, 1000, transform=transform, crs='EPSG:32633')
    windows = scene_windows(900, 1000)
    obj = rect(300, 420, 340, 450)
    inferencer, _ = make_inferencer(windows, oracle([obj]), num_workers=1)  # read in a worker process
    summary = infer_scenes(inferencer, [str(tmp_path / 'geo.tif')], str(tmp_path / 'out'), log=lambda *_: None)
    assert summary['scenes'][0]['georeferenced'] and summary['scenes'][0]['crs'] == 'EPSG:32633'
    geo = json.loads((tmp_path / 'out' / 'geo.geojson').read_text())
    assert geo['crs']['properties']['name'] == 'urn:ogc:def:crs:EPSG::32633'
    (feature, ) = geo['features']
    corners = [(transform.c + transform.a * x, transform.f + transform.e * y)  # north-up: no rotation terms
               for x, y in [(300, 420), (340, 420), (340, 450), (300, 450)]]
    assert shape(feature['geometry']).equals(Polygon(corners))
    assert corners[0] == (500150.0, 4199790.0)
    if (tmp_path / 'out' / 'geo.gpkg').exists():
        with rasterio.Env():
            import geopandas
            frame = geopandas.read_file(tmp_path / 'out' / 'geo.gpkg')
            assert frame.crs.to_epsg() == 32633 and frame.geometry[0].equals(Polygon(corners))


# ----------------------------------------------------------------------------------------------------------------
# Band and bit-depth rules
# ----------------------------------------------------------------------------------------------------------------
def test_band_and_bit_depth_rules(tmp_path):
    def values(y0, y1, x0, x1):
        return np.stack([np.full((y1 - y0, x1 - x0), v) for v in (100, 1000, 2000, 4095, 7)])

    write_geotiff(tmp_path / 'ms.tif', 64, 64, count=5, dtype='uint16', values=values, tiled=False)
    with pytest.raises(SceneReadError, match=r'ms.tif has 5 bands.*--bands'):
        SceneReader(str(tmp_path / 'ms.tif'))
    with pytest.raises(SceneReadError, match=r'ms.tif: bands \[3, 2, 1\] are uint16.*--value-range'):
        SceneReader(str(tmp_path / 'ms.tif'), bands=(3, 2, 1))
    reader = SceneReader(str(tmp_path / 'ms.tif'), bands=(4, 2, 1), value_range=(0, 4095))
    window = reader.read((0, 0, 32, 16))
    assert window.shape == (16, 32, 3) and window.dtype == np.uint8
    assert window[0, 0].tolist() == [round(100 * 255 / 4095), round(1000 * 255 / 4095), 255]  # B, G, R
    auto = SceneReader(str(tmp_path / 'ms.tif'), bands=(5, ), value_range='auto')
    assert auto.read((0, 0, 8, 8)).shape == (8, 8, 3)
    import cv2
    rgba = np.dstack([np.full((20, 30), c, np.uint8) for c in (10, 20, 30, 255)])   # B, G, R, A for cv2
    cv2.imwrite(str(tmp_path / 'rgba.png'), rgba)
    png = SceneReader(str(tmp_path / 'rgba.png'))
    assert png.whole_read and not png.georeferenced
    assert png.read((5, 5, 10, 9))[0, 0].tolist() == [10, 20, 30]


def test_cli_reports_user_errors(tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, 'tools'))
    import infer_scene

    from mmdet_custom.utils.cli import run_cli
    config = os.path.join(REPO, 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py')
    with pytest.raises(SystemExit) as exit_info:
        run_cli(infer_scene.main, [config, str(tmp_path / 'missing.pth'), str(tmp_path / 'a.png'), '--out-dir',
                                   str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'checkpoint not found' in err and 'missing.pth' in err
    assert 'Traceback' not in err and not (tmp_path / 'out').exists()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(infer_scene.main, [config, str(tmp_path / 'missing.pth'), str(tmp_path / 'a.png'), '--out-dir',
                                   str(tmp_path / 'out'), '--threads', '-1'])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and '--threads must be >= 0' in err and 'Traceback' not in err


# ----------------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------------
MEMORY_SCRIPT = textwrap.dedent('''
    import json, resource, sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_scene_inference import StubDetector, oracle, write_geotiff
    from mmdet_custom.apis.scene import SceneInferencer, infer_scenes, scene_windows

    def rss_mb():
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmRSS')) / 1024

    def run(scene, size, out):
        windows = scene_windows(size, size)
        # a 40 x 20 object at the centre of every window (the last row and column see their neighbours' too)
        objects = [(8, (x0 + 380, y0 + 390, x0 + 420, y0 + 410), np.ones((20, 40), bool)) for x0, y0, _, _ in windows]
        inferencer = SceneInferencer(StubDetector(windows, oracle(objects)), batch_size=4, num_workers=0,
                                     progress=False)
        return infer_scenes(inferencer, [scene], out, overlay_max_side=1024, log=lambda *_: None)

    # warm-up on a small scene: loads GDAL's drivers and every writer's libraries, as any first scene would
    write_geotiff(sys.argv[3] + '/small.tif', 1000, 1000)
    run(sys.argv[3] + '/small.tif', 1000, sys.argv[3] + '/out_small')
    try:  # restart the peak-RSS counter (Linux clear_refs 5): the peak is then the big scene's, not the warm-up's
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        peak_key = 'VmHWM'
    except OSError:
        peak_key = None  # lifetime peak: overstates the growth, never understates it
    baseline = rss_mb()
    summary = run(sys.argv[1], 12000, sys.argv[3] + '/out')
    if peak_key:
        with open('/proc/self/status') as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith(peak_key)) / 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(baseline_mb=baseline, peak_mb=peak, scene=summary['scenes'][0])))
''')


def test_memory_is_bounded_by_the_window_batch_not_the_scene(tmp_path):
    """A 12000 x 12000 RGB GeoTIFF (412 MiB decoded) through 400 windows: the process's peak RSS grows by a
    fraction of that over the process after a first small scene (measured: 42 MiB, of which up to 32 MiB is
    GDAL's block cache; the rest is one batch of windows)."""
    scene = tmp_path / 'huge.tif'
    write_geotiff(scene, 12000, 12000, block=512)
    script = tmp_path / 'mem.py'
    script.write_text(MEMORY_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, str(script), str(scene), os.path.dirname(__file__), str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    dense_mb = 12000 * 12000 * 3 / 2**20
    growth = figures['peak_mb'] - figures['baseline_mb']
    print(f"\nmemory: baseline {figures['baseline_mb']:.0f} MB, peak {figures['peak_mb']:.0f} MB, growth "
          f'{growth:.0f} MB for a {dense_mb:.0f} MB scene')
    assert figures['scene']['windows'] == 400 and figures['scene']['detections_after_merge'] == 400
    assert growth < dense_mb / 4


# ----------------------------------------------------------------------------------------------------------------
# Whole-scene evaluation on real iSAID
# ----------------------------------------------------------------------------------------------------------------
def test_ground_truth_fed_back_through_windows_scores_ap_1(tmp_path, isaid_raw_dir):
    image = isaid_raw_dir / 'val' / 'images' / 'P0003.png'
    inst = read_isaid_instances(*find_isaid_masks(str(isaid_raw_dir), 'P0003'))
    assert len(inst) > 40 and (inst.height, inst.width) == (1023, 1147)
    instances = [(int(inst.labels[k]), tuple(int(v) for v in inst.extents[k]),
                  decode_crop(inst.extents[k], inst.counts[k])) for k in range(len(inst))]
    windows = scene_windows(inst.height, inst.width)
    import cv2  # the windows the model gets are the pixels mmdet's LoadImageFromFile gives (BGR)
    assert np.array_equal(SceneReader(str(image)).read(windows[3]), cv2.imread(str(image))[223:1023, 347:1147])
    inferencer, _ = make_inferencer(windows, oracle(instances, lambda k, w: 0.5 + 0.4 * (w[0] + w[1]) / 1000))
    summary = infer_scenes(inferencer, [str(image)], str(tmp_path / 'out'), gt_dir=str(isaid_raw_dir),
                           log=lambda *_: None)
    scene = summary['scenes'][0]
    assert scene['detections_before_merge'] > scene['detections_after_merge'] == len(inst)
    metrics = summary['eval']['metrics']
    assert metrics['segm_mAP'] == pytest.approx(1.0) and metrics['bbox_mAP'] == pytest.approx(1.0)
    assert json.loads((tmp_path / 'out' / 'eval.json').read_text())['metrics']['segm_mAP'] == pytest.approx(1.0)


@pytest.fixture(scope='module')
def random_r18(tmp_path_factory):
    """The smoke config's ResNet-18 Mask R-CNN with PyTorch's default init and random BatchNorm statistics and
    affine terms (so that folding them into the convs changes the conv weights), as (config, checkpoint)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from torch.nn.modules.batchnorm import _BatchNorm
    config = os.path.join(REPO, 'configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py')
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    ckpt = tmp_path_factory.mktemp('r18') / 'random.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=ISAID_CLASSES))), ckpt)
    return config, str(ckpt)


def test_speedups_keep_the_detections_of_a_real_window(isaid_raw_dir, one_torch_thread, random_r18):
    """BatchNorm folded, channels_last, chunked mask head (on by default): on a real 800 px iSAID window the same
    detections as the model as built: labels equal, boxes (to float32 rounding) and scores to 1e-4, masks at
    IoU >= 0.99."""
    from torch.nn.modules.batchnorm import _BatchNorm
    config, ckpt = random_r18
    reader = SceneReader(str(isaid_raw_dir / 'val' / 'images' / 'P0003.png'))
    window = scene_windows(reader.height, reader.width)[:1]
    assert window.tolist() == [[0, 0, 800, 800]]
    dets = {}
    for speedups in (False, True):
        inferencer = SceneInferencer.from_config(
            config, ckpt, device='cpu', speedups=speedups, num_workers=0, progress=False, score_thr=0.05,
            cfg_options={'model.test_cfg.rcnn.max_per_img': 30})
        model = inferencer.model
        assert model.dataset_meta['classes'] == ISAID_CLASSES
        has_bn = any(isinstance(m, _BatchNorm) for m in model.modules())
        assert has_bn != speedups and bool(getattr(model, '_inference_speedups', None)) == speedups
        dets[speedups] = inferencer.predict_raw(reader, window)
    plain, fast = dets[False], dets[True]
    assert len(plain) == len(fast) >= 10
    np.testing.assert_array_equal(plain.labels, fast.labels)
    # 1e-4 px, plus float32 rounding of coordinates up to 800 px (an ulp is 6e-5 px there; measured up to 4 ulps)
    np.testing.assert_allclose(plain.bboxes, fast.bboxes, atol=1e-4, rtol=1e-6)
    np.testing.assert_allclose(plain.scores, fast.scores, atol=1e-4, rtol=0)
    assert len(np.unique(plain.scores)) == len(plain)  # no ties: the order compared is the model's
    for k in range(len(plain)):
        a, b = full_mask(plain, k), full_mask(fast, k)
        assert a.any() and (a & b).sum() / (a | b).sum() >= 0.99


def test_geopackage_reads_back_as_the_geojson(tmp_path):
    """A small georeferenced GeoTIFF run: ``<stem>.gpkg`` (layer ``detections``) holds the GeoJSON's features:
    id, class, category_id, score, CRS and the same coordinates (a mask with a hole and a two-part mask included)."""
    gpd = pytest.importorskip('geopandas', reason='GeoPackage output needs geopandas (requirements/tests.txt)')
    pytest.importorskip('pyogrio', reason='GeoPackage output needs pyogrio (requirements/tests.txt)')
    import shapely
    from rasterio.transform import from_origin
    from shapely.geometry import shape
    transform = from_origin(500000.0, 4200000.0, 0.5, 0.5)
    write_geotiff(tmp_path / 'geo.tif', 900, 1000, transform=transform, crs='EPSG:32633')
    ring = np.ones((30, 30), bool)
    ring[10:20, 10:20] = False
    two_parts = np.zeros((10, 30), bool)
    two_parts[:, :10] = two_parts[:, 20:] = True
    objects = [rect(300, 420, 340, 450), (ISAID_CLASSES.index('Harbor'), (100, 100, 130, 130), ring),
               (ISAID_CLASSES.index('ship'), (850, 700, 880, 710), two_parts)]  # the last straddles a border
    scores = (0.9, 0.7, 0.55)
    inferencer, _ = make_inferencer(scene_windows(900, 1000), oracle(objects, lambda k, window: scores[k]))
    summary = infer_scenes(inferencer, [str(tmp_path / 'geo.tif')], str(tmp_path / 'out'), overlay_max_side=0,
                           log=lambda *_: None)
    assert summary['scenes'][0]['geopackage'] and summary['scenes'][0]['detections_after_merge'] == 3
    geo = json.loads((tmp_path / 'out' / 'geo.geojson').read_text())
    frame = gpd.read_file(tmp_path / 'out' / 'geo.gpkg', layer='detections', engine='pyogrio')
    assert frame.crs.to_epsg() == 32633 and len(frame) == len(geo['features']) == 3
    assert sorted(frame['class']) == sorted(['Small_Vehicle', 'Harbor', 'ship'])
    for (_, row), feature in zip(frame.iterrows(), geo['features']):
        props = feature['properties']
        assert (int(row['id']), row['class'], int(row['category_id'])) == (props['id'], props['class'],
                                                                          props['category_id'])
        assert row['score'] == pytest.approx(props['score'], abs=1e-6)
        expected = shape(feature['geometry'])  # the layer is MultiPolygon (pyogrio promotes a mixed layer)
        assert row.geometry.equals(expected)
        np.testing.assert_array_equal(shapely.get_coordinates(row.geometry), shapely.get_coordinates(expected))
    by_class = dict(zip(frame['class'], frame.geometry))
    harbor = by_class['Harbor']
    assert len(harbor.geoms[0].interiors) == 1 and harbor.area == pytest.approx((900 - 100) * 0.25)  # m² at 0.5 m
    assert len(by_class['ship'].geoms) == 2 and by_class['ship'].area == pytest.approx(200 * 0.25)


def test_real_scene_with_a_tiny_random_model_end_to_end(tmp_path, isaid_raw_dir, one_torch_thread, random_r18,
                                                        capsys):
    """P0003 through tools/infer_scene.py with a random-init ResNet-18 Mask R-CNN (no AP claim)."""
    sys.path.insert(0, os.path.join(REPO, 'tools'))
    import infer_scene
    config, ckpt = random_r18
    image = isaid_raw_dir / 'val' / 'images' / 'P0003.png'
    summary = infer_scene.main([config, str(ckpt), str(image), '--out-dir', str(tmp_path / 'out'), '--device', 'cpu',
                                '--batch-size', '2', '--num-workers', '1', '--score-thr', '0.05', '--no-progress',
                                '--gt', str(isaid_raw_dir), '--cfg-options', 'model.test_cfg.rcnn.max_per_img=20'])
    last = capsys.readouterr().out.strip().splitlines()[-1]  # names the output folder and its files
    scene = summary['scenes'][0]
    assert scene['windows'] == 4 and 0 < scene['detections_after_merge'] <= scene['detections_before_merge'] <= 80
    region = tmp_path / 'out' / 'region'
    res = COCO(str(region / 'scenes.json')).loadRes(str(region / 'results.json'))
    assert all(a['segmentation']['size'] == [1023, 1147] for a in res.dataset['annotations'])
    assert 'segm_mAP' in summary['eval']['metrics']
    assert json.loads((region / 'eval.json').read_text())['metrics'] == summary['eval']['metrics']
    assert last.startswith(f'written to {tmp_path / "out"}: manifest.json, scenes/ (1 scenes), region/ (')
    assert set(last.split('region/ (', 1)[1].rstrip(')').split(', ')) >= {'eval.json', 'results.json',
                                                                         'scenes.json', 'summary.json'}
    assert {p.name for p in (tmp_path / 'out' / 'scenes' / 'P0003').iterdir()} >= {
        'P0003.geojson', 'P0003.gpkg', 'P0003_overlay.png', 'results.json', 'scene.json'}


def test_a_file_the_user_put_into_an_output_folder_is_never_deleted(tmp_path):
    """The marker lists what the tool wrote; a rerun refuses (before any window runs) a folder holding anything
    else, naming it. The same rule holds in every atomic_dir user (the converters update their folder in place)."""
    from mmdet_custom.utils.fileio import atomic_dir
    write_png(tmp_path / 'a.png', 300, 400)
    out = tmp_path / 'out'
    inferencer, model = make_inferencer(scene_windows(300, 400), oracle([]))
    infer_scenes(inferencer, [str(tmp_path / 'a.png')], str(out), log=lambda *_: None)
    (out / 'notes.txt').write_text('mine')
    (out / 'mine').mkdir()
    calls = len(model.calls)
    with pytest.raises(UserError, match=r'holds files that no run of this tool wrote: mine/, notes\.txt;'):
        infer_scenes(inferencer, [str(tmp_path / 'a.png')], str(out), log=lambda *_: None)
    assert len(model.calls) == calls and (out / 'notes.txt').read_text() == 'mine' and (out / 'results.json').exists()
    (out / 'notes.txt').unlink()
    (out / 'mine').rmdir()
    infer_scenes(inferencer, [str(tmp_path / 'a.png')], str(out), log=lambda *_: None)  # its own files: replaced
    # a converter's folder (keep_existing: one split updated): a file added under a split is named, nothing changes
    conv = tmp_path / 'converted'
    with atomic_dir(conv) as tmp:
        os.makedirs(os.path.join(tmp, 'train'))
        open(os.path.join(tmp, 'train', 'a.json'), 'w').close()
    (conv / 'train' / 'extra.json').write_text('{}')
    with pytest.raises(UserError, match=r'train/extra\.json'), atomic_dir(conv, keep_existing=True):
        raise AssertionError('the block must not run')
    assert (conv / 'train' / 'extra.json').exists()


def test_settings_that_change_results_are_refused_before_the_model(tmp_path):
    """Each setting named as the argument and the flag; the window checked before the scene (not "scene size");
    a window shape the config's pipeline cannot take (a strip from a window longer than the scene's other side)
    refused before any window runs, naming the scene."""
    from mmdet_custom.apis.scene.batching import build_window_pipeline
    windows = scene_windows(300, 400)
    for kwargs, message in ((dict(border_margin=-1), r'border_margin \(--border-margin\) must be in \[0, '),
                            (dict(score_thr=1.5), r'score_thr \(--score-thr\) must be in \[0, 1\]'),
                            (dict(score_thr=float('nan')), r'score_thr \(--score-thr\) must be in \[0, 1\]'),
                            (dict(window=-5), r'window \(--window\) must be a positive'),
                            (dict(overlap=900), r'overlap \(--overlap\) must be in \[0, window = 800\)')):
        with pytest.raises(SceneSettingError, match=message):
            make_inferencer(windows, oracle([]), **kwargs)
        with pytest.raises(SceneSettingError, match=message):  # before the model is built (no such config)
            SceneInferencer.from_config(str(tmp_path / 'none.py'), **kwargs)
    with pytest.raises(SceneSettingError, match='need window > 0'):
        scene_windows(300, 400, -5)
    resize_cfg = Config(dict(test_pipeline=[STUB_CFG.test_pipeline[0],
                                            dict(type='Resize', scale=(256, 256), keep_ratio=True),
                                            *STUB_CFG.test_pipeline[1:]]))
    write_png(tmp_path / 'strip.png', 1, 3000)
    inferencer, model = make_inferencer(scene_windows(1, 3000), oracle([]),
                                        pipeline=build_window_pipeline(resize_cfg))
    with pytest.raises(SceneSettingError, match=r'strip\.png: its 800 x 1 px windows \(window 800, overlap 200, on '
                                                r'a 3000 x 1 px scene\) fail in the config\'s test pipeline'):
        infer_scenes(inferencer, [str(tmp_path / 'strip.png')], str(tmp_path / 'out'), log=lambda *_: None)
    assert model.calls == [] and not (tmp_path / 'out').exists()


def test_every_input_is_checked_before_the_first_window(tmp_path):
    """A bad second scene and --gt masks of the wrong size fail before the first scene's inference."""
    import cv2
    write_png(tmp_path / 'a.png', 300, 400)
    (tmp_path / 'b.png').write_bytes(b'not an image')
    inferencer, model = make_inferencer(scene_windows(300, 400), oracle([]))
    with pytest.raises(SceneReadError, match=r'b\.png: not a raster'):
        infer_scenes(inferencer, [str(tmp_path / 'a.png'), str(tmp_path / 'b.png')], str(tmp_path / 'out'),
                     log=lambda *_: None)
    write_png(tmp_path / 'b.png', 200, 200)
    (tmp_path / 'gt' / 'images').mkdir(parents=True)
    for stem, (h, w) in (('a', (300, 400)), ('b', (200, 250))):
        for kind in ('id', 'color'):
            assert cv2.imwrite(str(tmp_path / 'gt' / 'images' / f'{stem}_instance_{kind}_RGB.png'),
                               np.zeros((h, w, 3), np.uint8))
    with pytest.raises(UserError, match=r'b_instance_id_RGB\.png is 250 x 200 px but the scene .*b\.png is 200 x 200'):
        infer_scenes(inferencer, [str(tmp_path / 'a.png'), str(tmp_path / 'b.png')], str(tmp_path / 'out'),
                     gt_dir=str(tmp_path / 'gt'), log=lambda *_: None)
    assert model.calls == [] and not (tmp_path / 'out').exists()


def test_os_errors_and_corrupt_files_are_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    """A read-only file system, a full disk (also inside pyogrio and after open, where no file name comes with the
    error), a truncated .pth and a truncated TIFF read in a worker: one error line naming the file, exit 2."""
    import errno

    import geopandas as gpd
    import pyogrio.errors

    from mmdet_custom.apis.scene import writers
    from mmdet_custom.checkpoint import load_checkpoint_file
    from mmdet_custom.utils.cli import run_cli
    from mmdet_custom.utils.fileio import dump_json_atomic

    def error_line(main):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, [])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and 'Traceback' not in err and err.startswith('error: ')
        return err.splitlines()[0]

    def read_only(argv):
        raise OSError(errno.EROFS, 'Read-only file system', '/mnt/ro/results.json')
    assert error_line(read_only) == 'error: Read-only file system (errno 30): /mnt/ro/results.json'

    out = tmp_path / 'metrics.json'
    out.write_text('{"previous": 1}')

    def disk_full_after_open(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')  # as f.write raises it: no file name
    monkeypatch.setattr(json, 'dump', disk_full_after_open)
    assert error_line(lambda argv: dump_json_atomic({}, out)) == \
        f'error: No space left on device (errno 28): {out}'
    monkeypatch.undo()
    assert out.read_text() == '{"previous": 1}'

    def commit_fails(self, *args, **kwargs):
        raise pyogrio.errors.DataSourceError('Failed to commit transaction')
    monkeypatch.setattr(gpd.GeoDataFrame, 'to_file', commit_fails)
    dets = merge_scene_detections(SceneDetectionsBuilder(10, 10, scene_windows(10, 10)).build())[0]
    line = error_line(lambda argv: writers.write_geopackage(str(tmp_path / 'a.gpkg'), dets, [], ISAID_CLASSES,
                                                            range(1, 16)))
    assert 'Failed to commit transaction' in line and line.endswith(str(tmp_path / 'a.gpkg'))
    monkeypatch.undo()

    torch.save({'w': torch.zeros(100)}, tmp_path / 'w.pth')
    (tmp_path / 'w.pth').write_bytes((tmp_path / 'w.pth').read_bytes()[:300])
    assert 'w.pth (300 bytes): it is truncated or corrupt' in error_line(
        lambda argv: load_checkpoint_file(str(tmp_path / 'w.pth')))

    write_geotiff(tmp_path / 'cut.tif', 1000, 1000)
    data = (tmp_path / 'cut.tif').read_bytes()
    (tmp_path / 'cut.tif').write_bytes(data[:len(data) // 2])
    inferencer, _ = make_inferencer(scene_windows(1000, 1000), oracle([]), num_workers=1)
    line = error_line(lambda argv: infer_scenes(inferencer, [str(tmp_path / 'cut.tif')], str(tmp_path / 'out'),
                                                log=lambda *_: None))
    assert line.startswith(f'error: {tmp_path / "cut.tif"}: cannot read its pixels (') and 'truncated' in line
    assert not (tmp_path / 'out').exists()


def test_corrupt_rasters_are_refused_before_any_window(tmp_path):
    """--value-range 0 inf, an all-NaN float raster (taken as a black scene) and a truncated PNG (GDAL decodes it
    partly black without an error) are refused naming the file, before the first window runs."""
    write_geotiff(tmp_path / 'f.tif', 64, 64, count=1, dtype='float32')
    with pytest.raises(SceneReadError, match=r'f\.tif: value_range \(--value-range\) needs finite low < high, got '
                                             r'\(0\.0, inf\)'):
        SceneReader(str(tmp_path / 'f.tif'), value_range=(0, float('inf')))
    write_geotiff(tmp_path / 'nan.tif', 64, 64, count=1, dtype='float32',
                  values=lambda y0, y1, x0, x1: np.full((1, y1 - y0, x1 - x0), np.nan))
    for value_range in ((0, 1), 'auto'):
        with pytest.raises(SceneReadError, match=r'nan\.tif: band 1 holds no finite value'):
            SceneReader(str(tmp_path / 'nan.tif'), value_range=value_range)
    write_png(tmp_path / 'cut.png', 300, 400)
    data = (tmp_path / 'cut.png').read_bytes()
    (tmp_path / 'cut.png').write_bytes(data[:len(data) // 2])
    write_png(tmp_path / 'a.png', 300, 400)
    inferencer, model = make_inferencer(scene_windows(300, 400), oracle([]))
    with pytest.raises(SceneReadError, match=r'cut\.png: the PNG is truncated or corrupt'):
        infer_scenes(inferencer, [str(tmp_path / 'a.png'), str(tmp_path / 'cut.png')], str(tmp_path / 'out'),
                     log=lambda *_: None)
    assert model.calls == []
