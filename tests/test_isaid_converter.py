"""iSAID converter: devkit windows, patches and COCO json from the real devkit samples, exact masks, filters, json
input, errors, the command line (no torch, exit 2), refusals and interrupted reruns (a killed run leaves the
previous output whole).

Real samples (../shared/data/isaid_devkit): train P0005 (W x H = 884 x 977), val P0003 (1147 x 1023, holds a
storage tank), test P0006 (1054 x 1529, image only). Source masks are read here with PIL (the converter uses cv2).
Parity with the devkit's own output is tested in test_isaid_devkit_parity.py.
"""
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import REPO_ROOT
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmdet_custom.converters.isaid import (
    PAUSE_ENV,
    ISAIDConversionError,
    convert_isaid,
    format_summary,
    mask_to_polygons,
    parse_class_spec,
    parse_classes,
    parse_palette,
    sliding_windows,
)
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES, ISAID_PALETTE

CLI = REPO_ROOT / 'tools' / 'dataset_converters' / 'isaid.py'
SAMPLES = {'train': 'P0005', 'val': 'P0003'}
# P0005 is 977 rows x 884 columns, P0003 1023 x 1147: two windows per axis at 800/200 (stride 600), the second
# shifted back inside: rows 977 - 800 = 177, columns 884 - 800 = 84 (P0005); rows 223, columns 347 (P0003).
P0005_WINDOWS = [(0, 800, 0, 800), (0, 800, 84, 884), (177, 977, 0, 800), (177, 977, 84, 884)]
P0003_WINDOWS = [(0, 800, 0, 800), (0, 800, 347, 1147), (223, 1023, 0, 800), (223, 1023, 347, 1147)]
# P0006 is 1529 rows x 1054 columns: rows 0, 600, then 1200 + 800 > 1529 -> 729; columns 0, 254.
P0006_WINDOWS = [(y, y + 800, x, x + 800) for y in (0, 600, 729) for x in (0, 254)]
# Area tolerance of polygon masks against the source pixel counts: polygons trace the pixel borders, so the
# rasterised mask matches exactly on these samples; 1% (or 1 px) leaves room for other pycocotools/cv2 builds.
AREA_RTOL = 0.01


def _codes(path):
    rgb = np.asarray(Image.open(path).convert('RGB')).astype(np.int64)
    return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]


def _source(raw_dir, split):
    """(image, instance ids, class name per instance id) of a sample, read independently of the converter."""
    stem = Path(raw_dir) / split / 'images' / SAMPLES[split]
    image = np.asarray(Image.open(f'{stem}.png'))
    ids = _codes(f'{stem}_instance_id_RGB.png')
    colors = _codes(f'{stem}_instance_color_RGB.png')
    by_code = {r * 65536 + g * 256 + b: name for name, (r, g, b) in zip(ISAID_CLASSES, ISAID_PALETTE)}
    names = {int(i): by_code[int(colors[ids == i][0])] for i in np.unique(ids) if i}
    return image, ids, names


def _load(out_dir, split):
    return COCO(str(Path(out_dir) / 'annotations' / f'instances_{split}.json'))


def _no_temp_left(out_dir):
    """Temporary files or folders inside ``out_dir`` or beside it (``atomic_dir``'s ``.<name>.tmp-*``)."""
    out_dir = Path(out_dir)
    inside = [p for p in out_dir.rglob('*') if '.tmp' in p.name] if out_dir.exists() else []
    beside = list(out_dir.parent.glob(f'.{out_dir.name}.*'))
    return [str(p) for p in inside + beside]


# ----------------------------------------------------------------------------------------------------------------
# Windows
# ----------------------------------------------------------------------------------------------------------------
def test_sliding_windows_devkit_samples():
    assert sliding_windows(977, 884) == P0005_WINDOWS
    assert sliding_windows(1023, 1147, 800, 200) == P0003_WINDOWS
    assert sliding_windows(1529, 1054) == P0006_WINDOWS


def test_sliding_windows_small_patches():
    # 256 / 56 -> stride 200. Rows of P0005 (977): 0, 200, 400, 600 (600 + 256 = 856 < 977), then 800 + 256
    # crosses the border -> 977 - 256 = 721. Columns (884): 0, 200, 400, 600, then 884 - 256 = 628.
    windows = sliding_windows(977, 884, patch_size=256, overlap=56)
    rows, cols = [0, 200, 400, 600, 721], [0, 200, 400, 600, 628]
    assert windows == [(y, y + 256, x, x + 256) for y in rows for x in cols]
    # P0003 at 512 / 0: rows 0, 511 (1023 - 512), columns 0, 512, 635 (1147 - 512)
    assert sliding_windows(1023, 1147, 512, 0) == [(y, y + 512, x, x + 512) for y in (0, 511) for x in (0, 512, 635)]


def test_sliding_windows_edge_cases():
    assert sliding_windows(500, 300) == [(0, 500, 0, 300)]  # smaller than a patch: kept whole
    assert sliding_windows(800, 800) == [(0, 800, 0, 800)]
    # a side <= 800: kept whole as the devkit does (changed on purpose: this cut 2 windows of 500 x 800 before)
    assert sliding_windows(500, 1000) == [(0, 500, 0, 1000)]
    # 1400 = 600 + 800: the second window ends exactly at the border; 1300: it is shifted to 500 (listed once)
    assert sliding_windows(900, 1400) == [(y, y + 800, x, x + 800) for y in (0, 100) for x in (0, 600)]
    assert sliding_windows(900, 1300) == [(y, y + 800, x, x + 800) for y in (0, 100) for x in (0, 500)]
    for bad in (dict(overlap=800), dict(overlap=-1), dict(patch_size=0)):
        with pytest.raises(ValueError):
            sliding_windows(100, 100, **{'patch_size': 800, 'overlap': 200, **bad})


# ----------------------------------------------------------------------------------------------------------------
# The real devkit samples at the default 800 / 200
# ----------------------------------------------------------------------------------------------------------------
def test_patch_files_and_images(isaid_converted, isaid_raw_dir):
    out_dir, summary = isaid_converted
    for split, stem, windows in (('train', 'P0005', P0005_WINDOWS), ('val', 'P0003', P0003_WINDOWS),
                                 ('test', 'P0006', P0006_WINDOWS)):
        names = ['{}_{}_{}_{}_{}.png'.format(stem, *w) for w in windows]
        assert sorted(os.listdir(out_dir / split / 'images')) == sorted(names)
        coco = _load(out_dir, split)
        imgs = coco.loadImgs(coco.getImgIds())
        assert sorted(img['file_name'] for img in imgs) == sorted(names)
        for img in imgs:
            y0, y1, x0, x1 = img['window']
            assert (img['height'], img['width'], img['source_file']) == (y1 - y0, x1 - x0, f'{stem}.png')
        assert summary[split]['patches'] == len(windows)
        # categories by name in the devkit's order, fixed ids 1..15
        assert coco.dataset['categories'] == [dict(id=i + 1, name=n) for i, n in enumerate(ISAID_CLASSES)]
        if split != 'test':
            assert summary[split]['source'] == 'masks'
            assert min(coco.getAnnIds()) == 1  # pycocotools treats annotation id 0 as unmatched
    # the storage tank of P0003 (403 px near rows 223..800, columns 347..800) lies in all four overlapping windows
    assert summary['val']['instances_per_class']['storage_tank'] == 4
    assert summary['train']['instances_per_class']['storage_tank'] == 0
    # patch pixels are the source crop
    full = np.asarray(Image.open(isaid_raw_dir / 'val' / 'images' / 'P0003.png'))
    patch = np.asarray(Image.open(out_dir / 'val' / 'images' / 'P0003_223_1023_347_1147.png'))
    np.testing.assert_array_equal(patch, full[223:1023, 347:1147])
    # the test split: images only
    test = _load(out_dir, 'test')
    assert len(test.getImgIds()) == 6 and len(test.getAnnIds()) == 0
    assert summary['test']['source'] == 'images'
    assert not _no_temp_left(out_dir)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_instances_match_source_masks(isaid_exact, isaid_raw_dir, split):
    """``--masks exact``: every instance visible in a window, rasterising back to exactly its pixels."""
    out_dir, summary = isaid_exact
    _, ids, names = _source(isaid_raw_dir, split)
    coco = _load(out_dir, split)
    expected_per_class = dict.fromkeys(ISAID_CLASSES, 0)
    for img in coco.loadImgs(coco.getImgIds()):
        y0, y1, x0, x1 = img['window']
        window_ids = ids[y0:y1, x0:x1]
        present = {int(i) for i in np.unique(window_ids) if i}
        for i in present:
            expected_per_class[names[i]] += 1
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        assert len(anns) == len(present)  # one annotation per instance visible in the window
        matched = set()
        for ann in anns:
            # every polygon vertex inside the patch
            for poly in ann['segmentation']:
                xy = np.asarray(poly).reshape(-1, 2)
                assert len(poly) >= 6 and xy.min() >= 0
                assert xy[:, 0].max() <= img['width'] and xy[:, 1].max() <= img['height']
            mask = coco.annToMask(ann).astype(bool)
            assert mask.shape == (img['height'], img['width'])
            # area and bbox are those of the mask
            assert ann['area'] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            # the source instance under the mask, its class and its pixel count in the window
            values, counts = np.unique(window_ids[mask], return_counts=True)
            source_id = int(values[counts.argmax()])
            matched.add(source_id)
            assert coco.loadCats(ann['category_id'])[0]['name'] == names[source_id]
            source_area = int((window_ids == source_id).sum())
            assert abs(ann['area'] - source_area) <= max(1, AREA_RTOL * source_area)
            source_mask = window_ids == source_id
            np.testing.assert_array_equal(mask, source_mask)  # no holes in these samples: exact
        assert matched == present
    assert summary[split]['instances_per_class'] == expected_per_class
    json_counts = dict.fromkeys(ISAID_CLASSES, 0)
    for ann in coco.dataset['annotations']:
        json_counts[ISAID_CLASSES[ann['category_id'] - 1]] += 1
    assert json_counts == expected_per_class


def test_rle_output_is_exact(isaid_raw_dir, tmp_path):
    summary = convert_isaid(isaid_raw_dir, tmp_path, splits=['val'], patch_size=512, overlap=0, rle=True,
                            masks='exact', area_threshold=0, show_progress=False)
    _, ids, names = _source(isaid_raw_dir, 'val')
    coco = _load(tmp_path, 'val')
    assert len(coco.getImgIds()) == 6 == summary['val']['patches']
    for ann in coco.dataset['annotations']:
        img = coco.imgs[ann['image_id']]
        y0, y1, x0, x1 = img['window']
        assert isinstance(ann['segmentation']['counts'], str)
        mask = coco.annToMask(ann).astype(bool)
        source_id = int(np.unique(ids[y0:y1, x0:x1][mask])[0])
        np.testing.assert_array_equal(mask, ids[y0:y1, x0:x1] == source_id)
        assert ann['area'] == mask.sum() and ann['bbox'] == list(mask_utils.toBbox(ann['segmentation']))


# ----------------------------------------------------------------------------------------------------------------
# Train filters
# ----------------------------------------------------------------------------------------------------------------
def test_train_filters(isaid_raw_dir, tmp_path):
    kw = dict(splits=['train'], patch_size=128, overlap=0, show_progress=False)
    base = convert_isaid(isaid_raw_dir, tmp_path / 'all', max_boxes=None, max_empty_fraction=None, **kw)['train']
    # 977 x 884 at 128 / 0: rows 0..768 step 128 then 849 (8), columns 0..640 step 128 then 756 (7)
    assert base['patches'] == base['patches_total'] == 56
    coco = _load(tmp_path / 'all', 'train')
    boxes = sorted(len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds())
    num_empty = boxes.count(0)
    assert num_empty == base['empty_patches'] >= 5  # P0005's vehicles leave many 128 px windows empty
    max_boxes = boxes[len(boxes) * 3 // 4]
    crowded = sum(b > max_boxes for b in boxes)
    assert crowded > 0

    # max-boxes only
    s = convert_isaid(isaid_raw_dir, tmp_path / 'boxes', max_boxes=max_boxes, max_empty_fraction=None, **kw)['train']
    assert s['dropped_max_boxes'] == crowded and s['patches'] == 56 - crowded
    coco = _load(tmp_path / 'boxes', 'train')
    assert max(len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()) <= max_boxes
    assert len(os.listdir(tmp_path / 'boxes' / 'train' / 'images')) == 56 - crowded

    # both: empty patches at most 20% of the kept patches, chosen with the seed
    num_full = 56 - crowded - num_empty
    keep_empty = min(num_empty, int(0.2 * num_full / 0.8))  # largest k with k <= 0.2 * (num_full + k)
    runs = []
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        out = tmp_path / name
        s = convert_isaid(isaid_raw_dir, out, max_boxes=max_boxes, max_empty_fraction=0.2, seed=seed, **kw)['train']
        assert (s['dropped_max_boxes'], s['dropped_empty']) == (crowded, num_empty - keep_empty)
        assert s['empty_patches'] == keep_empty and s['patches'] == num_full + keep_empty
        assert s['empty_patches'] <= 0.2 * s['patches']
        coco = _load(out, 'train')
        assert sum(not coco.getAnnIds(imgIds=i) for i in coco.getImgIds()) == keep_empty
        runs.append((out / 'annotations' / 'instances_train.json').read_bytes())
    assert runs[0] == runs[1]  # deterministic for a seed

    # no empty patch at all
    s = convert_isaid(isaid_raw_dir, tmp_path / 'none', max_boxes=None, max_empty_fraction=0, **kw)['train']
    assert s['empty_patches'] == 0 and s['dropped_empty'] == num_empty


def test_val_and_test_never_filtered(isaid_raw_dir, tmp_path):
    summary = convert_isaid(isaid_raw_dir, tmp_path, splits=['val', 'test'], patch_size=256, overlap=0,
                            max_boxes=1, max_empty_fraction=0, show_progress=False)
    # val 1023 x 1147 -> 4 x 5 windows; test 1529 x 1054 -> 6 x 5
    assert summary['val']['patches'] == 20 and summary['val']['empty_patches'] > 0
    assert max(len(_load(tmp_path, 'val').getAnnIds(imgIds=i)) for i in range(1, 21)) > 1
    assert summary['test']['patches'] == 30
    for split in ('val', 'test'):
        assert summary[split]['dropped_max_boxes'] == summary[split]['dropped_empty'] == 0


# ----------------------------------------------------------------------------------------------------------------
# Official-style json input
# ----------------------------------------------------------------------------------------------------------------
def _write_png(path, rgb):
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(path)


def test_json_input_by_hand(tmp_path):
    raw = tmp_path / 'raw'
    (raw / 'train' / 'images').mkdir(parents=True)
    (raw / 'train' / 'Annotations').mkdir()
    _write_png(raw / 'train' / 'images' / 'P0100.png', np.zeros((200, 300, 3)))
    # categories named as in the devkit but with their own ids (the official train and val jsons differ)
    coco = dict(
        images=[dict(id=7, file_name='P0100.png', height=200, width=300)],
        categories=[dict(id=1, name='Small_Vehicle'), dict(id=2, name='storage_tank')],
        annotations=[
            dict(id=1, image_id=7, category_id=1, iscrowd=0, segmentation=[[90, 50, 140, 50, 140, 110, 90, 110]]),
            dict(id=2, image_id=7, category_id=2, iscrowd=0, segmentation=[[250, 150, 290, 150, 290, 190]]),
        ])
    (raw / 'train' / 'Annotations' / 'iSAID_train.json').write_text(json.dumps(coco))
    summary = convert_isaid(raw, tmp_path / 'out', splits=['train'], patch_size=128, overlap=28,
                            max_boxes=None, max_empty_fraction=None, show_progress=False)['train']
    assert summary['source'] == 'json'
    # 200 x 300 at 128 / 28 (stride 100): rows 0, 72; columns 0, 100, 172
    out = _load(tmp_path / 'out', 'train')
    windows = {tuple(img['window']): img['id'] for img in out.dataset['images']}
    assert sorted(windows) == [(y, y + 128, x, x + 128) for y in (0, 72) for x in (0, 100, 172)]
    small, tank = ISAID_CLASSES.index('Small_Vehicle') + 1, ISAID_CLASSES.index('storage_tank') + 1

    def anns(window):
        return sorted((a['category_id'], a['bbox'], a['area'])
                      for a in out.loadAnns(out.getAnnIds(imgIds=windows[window])))

    # the rectangle x 90..140, y 50..110 clipped to each window (patch coordinates)
    assert anns((0, 128, 0, 128)) == [(small, [90, 50, 38, 60], 38 * 60)]
    assert anns((0, 128, 100, 228)) == [(small, [0, 50, 40, 60], 40 * 60)]
    assert anns((72, 200, 0, 128)) == [(small, [90, 0, 38, 38], 38 * 38)]
    assert anns((72, 200, 100, 228)) == [(small, [0, 0, 40, 38], 40 * 38)]
    assert anns((0, 128, 172, 300)) == []
    # the triangle (250,150) (290,150) (290,190) lies only in the bottom-right window: x - 172, y - 72
    (tri, ) = out.loadAnns(out.getAnnIds(imgIds=windows[(72, 200, 172, 300)]))
    assert tri['category_id'] == tank
    vertices = sorted(map(tuple, np.reshape(tri['segmentation'][0], (-1, 2)).tolist()))
    assert vertices == [(78, 78), (118, 78), (118, 118)]  # in whichever order and start shapely gives
    # pixel centres on the hypotenuse may go either way: area 780..820, box 39..40 px
    assert abs(tri['area'] - 40 * 40 / 2) <= 20
    np.testing.assert_allclose(tri['bbox'], [78, 78, 40, 40], atol=1)
    assert summary['instances_per_class']['Small_Vehicle'] == 4 and summary['instances_per_class']['storage_tank'] == 1

    # an unknown category name is an error naming the json and the category
    coco['categories'][1]['name'] = 'store_tank'
    (raw / 'train' / 'Annotations' / 'iSAID_train.json').write_text(json.dumps(coco))
    with pytest.raises(ISAIDConversionError, match=r"iSAID_train\.json.*'store_tank'"):
        convert_isaid(raw, tmp_path / 'bad', splits=['train'], show_progress=False)
    assert not (tmp_path / 'bad').exists()


def test_json_input_matches_masks(isaid_raw_dir, tmp_path):
    """An official-style json made from P0003's masks (full-image polygons) gives the patches the masks give."""
    raw = tmp_path / 'raw'
    (raw / 'val' / 'images').mkdir(parents=True)
    shutil.copy(isaid_raw_dir / 'val' / 'images' / 'P0003.png', raw / 'val' / 'images')
    _, ids, names = _source(isaid_raw_dir, 'val')
    cat_ids = {name: 100 - k for k, name in enumerate(ISAID_CLASSES)}  # ids unrelated to the devkit order
    annotations = [dict(id=n, image_id=1, category_id=cat_ids[names[i]], iscrowd=0,
                        segmentation=mask_to_polygons(ids == i)) for n, i in enumerate(sorted(names), start=1)]
    coco = dict(images=[dict(id=1, file_name='P0003.png', height=1023, width=1147)], annotations=annotations,
                categories=[dict(id=v, name=k) for k, v in cat_ids.items()])
    (raw / 'val' / 'iSAID_val.json').write_text(json.dumps(coco))
    from_json = convert_isaid(raw, tmp_path / 'json', splits=['val'], show_progress=False)['val']
    from_masks = convert_isaid(isaid_raw_dir, tmp_path / 'masks', splits=['val'], masks='exact',
                               show_progress=False)['val']
    assert from_json['source'] == 'json'
    assert from_json['instances_per_class'] == from_masks['instances_per_class']
    a, b = _load(tmp_path / 'json', 'val'), _load(tmp_path / 'masks', 'val')
    for img_a, img_b in zip(a.dataset['images'], b.dataset['images']):
        assert img_a['file_name'] == img_b['file_name']
        areas_a = sorted(x['area'] for x in a.loadAnns(a.getAnnIds(imgIds=img_a['id'])))
        areas_b = sorted(x['area'] for x in b.loadAnns(b.getAnnIds(imgIds=img_b['id'])))
        assert len(areas_a) == len(areas_b)
        np.testing.assert_allclose(areas_a, areas_b, rtol=AREA_RTOL, atol=1)


# ----------------------------------------------------------------------------------------------------------------
# Other datasets in the same encoding, the CLI, bad input
# ----------------------------------------------------------------------------------------------------------------
def _synthetic_raw(root, split='train', colors=((0, 0, 127), (0, 63, 63))):
    """A 60 x 90 image with two instances: ids 5 (rows 10..19, columns 10..29) and 70000 (rows 30..49, 50..79)."""
    folder = root / split / 'images'
    folder.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3))
    color, idmap = np.zeros((60, 90, 3)), np.zeros((60, 90, 3))
    color[10:20, 10:30], idmap[10:20, 10:30] = colors[0], (0, 0, 5)
    color[30:50, 50:80], idmap[30:50, 50:80] = colors[1], (1, 17, 112)  # 1*65536 + 17*256 + 112 = 70000
    _write_png(folder / 'P0001.png', image)
    _write_png(folder / 'P0001_instance_color_RGB.png', color)
    _write_png(folder / 'P0001_instance_id_RGB.png', idmap)
    return folder


def test_custom_classes_and_palette(tmp_path):
    _synthetic_raw(tmp_path / 'raw', colors=((10, 20, 30), (200, 100, 50)))
    s = convert_isaid(tmp_path / 'raw', tmp_path / 'out', splits=['train'], classes=['boat', 'tank'],
                      palette=[(10, 20, 30), (200, 100, 50)], show_progress=False)['train']
    assert s['patches'] == 1 and s['instances_per_class'] == {'boat': 1, 'tank': 1}
    coco = _load(tmp_path / 'out', 'train')
    assert [c['name'] for c in coco.dataset['categories']] == ['boat', 'tank']
    assert sorted((a['category_id'], a['area'], tuple(a['bbox'])) for a in coco.dataset['annotations']) == [
        (1, 200, (10, 10, 20, 10)), (2, 600, (50, 30, 30, 20))]
    with pytest.raises(ValueError, match='palette'):  # custom classes need their colours
        convert_isaid(tmp_path / 'raw', tmp_path / 'x', splits=['train'], classes=['boat', 'tank'])


def test_class_spec_parsing(tmp_path):
    assert parse_classes('boat, tank') == ('boat', 'tank')
    assert parse_palette('10,20,30;200,100,50') == [(10, 20, 30), (200, 100, 50)]
    assert parse_palette('[[10, 20, 30]]') == [(10, 20, 30)]
    cfg = tmp_path / 'meta.py'
    cfg.write_text("metainfo = dict(classes=('boat', 'tank'), palette=[(10, 20, 30), (200, 100, 50)])\n")
    assert parse_class_spec(str(cfg)) == (('boat', 'tank'), [(10, 20, 30), (200, 100, 50)])
    names = tmp_path / 'names.json'
    names.write_text('["boat", "tank"]')
    assert parse_class_spec(str(names), '1,2,3;4,5,6') == (('boat', 'tank'), [(1, 2, 3), (4, 5, 6)])
    assert parse_class_spec(str(names)) == (('boat', 'tank'), None)


def test_cli(tmp_path, capsys, monkeypatch):
    _synthetic_raw(tmp_path / 'raw', colors=((10, 20, 30), (200, 100, 50)))
    cfg = tmp_path / 'meta.json'
    cfg.write_text(json.dumps(dict(metainfo=dict(classes=['boat', 'tank'], palette=[[10, 20, 30], [200, 100, 50]]))))
    argv = ['isaid.py', str(tmp_path / 'raw'), str(tmp_path / 'out'), '--splits', 'train', '--patch-size', '64',
            '--overlap', '16', '--max-boxes', '0', '--max-empty-fraction', '1', '--rle', '--classes', str(cfg),
            '--no-progress']
    monkeypatch.setattr('sys.argv', argv)
    with pytest.raises(SystemExit) as info:  # run_cli exits with the status
        runpy.run_path(str(CLI), run_name='__main__')
    assert info.value.code == 0
    assert 'boat' in capsys.readouterr().out
    coco = _load(tmp_path / 'out', 'train')
    # 60 x 90 at 64 / 16: a side (60) <= 64, so kept whole under its own name, as the devkit does (changed on
    # purpose: this gave 'P0001_0_60_0_64.png' and 'P0001_0_60_26_90.png' before)
    assert [img['file_name'] for img in coco.dataset['images']] == ['P0001.png']
    assert all(isinstance(a['segmentation'], dict) for a in coco.dataset['annotations'])


@pytest.mark.parametrize('masks, expected', [('exact', ('Small_Vehicle', 1, 'storage_tank', 1)),
                                             ('devkit', ('Small_Vehicle', 0, 'storage_tank', 2))])
def test_mixed_colours(tmp_path, masks, expected):
    """An instance with pixels of two class colours: ``exact`` takes the majority (as before); the devkit (default,
    changed on purpose) takes the colour with the smallest R + 256 G + 65536 B (cityscapesScripts' getLabelID takes
    np.unique(...)[0]): storage_tank (0, 63, 63) -> 4144896 < Small_Vehicle (0, 0, 127) -> 8323072."""
    folder = _synthetic_raw(tmp_path / 'raw')
    color = np.array(Image.open(folder / 'P0001_instance_color_RGB.png'))
    color[10, 10:13] = (0, 63, 63)  # 3 of the 200 pixels of instance 5 say storage_tank
    _write_png(folder / 'P0001_instance_color_RGB.png', color)
    s = convert_isaid(tmp_path / 'raw', tmp_path / 'out', masks=masks, show_progress=False)['train']
    assert s['mixed_colour_instances'] == 1
    assert (s['instances_per_class'][expected[0]], s['instances_per_class'][expected[2]]) == expected[1::2]


def _missing_mask(folder):
    (folder / 'P0001_instance_id_RGB.png').unlink()
    return r'mask not found: .*P0001_instance_id_RGB\.png'


def _unknown_colour(folder):
    color = np.array(Image.open(folder / 'P0001_instance_color_RGB.png'))
    color[12, 15] = (1, 2, 3)
    _write_png(folder / 'P0001_instance_color_RGB.png', color)
    return r'colour \(1, 2, 3\) at pixel \(x=15, y=12\) of .*P0001_instance_color_RGB\.png maps to no class'


def _background_colour_in_instance(folder):
    color = np.array(Image.open(folder / 'P0001_instance_color_RGB.png'))
    color[40, 60] = 0
    _write_png(folder / 'P0001_instance_color_RGB.png', color)
    return r'colour \(0, 0, 0\) .*at pixel \(x=60, y=40\) of .*P0001_instance_color_RGB\.png lies inside instance 70000'


def _size_mismatch(folder):
    _write_png(folder / 'P0001_instance_id_RGB.png', np.zeros((60, 91, 3)))
    return r'size mismatch: .*P0001_instance_id_RGB\.png is 91x60 .*image .*P0001\.png is 90x60'


@pytest.mark.parametrize('corrupt', [_missing_mask, _unknown_colour, _background_colour_in_instance, _size_mismatch])
def test_bad_input(tmp_path, corrupt):
    _synthetic_raw(tmp_path / 'raw', split='train')
    folder = _synthetic_raw(tmp_path / 'raw', split='val')
    pattern = corrupt(folder)
    out = tmp_path / 'out'
    with pytest.raises(ISAIDConversionError, match=pattern) as info:
        convert_isaid(tmp_path / 'raw', out, splits=['train', 'val'], show_progress=False)
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)
    # the output folder is written whole or not at all (changed on purpose: train, converted first, stayed before)
    assert not out.exists()
    assert not _no_temp_left(out)


def test_failed_run_keeps_previous_output(tmp_path):
    folder = _synthetic_raw(tmp_path / 'raw')
    out = tmp_path / 'out'
    convert_isaid(tmp_path / 'raw', out, splits=['train'], show_progress=False)
    before = (out / 'annotations' / 'instances_train.json').read_bytes()
    _size_mismatch(folder)
    with pytest.raises(ISAIDConversionError):
        convert_isaid(tmp_path / 'raw', out, splits=['train'], patch_size=32, overlap=0, show_progress=False)
    assert (out / 'annotations' / 'instances_train.json').read_bytes() == before
    assert os.listdir(out / 'train' / 'images') == ['P0001.png']
    assert not _no_temp_left(out)


# ----------------------------------------------------------------------------------------------------------------
# Refusals, reported pixels, 16-bit ids, RLE sizes, empty output, reruns, the command line
# ----------------------------------------------------------------------------------------------------------------
def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in Path(root).rglob('*'))


@pytest.mark.parametrize('where', ['same', 'inside', 'around'])
def test_output_overlapping_the_input_is_refused(tmp_path, where):
    raw = tmp_path / 'data' / 'raw'
    _synthetic_raw(raw)
    out = {'same': raw, 'inside': raw / 'train' / 'patches', 'around': tmp_path / 'data'}[where]
    before = _listing(tmp_path)
    with pytest.raises(UserError, match='overlaps the input'):
        convert_isaid(raw, out, show_progress=False)
    assert _listing(tmp_path) == before  # nothing written, moved or deleted


def test_foreign_output_folder_is_refused(tmp_path):
    _synthetic_raw(tmp_path / 'raw')
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'notes.txt').write_text('mine')
    with pytest.raises(UserError, match='did not write'):
        convert_isaid(tmp_path / 'raw', tmp_path / 'out', show_progress=False)
    assert os.listdir(tmp_path / 'out') == ['notes.txt']


def test_coloured_pixels_without_instance_are_reported(tmp_path):
    folder = _synthetic_raw(tmp_path / 'raw')
    color = np.array(Image.open(folder / 'P0001_instance_color_RGB.png'))
    color[55, 3:7] = (0, 0, 127)  # 4 coloured pixels where the id mask says 0
    color[57, 1] = (0, 63, 63)
    _write_png(folder / 'P0001_instance_color_RGB.png', color)
    summary = convert_isaid(tmp_path / 'raw', tmp_path / 'out', show_progress=False)
    s = summary['train']
    assert s['unassigned_pixels'] == [dict(file=str(folder / 'P0001_instance_id_RGB.png'), pixels=5, first=[3, 55])]
    assert s['instances'] == 2  # the two real instances; the orphan pixels are left out, as the devkit does
    text = format_summary(summary)
    assert 'warning: train: 5 coloured pixels in 1 id masks have instance id 0' in text
    assert 'P0001_instance_id_RGB.png: 5 px, first at (x=3, y=55)' in text


@pytest.mark.parametrize('layout', ['grey', 'rgb'])
def test_16bit_id_masks_are_read_as_16bit(tmp_path, layout):
    folder = _synthetic_raw(tmp_path / 'raw')
    ids = np.zeros((60, 90), np.uint16)
    ids[10:20, 10:30], ids[30:50, 50:80] = 256, 300  # both 1 when cut to 8 bits (the issue: objects merged/lost)
    if layout == 'rgb':
        ids = np.stack([ids, np.zeros_like(ids), np.where(ids > 0, 40000, 0).astype(np.uint16)], -1)  # B, G, R
    assert cv2.imwrite(str(folder / 'P0001_instance_id_RGB.png'), ids)
    assert cv2.imread(str(folder / 'P0001_instance_id_RGB.png'), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    s = convert_isaid(tmp_path / 'raw', tmp_path / 'out', show_progress=False)['train']
    assert s['instances'] == 2 and s['instances_per_class']['Small_Vehicle'] == 1
    areas = sorted(a['area'] for a in _load(tmp_path / 'out', 'train').dataset['annotations'])
    assert areas == [200, 600]


def test_rle_of_the_wrong_size_is_refused(tmp_path):
    raw = tmp_path / 'raw'
    (raw / 'val' / 'images').mkdir(parents=True)
    _write_png(raw / 'val' / 'images' / 'P0100.png', np.zeros((200, 300, 3)))
    mask = np.zeros((100, 300), np.uint8)  # the image is 200 rows high
    mask[10:20, 10:20] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle['counts'] = rle['counts'].decode('ascii')
    coco = dict(images=[dict(id=1, file_name='P0100.png', height=200, width=300)],
                categories=[dict(id=3, name='ship')],
                annotations=[dict(id=42, image_id=1, category_id=3, iscrowd=0, segmentation=rle)])
    (raw / 'val' / 'iSAID_val.json').write_text(json.dumps(coco))
    with pytest.raises(ISAIDConversionError,
                       match=r'iSAID_val\.json: annotation id 42: RLE `segmentation.size` \[100, 300\] differs'):
        convert_isaid(raw, tmp_path / 'out', show_progress=False)
    assert not (tmp_path / 'out').exists()
    # the right size converts (devkit tracing of an RLE mask): box 10 x 10, area 100
    rle = mask_utils.encode(np.asfortranarray(np.pad(mask, ((0, 100), (0, 0)))))
    coco['annotations'][0]['segmentation'] = dict(size=[200, 300], counts=rle['counts'].decode('ascii'))
    (raw / 'val' / 'iSAID_val.json').write_text(json.dumps(coco))
    convert_isaid(raw, tmp_path / 'out', show_progress=False)
    (ann, ) = _load(tmp_path / 'out', 'val').dataset['annotations']
    assert (ann['area'], ann['bbox'], ann['category_id']) == (100, [10.0, 10.0, 10.0, 10.0], 1)


def test_all_empty_train_output_warns(tmp_path):
    folder = _synthetic_raw(tmp_path / 'raw')
    _write_png(folder / 'P0001_instance_color_RGB.png', np.zeros((60, 90, 3)))
    _write_png(folder / 'P0001_instance_id_RGB.png', np.zeros((60, 90, 3)))
    summary = convert_isaid(tmp_path / 'raw', tmp_path / 'out', show_progress=False)
    assert summary['train']['instances'] == 0 and summary['train']['patches'] == 1
    assert summary['train']['warnings'] == [
        'train: no instance in any of its 1 written patches: a model trained or evaluated on it learns or measures '
        'nothing; check the masks and --classes/--palette']
    assert 'warning: train: no instance' in format_summary(summary)


def test_splits_present_are_converted(tmp_path):
    _synthetic_raw(tmp_path / 'raw', split='val')  # a root holding only val/
    summary = convert_isaid(tmp_path / 'raw', tmp_path / 'out', show_progress=False)
    assert list(summary) == ['val'] and summary['val']['patches'] == 1
    assert summary.skipped_splits == {s: f'no {s}/images under {tmp_path / "raw"}' for s in ('train', 'test')}
    assert f'train: skipped (no train/images under {tmp_path / "raw"})' in format_summary(summary)
    assert sorted(os.listdir(tmp_path / 'out' / 'annotations')) == ['instances_val.json']
    # a later run of train alone keeps val (splits converted before and not named now stay)
    _synthetic_raw(tmp_path / 'raw', split='train')
    convert_isaid(tmp_path / 'raw', tmp_path / 'out', splits=['train'], show_progress=False)
    assert sorted(os.listdir(tmp_path / 'out' / 'annotations')) == ['instances_train.json', 'instances_val.json']
    with pytest.raises(ISAIDConversionError, match='no split found'):
        convert_isaid(tmp_path / 'out' / 'annotations', tmp_path / 'out2', show_progress=False)


def _cli_env():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop('MMDET_CUSTOM_DEBUG', None)
    return env


@pytest.mark.parametrize('case', ['missing_raw', 'out_is_raw', 'bad_colour'])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, case):
    folder = _synthetic_raw(tmp_path / 'raw')
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    if case == 'missing_raw':
        raw, expected = tmp_path / 'missing', 'raw iSAID folder not found'
    elif case == 'out_is_raw':
        out, expected = raw, 'overlaps the input'
    else:
        expected = _unknown_colour(folder).split(' at pixel')[0].replace('\\', '')
    proc = subprocess.run([sys.executable, str(CLI), str(raw), str(out), '--no-progress'], capture_output=True,
                          text=True, env=_cli_env(), cwd=REPO_ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and expected in lines[0], proc.stderr
    assert 'Traceback' not in proc.stderr


def test_cli_imports_neither_torch_nor_mmdet(tmp_path):
    _synthetic_raw(tmp_path / 'raw', split='val')
    code = ('import runpy, sys; main = runpy.run_path(sys.argv[1])["main"]; main(sys.argv[2:]); '
            'heavy = [m for m in ("torch", "mmdet", "mmengine", "mmcv") if m in sys.modules]; '
            'assert not heavy, heavy; print("light")')
    proc = subprocess.run([sys.executable, '-c', code, str(CLI), str(tmp_path / 'raw'), str(tmp_path / 'out'),
                           '--no-progress'], capture_output=True, text=True, env=_cli_env(), cwd=REPO_ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith('light') and (tmp_path / 'out' / 'annotations' / 'instances_val.json').exists()


def _consistent(out):
    """split -> sorted patch names, after checking that each split's json lists exactly its images folder."""
    names = {}
    for json_path in sorted((Path(out) / 'annotations').glob('instances_*.json')):
        split = json_path.stem[len('instances_'):]
        listed = sorted(img['file_name'] for img in json.loads(json_path.read_text())['images'])
        assert listed == sorted(os.listdir(Path(out) / split / 'images')), split
        names[split] = listed
    return names


def _run_until_paused(argv, point, timeout=120):
    """Start the CLI paused at ``point`` (the test hook) and SIGKILL it there."""
    proc = subprocess.Popen([sys.executable, str(CLI), *argv], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=dict(_cli_env(), **{PAUSE_ENV: point}), cwd=REPO_ROOT)
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stderr:
            if f'paused at {point}' in line:
                break
            assert time.monotonic() < deadline
        else:
            pytest.fail(f'the converter never reached {point} (exit {proc.wait()})')
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize('point', ['train:patches_written', 'val:patches_written', 'before_swap'])
def test_killed_rerun_leaves_the_old_output_whole(tmp_path, point):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    _synthetic_raw(raw, 'train')
    _synthetic_raw(raw, 'val')
    convert_isaid(raw, out, show_progress=False)  # the old output: each 60 x 90 image whole
    old = _consistent(out)
    old_bytes = {p.name: p.read_bytes() for p in (out / 'annotations').iterdir()}
    assert old == {'train': ['P0001.png'], 'val': ['P0001.png']}

    # the rerun with 32 px patches (6 per image) is killed at the dangerous moment: the old output stays whole
    _run_until_paused([str(raw), str(out), '--patch-size', '32', '--overlap', '0', '--no-progress'], point)
    assert _consistent(out) == old
    assert {p.name: p.read_bytes() for p in (out / 'annotations').iterdir()} == old_bytes
    assert _no_temp_left(out)  # the killed run's temporary folder, beside the output

    # the next run completes, cleans the killed run's temporary folder and swaps the new output in whole
    convert_isaid(raw, out, patch_size=32, overlap=0, show_progress=False)
    new = _consistent(out)
    assert len(new['train']) == len(new['val']) == 6 and new != old
    assert not _no_temp_left(out)
