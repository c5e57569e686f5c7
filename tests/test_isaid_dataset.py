"""ISAIDInstanceDataset keeps every iSAID class, storage tanks included (mmdet 3.3's iSAIDDataset drops them), and
reads categories by name: the devkit's own jsons get the right labels; unknown names and empty training jsons fail."""
import collections
import json

import pytest
from helpers import REPO_ROOT
from mmdet.datasets import CocoDataset, iSAIDDataset

from mmdet_custom.datasets import ISAID_CLASSES, EmptyTrainingSetError, ISAIDInstanceDataset
from mmdet_custom.evaluation.functional import CategoryMismatchError
from mmdet_custom.utils.errors import UserError


def _label_counts(dataset):
    counts = collections.Counter()
    for i in range(len(dataset)):
        for inst in dataset.get_data_info(i)['instances']:
            counts[dataset.metainfo['classes'][inst['bbox_label']]] += 1
    return counts


def test_storage_tanks_survive(isaid_converted):
    kwargs = dict(data_root=str(isaid_converted.root), ann_file='annotations/instances_val.json',
                  data_prefix=dict(img='val/images/'), test_mode=True, pipeline=[])
    ours = _label_counts(ISAIDInstanceDataset(**kwargs))
    # P0003's one storage tank lies in the overlap of all four 800x800 windows: 4 instances
    assert ours['storage_tank'] == 4
    assert set(ours) <= set(ISAID_CLASSES) and ours['Small_Vehicle'] > 0 and ours['Large_Vehicle'] > 0
    # mmdet's class list says 'store_tank', so CocoDataset's match by name drops every storage tank
    stock = _label_counts(iSAIDDataset(**kwargs))
    assert 'storage_tank' not in stock and 'store_tank' not in stock
    assert sum(stock.values()) == sum(ours.values()) - 4


def test_class_names_and_order():
    assert len(ISAID_CLASSES) == 15
    assert ISAID_CLASSES[:2] == ('ship', 'storage_tank') and ISAID_CLASSES[-1] == 'Harbor'
    assert ISAIDInstanceDataset.METAINFO['palette'][ISAID_CLASSES.index('Small_Vehicle')] == (0, 0, 127)


# ------------------------------------------------------------------------------------------------------------------
# Categories by name (the devkit's jsons give one class other ids: matched by id, labels go wrong) and training
# on nothing (a json with no annotation or no known class is refused, not trained on)
# ------------------------------------------------------------------------------------------------------------------
def _dataset(cls, ann_file, test_mode=True, **kwargs):
    return cls(ann_file=str(ann_file), data_prefix=dict(img=''), test_mode=test_mode, pipeline=[], **kwargs)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_devkit_jsons_are_labelled_by_name(isaid_reference_dir, split):
    """The devkit lists only the classes present, in order of first appearance, with iSAID's fixed ids (val:
    Large_Vehicle 8, Small_Vehicle 9, storage_tank 2): each instance's label must still name its category."""
    path = isaid_reference_dir / f'instancesonly_filtered_{split}.json'
    ann = json.loads(path.read_text())
    names_by_image = collections.defaultdict(list)
    for a in ann['annotations']:
        names_by_image[a['image_id']].append(a['category_name'])
    for test_mode in (True, False):
        dataset = _dataset(ISAIDInstanceDataset, path, test_mode=test_mode)
        assert len(dataset) == len(ann['images'])
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            labels = [ISAID_CLASSES[inst['bbox_label']] for inst in info['instances']]
            assert labels == names_by_image[info['img_id']]  # same instances, same order, right names
    counts = _label_counts(dataset)
    assert counts == collections.Counter(a['category_name'] for a in ann['annotations'])
    assert counts['Large_Vehicle'] > 100  # e.g. every Large_Vehicle got label ISAID_CLASSES.index('Large_Vehicle')
    # mmdet's CocoDataset numbers the json's categories in their listed order: Large_Vehicle became 'ship'
    stock = _label_counts(_dataset(CocoDataset, path, metainfo=dict(classes=ISAID_CLASSES)))
    assert stock['ship'] == counts['Large_Vehicle'] and 'Large_Vehicle' not in stock


def _write(tmp_path, categories, annotations=None, name='instances.json'):
    images = [dict(id=1, file_name='a.png', width=64, height=64)]
    if annotations is None:
        annotations = [dict(id=i + 1, image_id=1, category_id=cat['id'], bbox=[4 * i, 4 * i, 8, 8], area=64,
                            iscrowd=0, segmentation=[[4 * i, 4 * i, 4 * i + 8, 4 * i, 4 * i + 8, 4 * i + 8]])
                       for i, cat in enumerate(categories)]
    path = tmp_path / name
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return path


def test_categories_out_of_order_with_any_ids(tmp_path):
    cats = [dict(id=40, name='Harbor'), dict(id=3, name='plane'), dict(id=7, name='ship')]
    dataset = _dataset(ISAIDInstanceDataset, _write(tmp_path, cats), test_mode=False)
    labels = [inst['bbox_label'] for inst in dataset.get_data_info(0)['instances']]
    assert labels == [ISAID_CLASSES.index('Harbor'), ISAID_CLASSES.index('plane'), ISAID_CLASSES.index('ship')]


@pytest.mark.parametrize('test_mode', [True, False])
def test_unknown_category_name_is_an_error(tmp_path, test_mode):
    path = _write(tmp_path, [dict(id=1, name='ship'), dict(id=2, name='store_tank')])
    with pytest.raises(CategoryMismatchError) as err:
        _dataset(ISAIDInstanceDataset, path, test_mode=test_mode)
    message = str(err.value)
    assert str(path) in message and "'store_tank'" in message and 'storage_tank' in message  # expected names
    assert isinstance(err.value, UserError)


def test_lower_cased_names_in_training_are_an_error(tmp_path):
    """A train json whose names differ from the classes used to train with zero losses and exit 0: now refused."""
    cats = [dict(id=i + 1, name=name.lower()) for i, name in enumerate(ISAID_CLASSES)]
    path = _write(tmp_path, cats)
    with pytest.raises(UserError) as err:
        _dataset(ISAIDInstanceDataset, path, test_mode=False)
    message = str(err.value)
    assert str(path) in message and "'large_vehicle'" in message and "'Large_Vehicle'" in message
    assert 'expected names' in message and 'the json names' in message


def test_training_json_without_annotations_is_an_error(tmp_path):
    cats = [dict(id=i + 1, name=name) for i, name in enumerate(ISAID_CLASSES)]
    path = _write(tmp_path, cats, annotations=[])
    with pytest.raises(EmptyTrainingSetError, match='no annotation belongs to any of the 15 classes') as err:
        _dataset(ISAIDInstanceDataset, path, test_mode=False)
    assert str(path) in str(err.value) and 'Large_Vehicle' in str(err.value)
    assert len(_dataset(ISAIDInstanceDataset, path, test_mode=True)) == 1  # a test json without labels is fine
    # an annotation whose category the json does not list would be dropped silently
    bad = _write(tmp_path, cats[:1], annotations=[dict(id=1, image_id=1, category_id=99, bbox=[0, 0, 4, 4],
                                                       area=16, iscrowd=0)], name='bad.json')
    with pytest.raises(CategoryMismatchError, match='category_id that .categories. does not list'):
        _dataset(ISAIDInstanceDataset, bad, test_mode=True)


def test_filter_leaving_no_training_image_is_an_error(tmp_path):
    path = _write(tmp_path, [dict(id=1, name='ship')])
    with pytest.raises(EmptyTrainingSetError, match='leaves none of its 1 images'):
        _dataset(ISAIDInstanceDataset, path, test_mode=False, filter_cfg=dict(filter_empty_gt=True, min_size=100))


def test_cells_config_reads_categories_by_name(tmp_path):
    """The cells dataset fragment uses the by-name dataset: a lower-cased train json fails when the runner builds
    the training set (before any iteration), and names out of order get the right labels."""
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/cells.py'))
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert loader.dataset.type == 'NamedCocoDataset'
    train = cfg.train_dataloader.dataset
    train.update(data_root=str(tmp_path), ann_file='instances.json', data_prefix=dict(img=''))
    _write(tmp_path, [dict(id=1, name='Class1'), dict(id=2, name='Class2')])
    with pytest.raises(UserError, match="'Class1'.*did you mean 'class1'"):
        DATASETS.build(train)
    _write(tmp_path, [dict(id=1, name='class3'), dict(id=2, name='class1')])
    labels = [inst['bbox_label'] for inst in DATASETS.build(train).get_data_info(0)['instances']]
    assert labels == [2, 0]
