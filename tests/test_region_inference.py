"""Region-scale scene inference: scene lists, resumable per-scene outputs, shards, the region merge in one CRS,
the overlay's outlines and legend, GeoPackages of pixel scenes.

The fast tests drive the real :func:`infer_region` (DataLoader, test pipeline, merge, writers, manifest) with
:class:`BlobDetector`, a stub whose detections follow the image content (bright blobs), so every scene gives its own
known detections wherever its windows fall. The slow test runs ``tools/infer_scene.py`` in subprocesses with a
random-init ResNet-18 Mask R-CNN: two shards against one process, and a run killed after its first scene.
"""
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData
from test_scene_inference import STUB_CFG, random_r18, write_geotiff  # noqa: F401 (random_r18 is a fixture)

from mmdet_custom.apis.scene import (
    SceneInferencer,
    assign_scenes,
    expand_scene_inputs,
    infer_region,
    merge_region,
    resolve_shard,
)
from mmdet_custom.apis.scene.writers import PIXEL_CRS_WKT
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW, OVERLAP = 256, 64
SHIP, HARBOR = ISAID_CLASSES.index('ship'), ISAID_CLASSES.index('Harbor')


class BlobDetector:
    """``test_step``: each 4-connected blob of blue > 200 in a window is one instance: class ship below 400 px,
    Harbor above; score = its mean green / 255."""

    def __init__(self, classes=ISAID_CLASSES):
        self.cfg = STUB_CFG
        self.dataset_meta = dict(classes=classes)
        self.windows_seen = 0

    def test_step(self, batch):
        from mmdet.structures import DetDataSample
        from scipy import ndimage
        out = []
        for inputs, sample in zip(batch['inputs'], batch['data_samples']):
            image = inputs.numpy()  # (3, h, w) BGR
            labels, n = ndimage.label(image[0] > 200)
            masks = np.stack([labels == k for k in range(1, n + 1)]) if n else np.zeros((0, *labels.shape), bool)
            boxes = [(np.nonzero(m.any(0))[0][[0, -1]], np.nonzero(m.any(1))[0][[0, -1]]) for m in masks]
            pred = InstanceData(
                bboxes=torch.tensor([[x[0], y[0], x[1] + 1, y[1] + 1] for x, y in boxes], dtype=torch.float32
                                    ).reshape(-1, 4),
                scores=torch.tensor([image[1][m].mean() / 255 for m in masks], dtype=torch.float32),
                labels=torch.tensor([SHIP if m.sum() < 400 else HARBOR for m in masks], dtype=torch.int64),
                masks=torch.from_numpy(masks))
            result = DetDataSample(metainfo=sample.metainfo)
            result.pred_instances = pred
            out.append(result)
            self.windows_seen += 1
        return out


def blob_inferencer(**kwargs):
    kwargs.setdefault('num_workers', 0)
    kwargs.setdefault('progress', False)
    model = BlobDetector()
    return SceneInferencer(model, window=WINDOW, overlap=OVERLAP, score_thr=0.0, **kwargs), model


def blob_image(height, width, seed):
    """(h, w, 3) BGR: noise below 200 in blue, with rectangles (blue 255, green by object) of several sizes, some
    across window borders."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 200, (height, width, 3), dtype=np.uint8)
    for k in range(6):
        h, w = rng.randint(8, 40), rng.randint(8, 40)
        y, x = rng.randint(0, height - h), rng.randint(0, width - w)
        image[y:y + h, x:x + w, 0] = 255
        image[y:y + h, x:x + w, 1] = 40 * k + 20
    return image


SIZES = [(300, 400), (420, 380), (256, 600), (500, 500), (200, 260), (380, 700)]


def write_scenes(folder, kinds=('png', ) * 6, crs=('EPSG:32633', ) * 6):
    """Six small scenes (PNG, or GeoTIFF at 0.5 m in ``crs``); returns their paths."""
    import cv2
    from rasterio.transform import from_origin
    folder.mkdir(exist_ok=True)
    paths = []
    for k, ((h, w), kind) in enumerate(zip(SIZES, kinds)):
        image = blob_image(h, w, k)
        path = folder / f's{k}.{"png" if kind == "png" else "tif"}'
        if kind == 'png':
            assert cv2.imwrite(str(path), image)
        else:
            rgb = image[..., ::-1].transpose(2, 0, 1)
            write_geotiff(path, h, w, transform=from_origin(500000.0 + 1000 * k, 4200000.0, 0.5, 0.5), crs=crs[k],
                          values=lambda y0, y1, x0, x1, rgb=rgb: rgb[:, y0:y1, x0:x1])
        paths.append(str(path))
    return paths


def read_region(out):
    """The merged region outputs, in comparable form."""
    import geopandas as gpd
    results = json.loads((out / 'region' / 'results.json').read_text())
    images = json.loads((out / 'region' / 'scenes.json').read_text())
    frame = gpd.read_file(out / 'region' / 'region.gpkg', layer='detections', engine='pyogrio')
    rows = sorted((r.scene, int(r.id), r['class'], round(float(r.score), 6), r.geometry.wkb_hex)
                  for _, r in frame.iterrows())
    return results, images, rows, frame


def quiet(*_):
    pass


# ----------------------------------------------------------------------------------------------------------------
# Scene lists and shards
# ----------------------------------------------------------------------------------------------------------------
def test_scene_lists_from_folders_globs_and_text_files(tmp_path):
    scenes = tmp_path / 'scenes'
    scenes.mkdir()
    for name in ('b10.png', 'b2.tif', 'a.jpg', 'notes.md'):
        (scenes / name).write_bytes(b'x')
    (tmp_path / 'list.txt').write_text('# region A\nscenes/b2.tif\n\n' + str(scenes / 'a.jpg') + '\n')
    assert expand_scene_inputs([str(scenes)]) == [str(scenes / n) for n in ('a.jpg', 'b2.tif', 'b10.png')]
    assert expand_scene_inputs([str(scenes / 'b*')]) == [str(scenes / 'b2.tif'), str(scenes / 'b10.png')]
    # a list's relative paths are relative to the list; a file reached twice is kept once, at its first place
    assert expand_scene_inputs([str(tmp_path / 'list.txt'), str(scenes)]) == [
        str(tmp_path / 'scenes/b2.tif'), str(scenes / 'a.jpg'), str(scenes / 'b10.png')]
    (tmp_path / 'bad.txt').write_text('scenes/a.jpg\nscenes/missing.tif\n')
    with pytest.raises(FileNotFoundError, match=r'bad\.txt, line 2: scene not found: scenes/missing\.tif'):
        expand_scene_inputs([str(tmp_path / 'bad.txt')])
    with pytest.raises(UserError, match=r'the pattern .*\*\.vrt matches no raster'):
        expand_scene_inputs([str(scenes / '*.vrt')])
    # the devkit keeps its annotation masks beside the images: a folder or a glob skips them, naming one takes it
    isaid = tmp_path / 'val' / 'images'
    isaid.mkdir(parents=True)
    for name in ('P0003.png', 'P0003_instance_color_RGB.png', 'P0003_instance_id_RGB.png'):
        (isaid / name).write_bytes(b'x')
    skipped = []
    assert expand_scene_inputs([str(isaid)], skipped) == [str(isaid / 'P0003.png')]
    assert sorted(skipped) == [str(isaid / 'P0003_instance_color_RGB.png'), str(isaid / 'P0003_instance_id_RGB.png')]
    assert expand_scene_inputs([str(isaid / 'P*')]) == [str(isaid / 'P0003.png')]
    assert expand_scene_inputs([str(isaid / 'P0003_instance_id_RGB.png')]) == [str(isaid / 'P0003_instance_id_RGB.png')]
    with pytest.raises(UserError, match='other than iSAID annotation masks'):
        expand_scene_inputs([str(isaid / '*_RGB.png')])
    assert resolve_shard('1/3') == (1, 3) and resolve_shard(None, {'RANK': '2', 'WORLD_SIZE': '4'}) == (2, 4)
    assert resolve_shard(None, {}) == (0, 1)
    for bad in ('3/3', '1', 'a/b'):
        with pytest.raises(UserError, match='--shard'):
            resolve_shard(bad)
    # longest first, each to the least loaded rank: every rank ends within one scene of the others
    ranks = assign_scenes([4, 1, 1, 6, 2, 2, 9, 3], 3)
    loads = [sum(c for c, r in zip([4, 1, 1, 6, 2, 2, 9, 3], ranks) if r == k) for k in range(3)]
    assert ranks == assign_scenes([4, 1, 1, 6, 2, 2, 9, 3], 3) and sorted(loads) == [9, 9, 10]


# ----------------------------------------------------------------------------------------------------------------
# Resume, shards, refusal (in process)
# ----------------------------------------------------------------------------------------------------------------
def test_interrupted_and_sharded_runs_give_the_uninterrupted_outputs(tmp_path):
    """One uninterrupted run; a run stopped after 2 scenes then rerun (complete scenes skipped, nothing run twice);
    and 3 shards run one after the other (the last to finish merges): the same region outputs. An input whose
    mtime changes is run again."""
    paths = write_scenes(tmp_path / 'in')
    inferencer, model = blob_inferencer()
    whole = infer_region(inferencer, paths, str(tmp_path / 'whole'), log=quiet)
    total_windows = model.windows_seen
    assert len(whole['scenes']) == 6 and whole['detections'] > 20 and whole['crs'] == 'scene pixels'
    expected = read_region(tmp_path / 'whole')

    inferencer, model = blob_inferencer()
    status = infer_region(inferencer, paths, str(tmp_path / 'resumed'), max_scenes=2, log=quiet)
    assert status['ran'] == 2 and len(status['missing']) == 4 and not (tmp_path / 'resumed' / 'region').exists()
    done = sorted(p.name for p in (tmp_path / 'resumed' / 'scenes').iterdir() if (p / 'scene.json').exists())
    assert len(done) == 2
    first_windows = model.windows_seen
    lines = []
    summary = infer_region(inferencer, paths, str(tmp_path / 'resumed'), log=lines.append)
    assert '2 already complete (skipped), 4 to run' in lines[0]
    assert model.windows_seen == total_windows and first_windows < total_windows  # each window once
    assert read_region(tmp_path / 'resumed')[:3] == expected[:3]
    assert [s['stem'] for s in summary['scenes']] == [f's{k}' for k in range(6)]

    inferencer, model = blob_inferencer()
    statuses = [infer_region(inferencer, paths, str(tmp_path / 'sharded'), shard=(rank, 3), log=quiet)
                for rank in (2, 0, 1)]
    assert [len(s.get('missing', [])) for s in statuses] == [3, 2, 0] and 'scenes' in statuses[-1]
    # by windows (4, 4, 3, 9, 2, 8), longest first to the least loaded rank: 9 | 8 + 3 | 4 + 4 + 2 windows
    ranks = {s['stem']: s['rank'] for s in statuses[-1]['scenes']}
    assert ranks == dict(s3=0, s5=1, s2=1, s0=2, s1=2, s4=2)
    assert read_region(tmp_path / 'sharded')[:3] == expected[:3]

    os.utime(paths[3], ns=(time.time_ns(), time.time_ns() + 10**9))  # the input changed: s3 is run again
    inferencer, model = blob_inferencer()
    lines = []
    infer_region(inferencer, paths, str(tmp_path / 'whole'), log=lines.append)
    assert '5 already complete (skipped), 1 to run' in lines[0] and lines[1].startswith('s3: ')


def test_a_shard_reads_only_the_headers_of_other_shards_scenes(tmp_path):
    """A truncated PNG (intact header) in shard 1: shard 0 runs its scene without decoding it; shard 1 refuses it,
    naming the file, before its first window."""
    from mmdet_custom.apis.scene import SceneReadError
    paths = write_scenes(tmp_path / 'in')[:2]                 # 4 windows each: s0 -> rank 0, s1 -> rank 1
    data = open(paths[1], 'rb').read()
    open(paths[1], 'wb').write(data[:len(data) // 2])
    inferencer, model = blob_inferencer()
    status = infer_region(inferencer, paths, str(tmp_path / 'out'), shard=(0, 2), progress=False, log=quiet)
    assert status['ran'] == 1 and status['missing'] == ['s1'] and model.windows_seen == 4
    with pytest.raises(SceneReadError, match=r's1\.png: the PNG is truncated or corrupt'):
        infer_region(inferencer, paths, str(tmp_path / 'out'), shard=(1, 2), progress=False, log=quiet)
    assert model.windows_seen == 4


def test_changed_settings_are_refused_naming_them(tmp_path, capsys):
    """Another score threshold or checkpoint against an existing manifest: one error line naming the setting and
    both values, exit 2, before any window; a folder the tool did not write is refused too."""
    from mmdet_custom.utils.cli import run_cli
    paths = write_scenes(tmp_path / 'in')[:2]
    out = tmp_path / 'out'
    inferencer, _ = blob_inferencer()
    infer_region(inferencer, paths, str(out), model_id=dict(checkpoint_sha256='aa'), progress=False, log=quiet)
    before = {p: p.stat().st_mtime_ns for p in out.rglob('*')}
    capsys.readouterr()
    for kwargs, model_id, message in (
            (dict(score_thr=0.5), dict(checkpoint_sha256='aa'), 'score_thr 0.0 -> 0.5'),
            (dict(), dict(checkpoint_sha256='bb'), "model.checkpoint_sha256 'aa' -> 'bb'")):
        model = BlobDetector()
        inferencer = SceneInferencer(model, window=WINDOW, overlap=OVERLAP, num_workers=0, progress=False,
                                     **{'score_thr': 0.0, **kwargs})
        def run(argv, inferencer=inferencer, model_id=model_id):
            infer_region(inferencer, paths, str(out), model_id=model_id, log=quiet)
        with pytest.raises(SystemExit) as exit_info:
            run_cli(run, [])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and 'Traceback' not in err and len(err.strip().splitlines()) == 1
        assert f'{out / "manifest.json"} was written with other settings ({message})' in err
        assert model.windows_seen == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*')} == before
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('x')
    with pytest.raises(UserError, match=r'holds files but no manifest\.json'):
        infer_region(inferencer, paths, str(tmp_path / 'mine'), log=quiet)


# ----------------------------------------------------------------------------------------------------------------
# One CRS for the region
# ----------------------------------------------------------------------------------------------------------------
def test_scenes_in_other_crss_are_reprojected_or_refused(tmp_path):
    """Two UTM zones: refused without --crs (before any window), reprojected with it; pixel scenes cannot be mixed
    with georeferenced ones, nor given a --crs."""
    import geopandas as gpd
    from shapely.geometry import shape
    paths = write_scenes(tmp_path / 'in', kinds=('tif', 'tif', 'png'), crs=('EPSG:32633', 'EPSG:32634'))
    tifs = paths[:2]
    inferencer, model = blob_inferencer()
    with pytest.raises(UserError, match=r'different CRSs \(s0: EPSG:32633; s1: EPSG:32634\): pass --crs'):
        infer_region(inferencer, tifs, str(tmp_path / 'out'), log=quiet)
    assert model.windows_seen == 0 and not (tmp_path / 'out').exists()
    with pytest.raises(UserError, match=r'without georeferencing \(s2: pixel coordinates\) and georeferenced'):
        infer_region(inferencer, paths[1:3], str(tmp_path / 'out'), log=quiet)
    with pytest.raises(UserError, match=r'--crs EPSG:4326: the scenes are not georeferenced \(s2\)'):
        infer_region(inferencer, paths[2:3], str(tmp_path / 'out'), crs='EPSG:4326', log=quiet)
    summary = infer_region(inferencer, tifs, str(tmp_path / 'out'), crs='EPSG:32633', log=quiet)
    assert summary['crs'] == 'EPSG:32633'
    frame = gpd.read_file(tmp_path / 'out' / 'region' / 'region.gpkg', layer='detections', engine='pyogrio')
    assert frame.crs.to_epsg() == 32633 and set(frame.scene) == {'s0', 's1'}
    own = json.loads((tmp_path / 'out' / 'scenes' / 's1' / 's1.geojson').read_text())['features']
    reprojected = gpd.GeoSeries([shape(f['geometry']) for f in own], crs='EPSG:32634').to_crs('EPSG:32633')
    got = frame[frame.scene == 's1'].sort_values('id').geometry.reset_index(drop=True)
    assert len(got) == len(own) > 0
    for a, b in zip(got, reprojected):
        assert a.symmetric_difference(b).area < 1e-6 * b.area
    # the scene's own outputs stay in its own CRS: its GeoJSON is in zone 34
    assert 4199800 < shape(own[0]['geometry']).centroid.y < 4200000
    # --merge-only into another CRS: the region is rewritten whole, the scenes untouched
    summary = merge_region(str(tmp_path / 'out'), crs='EPSG:32634', log=quiet)
    frame = gpd.read_file(tmp_path / 'out' / 'region' / 'region.gpkg', layer='detections', engine='pyogrio')
    assert summary['crs'] == 'EPSG:32634' and frame.crs.to_epsg() == 32634


# ----------------------------------------------------------------------------------------------------------------
# Pixel scenes in GeoPackages, overlay
# ----------------------------------------------------------------------------------------------------------------
def test_pixel_scene_geopackage_has_a_pixel_crs_and_no_warning(tmp_path):
    """A PNG scene's GeoPackages (its own and the region's) carry the engineering CRS 'scene pixels' in pixel units,
    and writing them raises no warning (pyogrio's "'crs' was not provided" came on every PNG scene)."""
    import geopandas as gpd
    import pyproj
    paths = write_scenes(tmp_path / 'in')[:1]
    inferencer, _ = blob_inferencer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        infer_region(inferencer, paths, str(tmp_path / 'out'), log=quiet)
    assert not [w for w in caught if 'crs' in str(w.message).lower()], [str(w.message) for w in caught]
    for gpkg in (tmp_path / 'out' / 'scenes' / 's0' / 's0.gpkg', tmp_path / 'out' / 'region' / 'region.gpkg'):
        frame = gpd.read_file(gpkg, engine='pyogrio')
        assert frame.crs.name == 'scene pixels' and frame.crs == pyproj.CRS.from_wkt(PIXEL_CRS_WKT)
        assert frame.crs.axis_info[0].unit_name == 'pixel' and frame.total_bounds[2] <= 400


def test_overlay_outlines_in_class_colours_with_a_legend_and_scores(tmp_path):
    """Outlines, not fills: the outline pixels of a known object are its class colour, its inside keeps the scene's
    pixels; a legend panel on the right names the classes present with their colour; --overlay-scores writes text."""
    import cv2
    import matplotlib

    from mmdet_custom.apis.scene import SceneDetectionsBuilder, SceneReader, merge_scene_detections
    from mmdet_custom.apis.scene.writers import LEGEND_MARGIN, class_palette, pixel_polygons, write_overlay
    image = np.full((200, 300, 3), 90, np.uint8)
    cv2.imwrite(str(tmp_path / 'a.png'), image)
    mask = np.zeros((1, 200, 300), bool)
    mask[0, 50:100, 60:160] = True
    builder = SceneDetectionsBuilder(200, 300, np.array([[0, 0, 300, 200]]))
    builder.add(0, [[60, 50, 160, 100]], [0.87], [HARBOR], mask)
    dets, _ = merge_scene_detections(builder.build())
    palette = class_palette(len(ISAID_CLASSES))
    # colours the eye tells apart (not iSAID's encoding palette of dark blues): the first ten are tab10's, all differ
    assert palette[:10] == [tuple(round(255 * c) for c in rgb) for rgb in matplotlib.colormaps['tab10'].colors]
    assert len(set(palette)) == len(ISAID_CLASSES) and max(max(c) for c in palette) > 200
    r, g, b = palette[HARBOR]
    pictures = {}
    for scores in (False, True):
        with SceneReader(str(tmp_path / 'a.png')) as reader:
            write_overlay(str(tmp_path / f'o{scores}.png'), reader, dets, pixel_polygons(dets), palette,
                          classes=ISAID_CLASSES, scores=scores)
        pictures[scores] = cv2.imread(str(tmp_path / f'o{scores}.png'))
    plain = pictures[False]
    assert plain.shape[0] == 200 and plain.shape[1] > 300 + 100   # the scene at scale 1, then the legend
    for y, x in ((50, 100), (75, 60), (99, 120), (75, 159)):       # on the outline (top, left, bottom, right)
        assert plain[y, x].tolist() == [b, g, r], (y, x)
    assert plain[75, 110].tolist() == [90, 90, 90] and plain[20, 20].tolist() == [90, 90, 90]  # no fill
    legend = plain[:, 300:]
    swatch = legend[LEGEND_MARGIN + 3, LEGEND_MARGIN + 3]
    assert swatch.tolist() == [b, g, r]
    assert (legend[LEGEND_MARGIN:LEGEND_MARGIN + 14, 30:] > 200).any()  # the class name, in white
    above = (slice(30, 49), slice(60, 100))                             # the score, above the top-left corner
    assert np.array_equal(plain[above], np.full_like(plain[above], 90))
    assert not np.array_equal(pictures[True][above], plain[above])
    assert np.array_equal(pictures[True][:, 300:], legend)


# ----------------------------------------------------------------------------------------------------------------
# The command line in several processes (random-init R18 Mask R-CNN)
# ----------------------------------------------------------------------------------------------------------------
def _cli(config, ckpt, inputs, out, *extra):
    # 512 px windows: 8 windows over the six scenes (the smoke config resizes any window to 256 px)
    return [sys.executable, os.path.join(REPO, 'tools', 'infer_scene.py'), config, ckpt, *inputs, '--out-dir',
            str(out), '--device', 'cpu', '--threads', '1', '--num-workers', '0', '--score-thr', '0.0',
            '--window', '512', '--overlap', str(OVERLAP), '--no-progress', '--overlay-max-side', '256',
            '--cfg-options', 'model.test_cfg.rcnn.max_per_img=10', *extra]


@pytest.mark.slow
def test_cli_two_shards_and_a_killed_run_give_the_outputs_of_one_process(tmp_path, random_r18):  # noqa: F811
    """Six scenes listed in a text file: 1 process; 2 processes at once (--shard 0/2 and 1/2); and a process killed
    (SIGKILL) after its first scene, then rerun (the complete scenes skipped): the same region outputs."""
    config, ckpt = random_r18
    paths = write_scenes(tmp_path / 'in')
    (tmp_path / 'scenes.txt').write_text('\n'.join(paths) + '\n')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    listed = [str(tmp_path / 'scenes.txt')]

    def run(cmd):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out = run(_cli(config, ckpt, listed, tmp_path / 'one'))
    assert out.strip().splitlines()[-1].startswith(f'written to {tmp_path / "one"}: manifest.json, scenes/ (6 scenes)')
    expected = read_region(tmp_path / 'one')
    assert len(expected[0]) > 0

    procs = [subprocess.Popen(_cli(config, ckpt, listed, tmp_path / 'two', '--shard', f'{r}/2'), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert read_region(tmp_path / 'two')[:3] == expected[:3]
    records = [json.loads((tmp_path / 'two' / 'scenes' / f's{k}' / 'scene.json').read_text()) for k in range(6)]
    assert sorted(r['rank'] for r in records) == [0, 0, 0, 1, 1, 1]

    killed = subprocess.Popen(_cli(config, ckpt, listed, tmp_path / 'killed'), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((tmp_path / 'killed').glob('scenes/*/scene.json')) and killed.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    complete = len(list((tmp_path / 'killed').glob('scenes/*/scene.json')))
    assert 1 <= complete < 6 and not (tmp_path / 'killed' / 'region').exists()
    out = run(_cli(config, ckpt, listed, tmp_path / 'killed'))
    assert f'{complete} already complete (skipped), {6 - complete} to run' in out
    assert read_region(tmp_path / 'killed')[:3] == expected[:3]
