"""COCO class subsets: category remapping, kept annotations, crowd regions, empty images."""
import json
import os
import os.path as osp
import runpy
import shutil
from collections import Counter

import pytest
from helpers import REPO_ROOT, shrink_for_cpu

from mmdet_custom.converters.coco_subset import COCO_SUBSET_CLASSES, convert_coco_subset, subset_coco


@pytest.fixture(scope='module')
def tiny_coco(tiny_coco_dir):
    with open(tiny_coco_dir / 'instances_train2017_small.json') as f:
        return json.load(f)


def _count_by_name(coco):
    names = {c['id']: c['name'] for c in coco['categories']}
    return Counter(names[a['category_id']] for a in coco['annotations'])


def test_default_subset_remaps_ids_and_keeps_annotations(tiny_coco):
    src_json = json.dumps(tiny_coco)
    out = subset_coco(tiny_coco)
    assert json.dumps(tiny_coco) == src_json  # input untouched
    assert [(c['id'], c['name']) for c in out['categories']] == [
        (1, 'person'), (2, 'cat'), (3, 'sports ball'), (4, 'book')]
    assert out['categories'][3]['supercategory'] == 'indoor'

    src_counts, out_counts = _count_by_name(tiny_coco), _count_by_name(out)
    assert {n: out_counts[n] for n in COCO_SUBSET_CLASSES} == {n: src_counts[n] for n in COCO_SUBSET_CLASSES}
    assert (out_counts['person'], out_counts['cat'], out_counts['sports ball'], out_counts['book']) == (33, 1, 0, 7)
    assert sum(out_counts.values()) == len(out['annotations']) == 41

    # every kept annotation is the source one with only category_id changed
    src_by_id = {a['id']: a for a in tiny_coco['annotations']}
    old_name = {c['id']: c['name'] for c in tiny_coco['categories']}
    for ann in out['annotations']:
        src = src_by_id[ann['id']]
        assert {k: v for k, v in ann.items() if k != 'category_id'} == \
               {k: v for k, v in src.items() if k != 'category_id'}
        assert COCO_SUBSET_CLASSES[ann['category_id'] - 1] == old_name[src['category_id']]
    assert out['images'] == tiny_coco['images'] and out['info'] == tiny_coco['info']


def test_crowd_annotation_is_kept_unchanged(tiny_coco):
    crowd_src = [a for a in tiny_coco['annotations'] if a['iscrowd']]
    assert len(crowd_src) == 1 and isinstance(crowd_src[0]['segmentation']['counts'], list)
    out = subset_coco(tiny_coco, classes=('book', 'person'))
    crowd = [a for a in out['annotations'] if a['iscrowd']]
    assert crowd == [dict(crowd_src[0], category_id=2)]  # person is id 2 in this order
    assert [c['name'] for c in out['categories']] == ['book', 'person']


def test_drop_empty_removes_exactly_images_without_kept_annotations(tiny_coco):
    kept_cat_ids = {c['id'] for c in tiny_coco['categories'] if c['name'] in ('cat', 'book')}
    with_ann = {a['image_id'] for a in tiny_coco['annotations'] if a['category_id'] in kept_cat_ids}
    assert 0 < len(with_ann) < len(tiny_coco['images'])
    out = subset_coco(tiny_coco, classes=('cat', 'book'), drop_empty=True)
    assert [im['id'] for im in out['images']] == [im['id'] for im in tiny_coco['images'] if im['id'] in with_ann]
    assert len(subset_coco(tiny_coco, classes=('cat', 'book'))['images']) == len(tiny_coco['images'])


def test_unknown_class_lists_available_names(tiny_coco):
    with pytest.raises(ValueError, match=r"unknown class name\(s\) \['giraffe '\]; available: .*'person'"):
        subset_coco(tiny_coco, classes=('person', 'giraffe '))
    with pytest.raises(ValueError, match='more than once'):
        subset_coco(tiny_coco, classes=('person', 'person'))


def test_convert_writes_atomically_and_cli(tiny_coco_dir, tmp_path):
    src = tiny_coco_dir / 'instances_train2017_small.json'
    out = tmp_path / 'ann' / 'subset.json'
    stats = convert_coco_subset(src, out, drop_empty=True)
    assert stats['per_class'] == {'person': 33, 'cat': 1, 'sports ball': 0, 'book': 7}
    with open(out) as f:
        written = json.load(f)
    assert len(written['images']) == stats['images'] and len(written['annotations']) == 41
    with pytest.raises(ValueError, match='instances_train2017_small.json: unknown class'):
        convert_coco_subset(src, tmp_path / 'bad.json', classes=('unicorn',))
    assert sorted(os.listdir(tmp_path)) == ['ann'] and os.listdir(tmp_path / 'ann') == ['subset.json']

    cli = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'coco_subset.py'))
    cli['main']([str(src), str(tmp_path / 'cli.json'), '--classes', 'cat', 'person'])
    with open(tmp_path / 'cli.json') as f:
        coco = json.load(f)
    assert [c['name'] for c in coco['categories']] == ['cat', 'person'] and len(coco['images']) == 16


@pytest.mark.slow
def test_mask_rcnn_trains_and_tests_on_the_subset(tiny_coco_dir, tmp_path):
    """configs/coco_subset: 2 training iterations then COCO evaluation, on the subset of tiny_coco at 128 px."""
    from mmengine.config import Config

    from mmdet_custom.apis import test, train
    ann = tmp_path / 'instances_subset.json'
    stats = convert_coco_subset(tiny_coco_dir / 'instances_train2017_small.json', ann, drop_empty=True)
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'coco_subset', 'mask-rcnn_r50_fpn_1x_coco-subset.py'))
    assert cfg.train_dataloader.dataset.metainfo.classes == COCO_SUBSET_CLASSES
    # CPU-sized (tests/helpers.py): 128 px instead of 1333x800, no validation during training, 2 test images
    shrink_for_cpu(cfg, tmp_path / 'work', image_size=(128, 128))
    for name in ('train_dataloader', 'test_dataloader'):
        cfg[name].dataset.update(data_root=str(tiny_coco_dir), ann_file=str(ann),
                                 data_prefix=dict(img='train_2017_small/'))
    cfg.test_dataloader.dataset.indices = 2
    cfg.test_evaluator.ann_file = str(ann)

    runner = train(cfg)
    assert runner.iter == 2 and len(runner.train_dataloader.dataset) == stats['images']
    metrics = test(cfg, str(tmp_path / 'work' / 'iter_2.pth'), work_dir=str(tmp_path / 'test'))
    assert 0.0 <= metrics['coco/segm_mAP'] <= 1.0 and 0.0 <= metrics['coco/bbox_mAP'] <= 1.0


# ----------------------------------------------------------------------------------------------------------------
# Validated input: an inconsistent json is refused in one error line before anything is written
# ----------------------------------------------------------------------------------------------------------------
def _write(tmp_path, coco, name='in.json'):
    path = tmp_path / name
    path.write_text(json.dumps(coco))
    return path


def test_duplicated_category_name_is_refused_not_emptied(tiny_coco, tmp_path):
    """A second category named 'person' (id 99) used to take the name: the 33 person annotations (id 1) vanished."""
    coco = dict(tiny_coco, categories=tiny_coco['categories'] + [dict(id=99, name='person', supercategory='x')])
    src = _write(tmp_path, coco)
    with pytest.raises(ValueError, match=r"in\.json: \"categories\" lists the name\(s\) 'person' \(ids \[1, 99\]\) "
                                         r"more than once"):
        convert_coco_subset(src, tmp_path / 'out.json')
    coco['categories'][-1] = dict(id=1, name='person again')
    with pytest.raises(ValueError, match=r'"categories" lists the id\(s\) 1 more than once'):
        subset_coco(coco)
    assert not (tmp_path / 'out.json').exists()


def test_annotations_of_missing_images_and_empty_image_lists_are_refused(tiny_coco, tmp_path):
    anns = [dict(a) for a in tiny_coco['annotations']]
    anns[3]['image_id'] = 123456789
    with pytest.raises(ValueError, match=rf"bad\.json: annotation\(s\) {anns[3]['id']} \(image_id 123456789\) point "
                                         r'to an image_id that "images" does not list'):
        convert_coco_subset(_write(tmp_path, dict(tiny_coco, annotations=anns), 'bad.json'), tmp_path / 'o.json')
    anns[3] = dict(tiny_coco['annotations'][3], category_id=4242)
    with pytest.raises(ValueError, match=r'category_id 4242\) point to a category_id that "categories" does not'):
        subset_coco(dict(tiny_coco, annotations=anns), source='x.json')
    with pytest.raises(ValueError, match=r'empty\.json: "images" is empty'):
        convert_coco_subset(_write(tmp_path, dict(tiny_coco, images=[], annotations=[]), 'empty.json'),
                            tmp_path / 'o.json')
    with pytest.raises(ValueError, match=r'nokey\.json: field "annotations" missing or not a list'):
        convert_coco_subset(_write(tmp_path, dict(images=tiny_coco['images'], categories=[]), 'nokey.json'),
                            tmp_path / 'o.json')
    assert not (tmp_path / 'o.json').exists()


def test_malformed_json_and_overwriting_the_input_are_user_errors(tiny_coco_dir, tmp_path):
    from mmdet_custom.utils.errors import UserError
    bad = tmp_path / 'broken.json'
    bad.write_text('{"images": [1, 2,')
    with pytest.raises(UserError, match=r'broken\.json is not valid json: .* line 1, column'):
        convert_coco_subset(bad, tmp_path / 'o.json')
    src = tmp_path / 'same.json'
    shutil.copy(tiny_coco_dir / 'instances_train2017_small.json', src)
    before = src.read_bytes()
    with pytest.raises(UserError, match='is the input json'):
        convert_coco_subset(src, src)
    assert src.read_bytes() == before


def test_classes_without_annotations_warn(tiny_coco):
    with pytest.warns(UserWarning, match=r"no annotation of \['sports ball'\]"):
        subset_coco(tiny_coco)
    coco = dict(tiny_coco, annotations=[a for a in tiny_coco['annotations']
                                        if a['category_id'] not in (1, 17, 37, 84)])
    with pytest.warns(UserWarning, match='the subset is empty'):
        assert subset_coco(coco)['annotations'] == []
