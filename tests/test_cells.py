"""Cells converter (DSB2018 folders -> COCO), test-set json and COCO results export."""
import json
import os
import os.path as osp
import runpy
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import tifffile
import torch
from helpers import REPO_ROOT, shrink_for_cpu, use_data_root
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from PIL import Image
from pycocotools.coco import COCO

from mmdet_custom.apis.export import predictions_to_coco_results
from mmdet_custom.converters.cells import (
    CELL_CLASSES,
    CellsConversionError,
    convert_cells,
    convert_cells_test,
    image_to_rgb8,
    load_name_to_id,
    split_ids,
)
from mmdet_custom.utils.errors import UserError


def _load(out_dir, split):
    with open(osp.join(out_dir, 'annotations', f'instances_{split}.json')) as f:
        return json.load(f)


def _write_folder(root, name, image, labels):
    """``root/train/name/image.tif`` plus ``class{k}.tif`` for each ``k -> label image`` in ``labels``."""
    folder = osp.join(root, 'train', name)
    os.makedirs(folder, exist_ok=True)
    if image is not None:
        tifffile.imwrite(osp.join(folder, 'image.tif'), image)
    for k, label in labels.items():
        tifffile.imwrite(osp.join(folder, f'class{k}.tif'), label)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Real DSB2018 images
# ----------------------------------------------------------------------------------------------------------------
def test_dsb_instances_masks_and_images_match_source(cells_dir, cells_converted):
    out, stats = cells_converted  # convert_cells(cells_dir, out, val_fraction=0.2, seed=0)
    assert stats == dict(images=6, train_images=5, val_images=1, instances=171, dropped_border=0,
                         images_without_labels=0)
    train, val = _load(out, 'train'), _load(out, 'val')
    assert train['categories'] == val['categories'] == [dict(id=k, name=f'class{k}') for k in range(1, 5)]
    images = train['images'] + val['images']
    anns = train['annotations'] + val['annotations']
    assert len(anns) == 171 and len({a['id'] for a in anns}) == 171

    total = 0
    for img in images:
        cell_id = osp.splitext(img['file_name'])[0]
        label = tifffile.imread(cells_dir / 'train' / cell_id / 'class1.tif')
        source = tifffile.imread(cells_dir / 'train' / cell_id / 'image.tif')  # uint8 RGB: copied unchanged
        png = np.asarray(Image.open(out / 'images' / img['file_name']))
        assert png.dtype == np.uint8 and np.array_equal(png, source)
        assert (img['height'], img['width']) == label.shape

        values = sorted(int(v) for v in np.unique(label) if v != 0)
        img_anns = [a for a in anns if a['image_id'] == img['id']]
        assert len(img_anns) == len(values)
        seen = []
        for ann in img_anns:
            assert ann['category_id'] == 1 and ann['iscrowd'] == 0
            assert isinstance(ann['segmentation']['counts'], str)
            mask = mask_utils.decode(ann['segmentation']).astype(bool)
            value = int(np.unique(label[mask])[0])
            assert np.array_equal(mask, label == value)  # pixel for pixel
            ys, xs = np.nonzero(mask)
            assert ann['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann['area'] == mask.sum()
            seen.append(value)
        assert sorted(seen) == values
        total += len(values)
    assert total == 171


def test_dsb_split_is_seeded_disjoint_and_complete(cells_dir, tmp_path):
    convert_cells(cells_dir, tmp_path / 'a', val_fraction=0.5, seed=3)
    convert_cells(cells_dir, tmp_path / 'b', val_fraction=0.5, seed=3)
    for split in ('train', 'val'):
        assert _load(tmp_path / 'a', split) == _load(tmp_path / 'b', split)
    train_ids = {im['id'] for im in _load(tmp_path / 'a', 'train')['images']}
    val_ids = {im['id'] for im in _load(tmp_path / 'a', 'val')['images']}
    assert len(val_ids) == 3 and not train_ids & val_ids and train_ids | val_ids == set(range(1, 7))
    assert {a['image_id'] for a in _load(tmp_path / 'a', 'val')['annotations']} == val_ids

    # the split itself: seeded, sorted, at least one val image, at least one train image
    assert split_ids([5, 1, 3, 2, 4, 6], 0.5, seed=3) == split_ids(range(1, 7), 0.5, seed=3)
    assert [len(s) for s in split_ids(range(6), 0.01)] == [5, 1]
    assert [len(s) for s in split_ids(range(6), 0.99)] == [1, 5]
    assert split_ids(range(6), 0.0) == (list(range(6)), [])
    with pytest.raises(ValueError, match='val_fraction'):
        split_ids(range(6), 1.0)


def test_dsb_drop_border_removes_instances_on_the_border(cells_dir, tmp_path):
    stats = convert_cells(cells_dir, tmp_path, val_fraction=0.0, drop_border=True)
    expected = 0
    for folder in sorted((cells_dir / 'train').iterdir()):
        label = tifffile.imread(folder / 'class1.tif')
        on_border = set(np.unique(np.concatenate([label[0], label[-1], label[:, 0], label[:, -1]]))) - {0}
        expected += len(np.unique(label)) - 1 - len(on_border)
    anns = _load(tmp_path, 'train')['annotations']
    assert stats['instances'] == len(anns) == expected
    assert stats['dropped_border'] == 171 - expected > 0


# ----------------------------------------------------------------------------------------------------------------
# Constructed tiny folders
# ----------------------------------------------------------------------------------------------------------------
def test_drop_border_on_hand_made_label_image(tmp_path):
    label = np.array([[0, 1, 1, 0, 0, 0, 0],
                      [0, 0, 0, 0, 0, 2, 2],
                      [0, 3, 3, 0, 0, 0, 2],
                      [0, 3, 0, 0, 5, 0, 0],
                      [4, 0, 0, 0, 0, 0, 0],
                      [4, 4, 0, 5, 0, 0, 0]], dtype=np.uint16)
    # 1 touches the top row, 2 the right column, 4 the left column and bottom row, 5 (two parts) the bottom row;
    # only 3 is inside
    _write_folder(tmp_path / 'src', 'a', np.zeros((6, 7), np.uint8), {1: label})
    stats = convert_cells(tmp_path / 'src', tmp_path / 'out', val_fraction=0.0, drop_border=True)
    anns = _load(tmp_path / 'out', 'train')['annotations']
    assert (stats['instances'], stats['dropped_border']) == (1, 4)
    assert np.array_equal(mask_utils.decode(anns[0]['segmentation']), (label == 3).astype(np.uint8))
    assert anns[0]['bbox'] == [1.0, 2.0, 2.0, 2.0] and anns[0]['area'] == 3.0

    stats = convert_cells(tmp_path / 'src', tmp_path / 'all', val_fraction=0.0)
    anns = _load(tmp_path / 'all', 'train')['annotations']
    assert stats['instances'] == 5
    # a value split in two parts is still one instance
    assert mask_utils.decode(anns[4]['segmentation']).sum() == 2


def test_image_depths_channels_and_missing_class_files(tmp_path):
    h, w = 8, 10
    grey16 = np.linspace(1000, 4000, h * w).reshape(h, w).astype(np.uint16)
    rgba = np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)
    grey8 = np.arange(h * w, dtype=np.uint8).reshape(h, w)
    lab8 = np.zeros((h, w), np.uint8)
    lab8[2:4, 2:4] = 7
    lab8[5:7, 5:8] = 200
    lab16 = np.zeros((h, w), np.uint16)
    lab16[1:3, 6:9] = 60000
    _write_folder(tmp_path / 'src', 'grey16', grey16, {1: lab8})
    _write_folder(tmp_path / 'src', 'rgba', rgba, {2: lab16, 4: lab8})  # no class1 / class3 files
    _write_folder(tmp_path / 'src', 'grey8', grey8, {})  # no class file at all
    names = ('nucleus', 'cytoplasm', 'membrane', 'vesicle')
    stats = convert_cells(tmp_path / 'src', tmp_path / 'out', val_fraction=0.0, class_names=names)
    coco = _load(tmp_path / 'out', 'train')
    assert [c['name'] for c in coco['categories']] == list(names)
    assert stats['instances'] == 5
    ids = {im['file_name']: im['id'] for im in coco['images']}
    cats = lambda f: sorted(a['category_id'] for a in coco['annotations'] if a['image_id'] == ids[f])  # noqa: E731
    assert cats('grey16.png') == [1, 1] and cats('rgba.png') == [2, 4, 4] and cats('grey8.png') == []

    def png(name):
        return np.asarray(Image.open(tmp_path / 'out' / 'images' / name))

    # 16-bit: stretched per image from its min (-> 0) to its max (-> 255), grey repeated to RGB
    out = png('grey16.png')
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [0, 0, 0] and out[-1, -1].tolist() == [255, 255, 255]
    assert np.array_equal(out[..., 0], np.round((grey16 - 1000.0) * 255 / 3000).astype(np.uint8))
    assert np.array_equal(png('rgba.png'), rgba[..., :3])  # alpha dropped
    assert np.array_equal(png('grey8.png'), np.repeat(grey8[..., None], 3, axis=-1))


def test_image_to_rgb8_layouts():
    chw = np.stack([np.full((5, 6), v, np.uint8) for v in (10, 20, 30)])
    assert image_to_rgb8(chw)[0, 0].tolist() == [10, 20, 30]
    assert image_to_rgb8(np.full((4, 4), 7.5)).max() == 0  # constant float image -> zeros
    with pytest.raises(ValueError, match='bad.tif'):
        image_to_rgb8(np.zeros((4, 4, 2), np.uint8), name='bad.tif')


def test_bad_input_names_the_file_and_writes_nothing(tmp_path):
    img = np.zeros((6, 8), np.uint8)
    src = tmp_path / 'src'
    _write_folder(src, 'a_ok', img, {1: np.ones((6, 8), np.uint16)})
    bad = _write_folder(src, 'b_bad', img, {1: np.ones((6, 9), np.uint16)})
    out = tmp_path / 'out'
    with pytest.raises(ValueError, match=r'b_bad/class1\.tif: mask size 9x6'):
        convert_cells(src, out)
    assert not out.exists() and os.listdir(tmp_path) == ['src']  # the first image was staged, then removed

    tifffile.imwrite(osp.join(bad, 'class1.tif'), np.ones((6, 8), np.float32))
    with pytest.raises(ValueError, match=r'b_bad/class1\.tif: .*float32.*integers'):
        convert_cells(src, out)

    os.remove(osp.join(bad, 'class1.tif'))
    tifffile.imwrite(osp.join(bad, 'class5.tif'), np.ones((6, 8), np.uint16))
    with pytest.raises(ValueError, match=r'class5\.tif: class index 5 has no name'):
        convert_cells(src, out)

    os.remove(osp.join(bad, 'image.tif'))
    with pytest.raises(FileNotFoundError, match=r'image missing: .*b_bad/image\.tif'):
        convert_cells(src, out)
    assert os.listdir(tmp_path) == ['src']
    with pytest.raises(FileNotFoundError, match='train'):
        convert_cells(tmp_path / 'nowhere', out)


def test_test_set_json_uses_the_given_ids(tmp_path):
    src = tmp_path / 'test_release'
    src.mkdir()
    tifffile.imwrite(src / 'x1.tif', np.full((5, 7, 3), 9, np.uint8))
    tifffile.imwrite(src / 'x2.tif', np.full((6, 4), 300, np.uint16))
    mapping = tmp_path / 'test_image_name_to_ids.json'
    mapping.write_text(json.dumps([dict(file_name='x1.tif', id=12, height=5, width=7),
                                   dict(file_name='x2.tif', id=3, height=6, width=4)]))
    assert load_name_to_id(mapping) == {'x1.tif': 12, 'x2.tif': 3}
    assert convert_cells_test(src, mapping, tmp_path / 'out') == dict(images=2)
    with open(tmp_path / 'out' / 'annotations' / 'image_info_test.json') as f:
        coco = json.load(f)
    assert coco['images'] == [dict(id=3, file_name='x2.png', height=6, width=4),
                              dict(id=12, file_name='x1.png', height=5, width=7)]
    assert coco['annotations'] == [] and [c['name'] for c in coco['categories']] == list(CELL_CLASSES)
    assert np.asarray(Image.open(tmp_path / 'out' / 'test' / 'x1.png'))[0, 0].tolist() == [9, 9, 9]

    # the plain {name: id} form, and a mapping naming a file that is not there
    mapping.write_text(json.dumps({'x1.tif': 1, 'x2.tif': 2, 'x3.tif': 5}))
    with pytest.raises(FileNotFoundError, match='x3.tif'):
        convert_cells_test(src, mapping, tmp_path / 'out2')
    mapping.write_text(json.dumps({'x1.tif': 1}))
    with pytest.raises(ValueError, match=r"no image id for \['x2.tif'\]"):
        convert_cells_test(src, mapping, tmp_path / 'out2')


def test_cli_converts_train_and_test(tmp_path):
    lab = np.zeros((6, 8), np.uint16)
    lab[2:4, 2:5] = 1
    _write_folder(tmp_path / 'src', 'a', np.zeros((6, 8), np.uint8), {1: lab})
    _write_folder(tmp_path / 'src', 'b', np.zeros((6, 8), np.uint8), {3: lab})
    (tmp_path / 'test').mkdir()
    tifffile.imwrite(tmp_path / 'test' / 't.tif', np.zeros((6, 8), np.uint8))
    (tmp_path / 'map.json').write_text(json.dumps({'t.tif': 40}))
    cli = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'cells.py'))
    cli['main']([str(tmp_path / 'src'), '-o', str(tmp_path / 'out'), '--val-fraction', '0.5', '--seed', '1',
                 '--test-dir', str(tmp_path / 'test'), '--test-name-to-ids', str(tmp_path / 'map.json')])
    assert len(_load(tmp_path / 'out', 'train')['images']) == len(_load(tmp_path / 'out', 'val')['images']) == 1
    assert sorted(os.listdir(tmp_path / 'out' / 'images')) == ['a.png', 'b.png']
    assert os.listdir(tmp_path / 'out' / 'test') == ['t.png']


# ----------------------------------------------------------------------------------------------------------------
# Export of predictions
# ----------------------------------------------------------------------------------------------------------------
def _constructed_predictions():
    h, w = 12, 16
    masks = np.zeros((3, h, w), bool)
    masks[0, 2:5, 3:9] = True  # inside
    masks[1, 0:3, 10:13] = True  # touches the top row
    masks[2, 6:11, 4:6] = True  # inside
    masks[2, 8, 7] = True
    bboxes = np.array([[3, 2, 9, 5], [10, 0, 13, 3], [4, 6, 8, 11]], np.float32)
    scores = np.array([0.9, 0.8, 0.3], np.float32)
    labels = np.array([0, 3, 1])
    return masks, bboxes, scores, labels


def test_predictions_to_coco_results_loads_and_masks_round_trip(tmp_path):
    masks, bboxes, scores, labels = _constructed_predictions()
    h, w = masks.shape[1:]
    samples = [
        dict(img_path='/data/test/img_a.png', img_id=0,
             pred_instances=dict(masks=torch.from_numpy(masks), bboxes=torch.from_numpy(bboxes),
                                 scores=torch.from_numpy(scores), labels=torch.from_numpy(labels))),
        dict(img_path='/data/test/img_b.png',  # RLE masks (as CocoMetric stores them), no bboxes
             pred_instances=dict(masks=[mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks],
                                 scores=scores, labels=labels)),
    ]
    cat_ids = [1, 2, 3, 4]
    name_to_id = {'img_a.tif': 7, 'img_b.png': 9}
    results = predictions_to_coco_results(samples, cat_ids, name_to_id=name_to_id)
    assert [(r['image_id'], r['category_id']) for r in results] == [(7, 1), (7, 4), (7, 2), (9, 1), (9, 4), (9, 2)]
    assert results[0]['bbox'] == [3.0, 2.0, 6.0, 3.0] and results[3]['bbox'] == [3.0, 2.0, 6.0, 3.0]
    assert results[0]['score'] == pytest.approx(0.9)

    out = tmp_path / 'test-results.json'
    out.write_text(json.dumps(results))  # json-serialisable: RLE counts are str
    gt = COCO()
    gt.dataset = dict(images=[dict(id=7, height=h, width=w), dict(id=9, height=h, width=w)], annotations=[],
                      categories=[dict(id=k, name=f'class{k}') for k in cat_ids])
    gt.createIndex()
    dt = gt.loadRes(str(out))
    for img_id in (7, 9):
        anns = dt.loadAnns(dt.getAnnIds(imgIds=[img_id]))
        assert len(anns) == 3
        for ann, mask in zip(anns, masks):
            assert np.array_equal(dt.annToMask(ann).astype(bool), mask)

    kept = predictions_to_coco_results(samples[:1], cat_ids, name_to_id=name_to_id, drop_border=True)
    assert [r['category_id'] for r in kept] == [1, 2]  # the instance on the top row is gone
    kept = predictions_to_coco_results(samples[1:], cat_ids, name_to_id=name_to_id, drop_border=True,
                                       score_thr=0.5)
    assert [r['category_id'] for r in kept] == [1]
    records = [dict(file_name=k, id=v, height=h, width=w) for k, v in name_to_id.items()]
    assert predictions_to_coco_results(samples, cat_ids, name_to_id=records) == results
    with pytest.raises(KeyError, match='img_b'):
        predictions_to_coco_results(samples[1:], cat_ids, name_to_id={'other.tif': 1})
    with pytest.raises(IndexError, match='label 3'):
        predictions_to_coco_results(samples[:1], [1, 2, 3])


def test_predictions_to_coco_results_takes_det_data_samples():
    masks, bboxes, scores, labels = _constructed_predictions()
    sample = DetDataSample(metainfo=dict(img_id=5, img_path='x/img.png', ori_shape=masks.shape[1:]))
    sample.pred_instances = InstanceData(masks=torch.from_numpy(masks), bboxes=torch.from_numpy(bboxes),
                                         scores=torch.from_numpy(scores), labels=torch.from_numpy(labels))
    results = predictions_to_coco_results([sample], [10, 20, 30, 40])
    assert [(r['image_id'], r['category_id']) for r in results] == [(5, 10), (5, 40), (5, 20)]
    for r, mask in zip(results, masks):
        assert np.array_equal(mask_utils.decode(r['segmentation']).astype(bool), mask)


# ----------------------------------------------------------------------------------------------------------------
# Mask R-CNN (configs/cells) trained 2 iterations and tested on the converted set, then exported on a test set
# ----------------------------------------------------------------------------------------------------------------
CELLS_CONFIG = osp.join(REPO_ROOT, 'configs', 'cells', 'mask-rcnn_r50_fpn_1x_cells.py')




@pytest.mark.slow
def test_mask_rcnn_trains_and_tests_on_converted_cells(cells_dir, cells_converted, tmp_path):
    from mmengine.config import Config

    from mmdet_custom.apis import test, train
    data = shutil.copytree(cells_converted.root, tmp_path / 'cells')  # a copy: the test set is added below
    # a 2-image test set in the assignment's layout: image files + file name -> id mapping
    test_src = tmp_path / 'test_release'
    test_src.mkdir()
    folders = sorted((cells_dir / 'train').iterdir())[:2]
    for folder in folders:
        tifffile.imwrite(test_src / f'{folder.name}.tif', tifffile.imread(folder / 'image.tif'))
    records = [dict(file_name=f'{folder.name}.tif', id=101 + i, height=256, width=320)
               for i, folder in enumerate(folders)]
    (tmp_path / 'test_image_name_to_ids.json').write_text(json.dumps(records))
    convert_cells_test(test_src, tmp_path / 'test_image_name_to_ids.json', data)

    # ResNet-18, 2 iterations, no validation during training (the test below evaluates the checkpoint)
    cfg = use_data_root(shrink_for_cpu(Config.fromfile(CELLS_CONFIG), tmp_path / 'work'), data)
    runner = train(cfg)
    assert runner.iter == 2
    checkpoint = tmp_path / 'work' / 'iter_2.pth'
    assert checkpoint.is_file()

    metrics = test(cfg, str(checkpoint), work_dir=str(tmp_path / 'test'))
    assert 0.0 <= metrics['coco/segm_mAP'] <= 1.0 and 0.0 <= metrics['coco/bbox_mAP'] <= 1.0

    cfg.test_dataloader.dataset.ann_file = 'annotations/image_info_test.json'
    cfg.test_dataloader.dataset.data_prefix = dict(img='test/')
    out = tmp_path / 'test-results.json'
    test(cfg, str(checkpoint), work_dir=str(tmp_path / 'export'), format_only=True, out=str(out),
         name_to_ids=str(tmp_path / 'test_image_name_to_ids.json'))
    with open(out) as f:
        results = json.load(f)
    # an untrained classifier scores each of the 5 classes ~0.2, above the 0.05 test threshold: never empty
    assert results and {r['image_id'] for r in results} <= {101, 102}
    assert all(r['category_id'] in (1, 2, 3, 4) and r['segmentation']['size'] == [256, 320] for r in results)
    gt = COCO(str(data / 'annotations' / 'image_info_test.json'))
    assert len(gt.loadRes(str(out)).getAnnIds()) == len(results)


# ----------------------------------------------------------------------------------------------------------------
# File naming, atomic output, kills, empty outputs: one mask file per class, outputs whole or not at all
# ----------------------------------------------------------------------------------------------------------------
def _n_instances(label_path):
    return len(np.unique(tifffile.imread(label_path))) - 1


def test_tiff_label_files_are_read_like_tif(cells_dir, tmp_path):
    """Three of the six real folders name their labels class1.tiff (one also image.TIFF): no nucleus is dropped."""
    src = tmp_path / 'src'
    shutil.copytree(cells_dir, src)
    folders = sorted((src / 'train').iterdir())
    renamed = 0
    for folder in folders[::2]:
        renamed += _n_instances(folder / 'class1.tif')
        os.rename(folder / 'class1.tif', folder / 'class1.tiff')
    os.rename(folders[0] / 'image.tif', folders[0] / 'image.TIFF')
    assert 0 < renamed < 171  # what a .tif-only reader drops
    stats = convert_cells(src, tmp_path / 'out', val_fraction=0.0)
    assert stats['instances'] == 171 and stats['images_without_labels'] == 0
    anns = _load(tmp_path / 'out', 'train')['annotations']
    assert len(anns) == 171
    # per image, as many annotations as label values
    coco = _load(tmp_path / 'out', 'train')
    for img in coco['images']:
        folder = src / 'train' / osp.splitext(img['file_name'])[0]
        label = next(p for p in folder.iterdir() if p.name.startswith('class1.'))
        assert sum(a['image_id'] == img['id'] for a in anns) == _n_instances(label)

    # two files for one class, or a label image in another format: refused, naming the files; nothing written
    shutil.copy(folders[0] / 'class1.tiff', folders[0] / 'class1.tif')
    with pytest.raises(CellsConversionError, match=r"2 label images for class 1 \['class1.tif', 'class1.tiff'\]"):
        convert_cells(src, tmp_path / 'out2')
    os.remove(folders[0] / 'class1.tif')
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folders[1] / 'class2.png')
    with pytest.raises(CellsConversionError, match=r'class2\.png: label images must be TIFF'):
        convert_cells(src, tmp_path / 'out2')
    assert not (tmp_path / 'out2').exists()


def test_output_overlapping_the_input_is_refused(tmp_path):
    _write_folder(tmp_path / 'src', 'a', np.zeros((6, 8), np.uint8), {1: np.ones((6, 8), np.uint16)})
    for out in (tmp_path / 'src', tmp_path / 'src' / 'train' / 'coco', tmp_path):
        with pytest.raises(UserError, match='overlaps the input'):
            convert_cells(tmp_path / 'src', out)
    assert sorted(os.listdir(tmp_path / 'src' / 'train' / 'a')) == ['class1.tif', 'image.tif']


def test_rerun_replaces_its_part_and_keeps_the_test_part(tmp_path):
    lab = np.zeros((6, 8), np.uint16)
    lab[2:4, 2:5] = 1
    _write_folder(tmp_path / 'src', 'a', np.zeros((6, 8), np.uint8), {1: lab})
    _write_folder(tmp_path / 'src', 'b', np.zeros((6, 8), np.uint8), {1: lab})
    (tmp_path / 'test').mkdir()
    tifffile.imwrite(tmp_path / 'test' / 't.tif', np.zeros((6, 8), np.uint8))
    (tmp_path / 'map.json').write_text(json.dumps({'t.tif': 40}))
    out = tmp_path / 'out'
    convert_cells(tmp_path / 'src', out, val_fraction=0.5, test_dir=tmp_path / 'test',
                  test_name_to_ids=tmp_path / 'map.json')
    shutil.rmtree(tmp_path / 'src' / 'train' / 'b')
    stats = convert_cells(tmp_path / 'src', out, val_fraction=0.0)
    assert stats['images'] == 1 and sorted(os.listdir(out / 'images')) == ['a.png']  # no stale b.png
    assert _load(out, 'val')['images'] == []
    assert os.listdir(out / 'test') == ['t.png'] and (out / 'annotations' / 'image_info_test.json').is_file()
    assert [p for p in os.listdir(tmp_path) if p.startswith('.')] == []  # no temporary folder left
    # a folder the tool did not write is never replaced
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep')
    with pytest.raises(UserError, match='did not write'):
        convert_cells(tmp_path / 'src', tmp_path / 'mine')
    assert os.listdir(tmp_path / 'mine') == ['notes.txt']


def test_folders_without_masks_and_empty_outputs_warn(tmp_path, capsys):
    lab = np.zeros((6, 8), np.uint16)
    lab[2:4, 2:5] = 1
    _write_folder(tmp_path / 'src', 'a', np.zeros((6, 8), np.uint8), {1: lab})
    _write_folder(tmp_path / 'src', 'b', np.zeros((6, 8), np.uint8), {})
    with pytest.warns(UserWarning, match=r'1 of 2 image folders .* hold no class<k>\.tif label image \(b\)'):
        assert convert_cells(tmp_path / 'src', tmp_path / 'o1', val_fraction=0.0)['images_without_labels'] == 1
    os.remove(tmp_path / 'src' / 'train' / 'a' / 'class1.tif')
    with pytest.warns(UserWarning, match='no instance at all'):
        assert convert_cells(tmp_path / 'src', tmp_path / 'o2', val_fraction=0.0)['instances'] == 0
    # the command line prints them as warnings (exit 0: an image without cells is legitimate input)
    cli = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'cells.py'))
    cli['main']([str(tmp_path / 'src'), '-o', str(tmp_path / 'o3'), '--val-fraction', '0'])
    err = capsys.readouterr().err
    assert 'warning: 2 of 2 image folders' in err and 'warning: ' in err and 'no instance at all' in err


# A converter rerun killed (SIGKILL) at a chosen moment. The child pauses there (after signalling) so that the kill
# lands exactly at the moment: between the two jsons (before the swap), or after the swap while the old output is
# being removed.
_KILL_CHILD = r'''
import os, os.path as osp, runpy, shutil, sys, time
import mmdet_custom.converters.cells as cells
ready, moment, tool, out = sys.argv[1:5]

def pause():
    open(ready, 'w').close()
    time.sleep(600)

if moment == 'between-jsons':
    dump = cells.dump_json_atomic
    def dump_then_pause(obj, path, **kwargs):
        dump(obj, path, **kwargs)
        if path.endswith('instances_train.json'):
            pause()
    cells.dump_json_atomic = dump_then_pause
else:  # 'after-swap': atomic_dir removes the previous output (now in its own temporary sibling)
    rmtree = shutil.rmtree
    prefix = '.' + osp.basename(out) + '.'
    def rmtree_after_pause(path, *args, **kwargs):
        name = osp.basename(str(path))
        if name.startswith(prefix) and '-%d-' % os.getpid() in name:
            pause()
        return rmtree(path, *args, **kwargs)
    shutil.rmtree = rmtree_after_pause
sys.argv = [tool] + sys.argv[5:]
runpy.run_path(tool, run_name='__main__')
'''


def _kill_at(moment, src, out, tmp_path, seed):
    ready = tmp_path / f'ready-{moment}'
    tool = osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'cells.py')
    proc = subprocess.Popen([sys.executable, '-c', _KILL_CHILD, str(ready), moment, tool, str(out), str(src),
                             '-o', str(out), '--val-fraction', '0.5', '--seed', str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f'the converter ended before the moment {moment}: {proc.communicate()[1][-2000:]}')
        assert time.monotonic() < deadline, f'the converter never reached {moment}'
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _snapshot(out):
    return (_load(out, 'train'), _load(out, 'val'), sorted(os.listdir(out / 'images')))


@pytest.mark.slow
def test_killed_rerun_leaves_old_or_new_output_whole(cells_dir, tmp_path):
    """A rerun with another split (3 images in val) killed between writing the train and the val json leaves the old
    output; killed after the swap, the new one: train and val jsons always come from one run."""
    convert_cells(cells_dir, tmp_path / 'ref_old', val_fraction=0.5, seed=0)
    convert_cells(cells_dir, tmp_path / 'ref_new', val_fraction=0.5, seed=1)
    old, new = _snapshot(tmp_path / 'ref_old'), _snapshot(tmp_path / 'ref_new')
    assert old[0] != new[0]  # the two splits differ

    out = tmp_path / 'out'
    convert_cells(cells_dir, out, val_fraction=0.5, seed=0)
    _kill_at('between-jsons', cells_dir, out, tmp_path, seed=1)
    assert _snapshot(out) == old
    assert any(p.startswith('.out.tmp-') for p in os.listdir(tmp_path))  # what the killed run left

    out2 = tmp_path / 'out2'
    convert_cells(cells_dir, out2, val_fraction=0.5, seed=0)
    _kill_at('after-swap', cells_dir, out2, tmp_path, seed=1)
    assert _snapshot(out2) == new

    # the next runs clean the temporary folders of the killed ones
    convert_cells(cells_dir, out, val_fraction=0.5, seed=1)
    convert_cells(cells_dir, out2, val_fraction=0.5, seed=0)
    assert _snapshot(out) == new and _snapshot(out2) == old
    assert [p for p in os.listdir(tmp_path) if p.startswith('.')] == []
