"""The default iSAID conversion against the official devkit's own output, and the devkit's rules on hand-made input.

``../shared/data/isaid_devkit_reference/instancesonly_filtered_{train,val}.json`` were written by the devkit
(CAPTAIN-WHU/iSAID_Devkit ``preprocess/split.py`` then ``preprocess/preprocess.py``) on the shared samples
(train P0005, val P0003). The rules tested on constructed input are read from that code: ``split.py`` cuts an image
only when ``img_H > 800 and img_W > 800`` and skips P1527 / P1530; ``preprocess.py`` drops an instance with any
contour of <= 4 numbers or of area <= 10.
"""
import collections
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mmdet_custom.converters.isaid import DEVKIT_SKIP_IMAGES, convert_isaid, devkit_polygons, sliding_windows
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES, ISAID_PALETTE

# published iSAID numbers are measured on the devkit's masks, so ours must match them: per-instance mask IoU,
# ours vs the devkit's, both rasterised by pycocotools
MIN_IOU = 0.99


@pytest.fixture(scope='module')
def reference(isaid_reference_dir):
    return {split: json.loads((isaid_reference_dir / f'instancesonly_filtered_{split}.json').read_text())
            for split in ('train', 'val')}


@pytest.fixture(scope='module')
def devkit_default(isaid_converted):
    """The session's default conversion of the shared samples (every split found) and its train / val jsons."""
    out, summary = isaid_converted
    coco = {split: json.loads((out / 'annotations' / f'instances_{split}.json').read_text())
            for split in ('train', 'val')}
    return out, summary, coco


def _by_image(coco):
    """file name -> [(class name, bbox, area, segmentation)] in json order."""
    names = {c['id']: c['name'] for c in coco['categories']}
    files = {img['id']: img['file_name'] for img in coco['images']}
    out = {name: [] for name in files.values()}
    for ann in coco['annotations']:
        out[files[ann['image_id']]].append((names[ann['category_id']], ann['bbox'], ann['area'], ann['segmentation']))
    return out


def _rasterise(segmentation, height, width):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))).astype(bool)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_patch_names_match_devkit(devkit_default, reference, split):
    out, summary, coco = devkit_default
    ref = reference[split]
    ordered = [img['file_name'] for img in sorted(ref['images'], key=lambda img: img['id'])]
    assert [img['file_name'] for img in coco[split]['images']] == ordered  # same names, same (natsort) order
    assert sorted(p.name for p in (out / split / 'images').iterdir()) == sorted(ordered)
    assert {(img['height'], img['width']) for img in coco[split]['images']} == {(800, 800)}
    assert summary[split]['masks'] == 'devkit' and summary.skipped_splits == {}


# the reference jsons are the devkit's output on its whole sample splits, restricted to P0005 / P0003: P0005's
# patches are numbered from 16 there (the patches of the sample's earlier train images come first), P0003's from 0.
# Our conversion of P0005 alone numbers from 0.
REFERENCE_FIRST_ID = {'train': 16, 'val': 0}


@pytest.mark.parametrize('split', ['train', 'val'])
def test_image_ids_match_devkit(devkit_default, reference, split):
    """Image ids, not only names: results exported against our json are scored against the devkit's, and an id
    that names another patch there makes a correct prediction a false positive."""
    _, _, coco = devkit_default
    ours = {img['file_name']: img['id'] for img in coco[split]['images']}
    ref = {img['file_name']: img['id'] - REFERENCE_FIRST_ID[split] for img in reference[split]['images']}
    assert ours == ref
    assert sorted(ours.values()) == list(range(4))  # 0..N-1, as the devkit: not 1..N
    # objects per image id: each annotation sits on the same image id in both jsons
    per_image = collections.Counter(a['image_id'] for a in coco[split]['annotations'])
    ref_per_image = collections.Counter(a['image_id'] - REFERENCE_FIRST_ID[split]
                                        for a in reference[split]['annotations'])
    assert per_image == ref_per_image and len(per_image) == 4


def test_results_made_on_our_json_score_against_the_devkit_json(devkit_default, isaid_reference_dir):
    """The offline recipe: results exported with our val json's image ids (here its objects as perfect predictions,
    categories mapped by name), scored against the devkit's own json."""
    from mmdet_custom.evaluation.functional import evaluate_coco_results
    _, _, coco = devkit_default
    ref_path = isaid_reference_dir / 'instancesonly_filtered_val.json'
    ref_ids = {c['name']: c['id'] for c in json.loads(ref_path.read_text())['categories']}
    names = {c['id']: c['name'] for c in coco['val']['categories']}
    results = [dict(image_id=a['image_id'], category_id=ref_ids[names[a['category_id']]], score=1.0, bbox=a['bbox'])
               for a in coco['val']['annotations']]
    assert evaluate_coco_results(str(ref_path), results, ['bbox'])['bbox_mAP'] == 1.0


@pytest.mark.parametrize('split', ['train', 'val'])
def test_instances_match_devkit(devkit_default, reference, split):
    _, summary, coco = devkit_default
    ours, ref = _by_image(coco[split]), _by_image(reference[split])
    assert ours.keys() == ref.keys()
    ious = []
    for file_name, ref_anns in ref.items():
        our_anns = ours[file_name]
        # instances per patch and per class
        assert len(our_anns) == len(ref_anns), file_name
        assert collections.Counter(a[0] for a in our_anns) == collections.Counter(a[0] for a in ref_anns), file_name
        # matched by class + box: same boxes and areas
        ref_by_key = {(name, tuple(bbox)): (area, segm) for name, bbox, area, segm in ref_anns}
        assert len(ref_by_key) == len(ref_anns)  # class + box identify an instance in these patches
        for name, bbox, area, segm in our_anns:
            ref_area, ref_segm = ref_by_key[(name, tuple(bbox))]
            assert area == ref_area
            a, b = _rasterise(segm, 800, 800), _rasterise(ref_segm, 800, 800)
            union = np.count_nonzero(a | b)
            ious.append(np.count_nonzero(a & b) / union if union else 1.0)
        # the devkit's order within a patch (class order, then its instance number) and its very polygons
        assert [(a[0], a[1], a[3]) for a in our_anns] == [(a[0], a[1], a[3]) for a in ref_anns], file_name
    assert min(ious) >= MIN_IOU
    assert summary[split]['instances'] == len(reference[split]['annotations'])
    per_class = collections.Counter(a['category_name'] for a in reference[split]['annotations'])
    assert {k: v for k, v in summary[split]['instances_per_class'].items() if v} == dict(per_class)


# ----------------------------------------------------------------------------------------------------------------
# The devkit's rules on constructed input
# ----------------------------------------------------------------------------------------------------------------
def _write_raw(folder: Path, stem: str, height: int, width: int, instances):
    """An image with its mask pair; ``instances``: [(class name, instance id, bool mask (H, W))]."""
    folder.mkdir(parents=True, exist_ok=True)
    color = np.zeros((height, width, 3), np.uint8)
    ids = np.zeros((height, width, 3), np.uint8)
    for name, inst_id, mask in instances:
        color[mask] = ISAID_PALETTE[ISAID_CLASSES.index(name)]
        ids[mask] = ((inst_id >> 16) & 255, (inst_id >> 8) & 255, inst_id & 255)
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f'{stem}.png')
    Image.fromarray(color).save(folder / f'{stem}_instance_color_RGB.png')
    Image.fromarray(ids).save(folder / f'{stem}_instance_id_RGB.png')


def _box(height, width, y0, y1, x0, x1):
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _anns(out, split='train'):
    coco = json.loads((out / 'annotations' / f'instances_{split}.json').read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    files = {img['id']: img['file_name'] for img in coco['images']}
    return coco, [(files[a['image_id']], names[a['category_id']], a['area'], a['bbox']) for a in coco['annotations']]


def test_whole_image_when_a_side_is_at_most_800(tmp_path):
    # split.py: `if img_H > 800 and img_W > 800` cut, else copy the image whole under its own name
    assert sliding_windows(800, 1900) == [(0, 800, 0, 1900)]
    assert sliding_windows(1900, 640) == [(0, 1900, 0, 640)]
    assert sliding_windows(801, 801) == [(0, 800, 0, 800), (0, 800, 1, 801), (1, 801, 0, 800), (1, 801, 1, 801)]
    raw = tmp_path / 'raw' / 'train' / 'images'
    # 800 x 1000: kept whole although 1000 > 800; its vehicle lies beyond column 800
    _write_raw(raw, 'P0001', 800, 1000, [('Small_Vehicle', 5000, _box(800, 1000, 100, 110, 900, 920))])
    _write_raw(raw, 'P0002', 801, 900, [('Small_Vehicle', 5001, _box(801, 900, 10, 20, 10, 30))])
    summary = convert_isaid(tmp_path / 'raw', tmp_path / 'out', show_progress=False)
    coco, anns = _anns(tmp_path / 'out')
    assert [img['file_name'] for img in coco['images']] == [
        'P0001.png', 'P0002_0_800_0_800.png', 'P0002_0_800_100_900.png', 'P0002_1_801_0_800.png',
        'P0002_1_801_100_900.png']
    assert coco['images'][0]['window'] == [0, 800, 0, 1000] and coco['images'][0]['width'] == 1000
    # the whole image is copied unchanged (as split.py's copyfile)
    assert (tmp_path / 'out' / 'train' / 'images' / 'P0001.png').read_bytes() == (raw / 'P0001.png').read_bytes()
    assert ('P0001.png', 'Small_Vehicle', 200, [900.0, 100.0, 20.0, 10.0]) in anns
    # the vehicle of P0002 (rows 10..19, columns 10..29) lies in the two windows starting at row 0 and 1, column 0
    assert sorted(a[0] for a in anns if a[0] != 'P0001.png') == ['P0002_0_800_0_800.png', 'P0002_1_801_0_800.png']
    assert summary.skipped_splits == {'val': f'no val/images under {tmp_path / "raw"}',
                                      'test': f'no test/images under {tmp_path / "raw"}'}


def test_area_filter_and_contour_check(tmp_path):
    h, w = 60, 90
    ten = _box(h, w, 5, 7, 5, 10)  # 2 x 5 = 10 px: dropped (the devkit keeps area > 10)
    eleven = _box(h, w, 20, 22, 5, 10)
    eleven[22, 5] = True  # 11 px: kept
    with_speck = _box(h, w, 30, 36, 30, 40)  # 60 px and one lone pixel: a 1-point contour, dropped by the devkit
    with_speck[50, 80] = True
    one = _box(h, w, 40, 41, 5, 6)
    instances = [('Small_Vehicle', 5000, ten), ('Small_Vehicle', 5001, eleven), ('Large_Vehicle', 5002, with_speck),
                 ('ship', 5003, one)]
    _write_raw(tmp_path / 'raw' / 'train' / 'images', 'P0001', h, w, instances)

    summary = convert_isaid(tmp_path / 'raw', tmp_path / 'devkit', show_progress=False)['train']
    _, anns = _anns(tmp_path / 'devkit')
    assert [(a[1], a[2], a[3]) for a in anns] == [('Small_Vehicle', 11, [5.0, 20.0, 5.0, 3.0])]
    # the lone pixel is invalid (contour of 2 numbers), before the area check; the 1-px ship too
    assert (summary['dropped_small'], summary['dropped_invalid_contour']) == (1, 2)

    # exact masks: same area filter, no contour check
    summary = convert_isaid(tmp_path / 'raw', tmp_path / 'exact', masks='exact', show_progress=False)['train']
    _, anns = _anns(tmp_path / 'exact')
    assert sorted((a[1], a[2]) for a in anns) == [('Large_Vehicle', 61), ('Small_Vehicle', 11)]
    assert (summary['dropped_small'], summary['dropped_invalid_contour']) == (2, 0)

    # area_threshold=0 keeps every instance (exact masks)
    convert_isaid(tmp_path / 'raw', tmp_path / 'all', masks='exact', area_threshold=0, show_progress=False)
    _, anns = _anns(tmp_path / 'all')
    assert sorted(a[2] for a in anns) == [1, 10, 11, 61]


def test_skip_list(tmp_path):
    raw = tmp_path / 'raw' / 'val' / 'images'
    for stem in ('P0001', 'P1527', 'P1530'):
        _write_raw(raw, stem, 50, 50, [('plane', 7000, _box(50, 50, 10, 30, 10, 30))])
    assert DEVKIT_SKIP_IMAGES == ('P1527', 'P1530')
    summary = convert_isaid(tmp_path / 'raw', tmp_path / 'out', show_progress=False)['val']
    coco, _ = _anns(tmp_path / 'out', 'val')
    assert [img['file_name'] for img in coco['images']] == ['P0001.png']
    assert summary['skipped_images'] == ['P1527.png', 'P1530.png'] and summary['images'] == 1
    summary = convert_isaid(tmp_path / 'raw', tmp_path / 'all', skip_images=(), show_progress=False)['val']
    coco, _ = _anns(tmp_path / 'all', 'val')
    assert len(coco['images']) == 3 and summary['skipped_images'] == []


def test_devkit_polygon_by_hand():
    # a 4 x 4 square at columns 5..8, rows 3..6: one contour through the 12 boundary-pixel centres
    mask = np.zeros((12, 12), np.uint8)
    mask[3:7, 5:9] = 1
    (polygon, ) = devkit_polygons(mask)
    ring = [(x, 3) for x in range(5, 9)] + [(8, y) for y in range(3, 7)] + [(x, 6) for x in range(5, 9)] + \
        [(5, y) for y in range(3, 7)]
    assert sorted(map(tuple, np.reshape(polygon, (-1, 2)).tolist())) == sorted(set(ring))
    assert len(polygon) == 24
    # rasterised by pycocotools the polygon (5,3)-(8,6) covers the pixel centres 5.5..7.5: 3 x 3, not 16 pixels
    assert _rasterise([polygon], 12, 12).sum() == 9
    # every external contour is a polygon; holes are not traced
    mask[4:6, 6:8] = 0
    mask[9:11, 0:2] = 1
    assert len(devkit_polygons(mask)) == 2
