"""The whole-scene benchmark's library (mmdet_custom.apis.scene_bench, behind tools/benchmarks/bench_scene.py): its
settings, the run specs it refuses, the mask matching (mmdet_custom.analysis.scene_matching), and part 1 (the oracle
merge) in a worker process on a real mosaic. SAHI is optional: without it the SAHI row reports the import error and
the other rows are measured."""
import runpy

import numpy as np
import pytest
from helpers import REPO_ROOT

from mmdet_custom.analysis.scene_matching import duplicate_pairs, to_rle
from mmdet_custom.apis import scene_bench as sb
from mmdet_custom.utils.errors import UserError


def _args(*argv):
    """The tool's settings, as tools/benchmarks/bench_scene.py parses them."""
    return runpy.run_path(str(REPO_ROOT / 'tools' / 'benchmarks' / 'bench_scene.py'))['parse_args'](list(argv))


def test_run_specs_expand_b_and_w_and_refuse_malformed_ones():
    args = _args('--batch-size', '4', '--num-workers', '2')
    assert sb.parse_run('ours:tif:B:W:1', args) == ('ours', 'tif', 4, 2, True)
    assert sb.parse_run('sahi:png:1:0:0', args) == ('sahi', 'png', 1, 0, False)
    for bad in ('ours:tif:B:W', 'yolo:png:1:0:0', 'ours:tif:x:0:1', 'sahi:tif:1:0:0', 'sahi:png:1:1:0'):
        with pytest.raises(UserError, match='--runs'):
            sb.parse_run(bad, args)


def test_rle_and_duplicate_pairs():
    empty = to_rle([[0, 0, 1, 1]], 10, 10)  # no polygon of 3 points: an empty mask, not an error
    assert empty['size'] == [10, 10]
    square = [[2, 2, 8, 2, 8, 8, 2, 8]]
    results = [dict(category_id=1, segmentation=square), dict(category_id=1, segmentation=square),
               dict(category_id=2, segmentation=square)]
    assert duplicate_pairs(results, 10, 10) == 1  # same class, IoU 1; the other class does not count


def test_oracle_predictions_cut_objects_to_the_window():
    crop = np.ones((4, 6), bool)
    instances = [(3, (8, 8, 14, 12), crop)]  # label, extent x0 y0 x1 y1 in scene pixels, mask crop
    (label, box, mask), = sb.oracle_predictions(instances, (10, 0, 20, 20))
    assert label == 3 and box.tolist() == [0, 8, 4, 12] and mask.shape == (20, 10) and mask.sum() == 4 * 4
    assert sb.oracle_predictions(instances, (0, 0, 8, 8)) == []


@pytest.mark.slow  # a 1600 px mosaic, one worker process importing torch + mmdet: ~30 s
def test_oracle_merge_finds_every_object_once(isaid_raw_dir, tmp_path, monkeypatch):
    monkeypatch.setenv('MMDET_CUSTOM_SHARED_DATA', str(isaid_raw_dir.parent))
    args = _args('--size', '1600', '--work-dir', str(tmp_path), '--num-workers', '0', '--timeout', '600')
    png, tif, instances = sb.build_mosaic(1600, str(tmp_path))
    rows = sb.merge_quality(args, png, tif, instances)
    ours = next(r for r in rows if r['method'].startswith('mmdet_custom'))
    assert 'error' not in ours, ours
    assert ours['windows'] == 9 and ours['after'] == len(instances) < ours['before']
    assert (ours['exactly_once'], ours['duplicates'], ours['lost']) == (len(instances), 0, 0)
    assert ours['peak_mb'] >= ours['baseline_mb'] > 0
