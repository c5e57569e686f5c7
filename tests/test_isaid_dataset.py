"""ISAIDInstanceDataset keeps every iSAID class, storage tanks included (mmdet 3.3's iSAIDDataset drops them)."""
import collections

import pytest
from mmdet.datasets import iSAIDDataset

from mmdet_custom.datasets import ISAID_CLASSES, ISAIDInstanceDataset


@pytest.fixture(scope='module')
def val_patches(isaid_raw_dir, tmp_path_factory):
    from mmdet_custom.converters.isaid import convert_isaid
    out = tmp_path_factory.mktemp('isaid_val')
    convert_isaid(str(isaid_raw_dir), str(out), splits=('val', ), show_progress=False)
    return out


def _label_counts(dataset):
    counts = collections.Counter()
    for i in range(len(dataset)):
        for inst in dataset.get_data_info(i)['instances']:
            counts[dataset.metainfo['classes'][inst['bbox_label']]] += 1
    return counts


def test_storage_tanks_survive(val_patches):
    kwargs = dict(data_root=str(val_patches), ann_file='annotations/instances_val.json',
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
