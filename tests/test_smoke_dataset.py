"""The demo's generated smoke dataset: deterministic, in the iSAID raw encoding the converter reads back."""
import filecmp
import json

from mmdet_custom.converters.isaid import convert_isaid
from mmdet_custom.converters.smoke import generate_smoke_dataset
from mmdet_custom.datasets import ISAID_CLASSES


def test_deterministic_and_read_back_by_the_converter(smoke_raw, tmp_path):
    splits = {'train': 2, 'val': 1}
    raw, summary = smoke_raw  # generate_smoke_dataset(raw, splits, size=192, seed=3), once per session
    generate_smoke_dataset(str(tmp_path / 'b'), splits, size=192, seed=3)
    for split in splits:
        cmp = filecmp.dircmp(raw / split / 'images', tmp_path / 'b' / split / 'images')
        assert len(cmp.common_files) == 3 * splits[split] and not cmp.diff_files  # same seed, same bytes

    # one window covering each whole image: every generated instance comes back once, with its class
    convert_isaid(str(raw), str(tmp_path / 'out'), splits=('train', 'val'), patch_size=192, overlap=0,
                  max_empty_fraction=1.0, show_progress=False)
    for split in splits:
        coco = json.loads((tmp_path / 'out' / 'annotations' / f'instances_{split}.json').read_text())
        names = {c['id']: c['name'] for c in coco['categories']}
        counts = {}
        for ann in coco['annotations']:
            counts[names[ann['category_id']]] = counts.get(names[ann['category_id']], 0) + 1
        assert counts == summary[split]
        assert set(counts) <= set(ISAID_CLASSES) and sum(counts.values()) > 0
