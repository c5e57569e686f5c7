"""Exact anchor recall, ground-truth boxes in network-input pixels and the Optuna anchor search."""
import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest

from mmdet_custom.anchor_search import (
    AnchorSetting,
    GTBoxes,
    ResizeSpec,
    SearchSpace,
    data_suggested_anchors,
    fragment_name,
    gt_boxes_from_data_infos,
    max_iou_brute_force,
    max_iou_exact,
    open_study,
    parse_weights,
    recall_table,
    resolve_weights,
    run_study,
    stride_adjusted_anchors,
    write_anchor_fragment,
)
from mmdet_custom.utils.config import read_config

REPO_ROOT = Path(__file__).resolve().parents[1]
ROOT_CONFIG = REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r50_fpn_1x_isaid.py'
STRIDE_ADJUSTED = REPO_ROOT / 'configs' / '_base_' / 'anchors' / 'isaid_stride_adjusted.py'
ANCHORS_STEP = REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r50_fpn_anchors_1x_isaid.py'
SEED_ANCHORS = AnchorSetting((4, 8, 16, 32, 64), ((8, 16), (16, 32), (32, 64), (64, 128), (128, 256)),
                             (0.5, 1.0, 2.0))
MMDET_ANCHORS = AnchorSetting((4, 8, 16, 32, 64), ((32,), (64,), (128,), (256,), (512,)), (0.5, 1.0, 2.0))


def isaid_instances(raw_dir: Path):
    """Per devkit image: (file stem, split, width, height, boxes (N, 4) xyxy pixel extents, class indices)."""
    from PIL import Image
    from scipy import ndimage

    from mmdet_custom.datasets import ISAID_PALETTE

    colour_to_class = {tuple(c): i for i, c in enumerate(ISAID_PALETTE)}
    out = []
    for id_png in sorted(raw_dir.glob('*/images/*_instance_id_RGB.png')):
        stem = id_png.name[:-len('_instance_id_RGB.png')]
        rgb = np.asarray(Image.open(id_png).convert('RGB'), dtype=np.int64)
        colour = np.asarray(Image.open(id_png.with_name(f'{stem}_instance_color_RGB.png')).convert('RGB'))
        ids = rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
        _, labels = np.unique(ids, return_inverse=True)      # id 0 (background) -> label 0
        labels = labels.reshape(ids.shape)
        boxes, classes = [], []
        for label, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
            ys, xs = np.nonzero(labels[sl] == label)
            classes.append(colour_to_class[tuple(colour[sl][ys[0], xs[0]])])
        out.append((stem, id_png.parents[1].name, ids.shape[1], ids.shape[0], np.asarray(boxes, float),
                    np.asarray(classes)))
    return out


# ----------------------------------------------------------------------------------------------- exact recall
def test_max_iou_hand_computed():
    anchors = AnchorSetting((4, ), ((8., ), ), (1.0, ))
    shape = np.array([16, 16])       # 4 x 4 centres at 0, 4, 8, 12
    boxes = np.array([
        [0., 0., 8., 8.],            # exactly the anchor centred at (4, 4)
        [2., 2., 10., 10.],          # centre 6: centres 4 and 8 tie, overlap 6 x 6 -> 36 / (64 + 64 - 36)
        [13., 13., 16., 16.],        # inside the anchor centred at (12, 12): 9 / 64
    ])
    ious = max_iou_exact(boxes, shape, anchors)
    np.testing.assert_allclose(ious, [1.0, 36 / 92, 9 / 64], rtol=0, atol=1e-12)
    # 4 x 4 anchors: the box centre 14.5 is nearest 16, off the 4 x 4 grid, so clamped to 12: overlap 1 x 1
    small = AnchorSetting((4, ), ((4., ), ), (1.0, ))
    np.testing.assert_allclose(max_iou_exact(boxes[2:], shape, small), [1 / (9 + 16 - 1)], rtol=0, atol=1e-12)
    # a 20 x 20 input adds the centre 16: overlap 2 x 2
    np.testing.assert_allclose(max_iou_exact(boxes[2:], np.array([20, 20]), small), [4 / (9 + 16 - 4)],
                               rtol=0, atol=1e-12)
    # ratio h / w = 4: w = 8 / 2 = 4, h = 16; a box of that shape at a grid centre matches it exactly
    tall = AnchorSetting((4, ), ((8., ), ), (4.0, ))
    np.testing.assert_allclose(max_iou_exact(np.array([[6., 0., 10., 16.]]), shape, tall), [1.0])
    # center_offset 0.5: centres at 2, 6, 10, 14; the box centred at 6 matches exactly
    offset = AnchorSetting((4, ), ((8., ), ), (1.0, ), center_offset=0.5)
    np.testing.assert_allclose(max_iou_exact(boxes[1:2], shape, offset), [1.0])


@pytest.mark.parametrize('anchors', [SEED_ANCHORS, MMDET_ANCHORS,
                                     AnchorSetting((8, 16), ((10., 23.), (40., 41.)), (0.3, 1.7), 0.5)],
                         ids=['seed', 'mmdet', 'offset'])
def test_exact_equals_brute_force_random(anchors):
    rng = np.random.default_rng(0)
    img_shapes = np.array([[96, 128], [64, 64], [160, 96]])
    shapes = img_shapes[rng.integers(0, len(img_shapes), 600)]
    h, w = shapes[:, 0].astype(float), shapes[:, 1].astype(float)
    size = np.exp(rng.uniform(np.log(0.05), np.log(300.), (600, 2)))    # tiny to larger than the image
    cx, cy = rng.uniform(-10, w + 10), rng.uniform(-10, h + 10)          # some centres outside the image
    boxes = np.stack([cx - size[:, 0] / 2, cy - size[:, 1] / 2, cx + size[:, 0] / 2, cy + size[:, 1] / 2], 1)
    boxes = np.clip(boxes, 0, np.stack([w, h, w, h], 1))
    # boxes flush with each border and the whole image
    boxes[:4] = [[0, 0, 3, 5], [w[1] - 2, h[1] - 7, w[1], h[1]], [0, 0, w[2], h[2]], [0, h[3] - 1, 1, h[3]]]
    # centres exactly between two grid centres of every stride (ties)
    boxes[4:8] = [[2, 2, 10, 6], [4, 0, 28, 16], [0, 8, 32, 40], [7.5, 3.5, 8.5, 4.5]]
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, shapes = boxes[keep], shapes[keep]
    exact = max_iou_exact(boxes, shapes, anchors, chunk_size=97)
    brute = max_iou_brute_force(boxes, shapes, anchors)
    assert np.abs(exact - brute).max() <= 1e-9
    assert exact.min() < 0.05 and exact.max() > 0.7     # a real spread of IoUs, not all 0 or all 1
    np.testing.assert_array_equal(max_iou_exact(boxes, shapes, anchors, num_threads=2), exact)


def _max_iou_mmdet(boxes, img_shape, anchors):
    """The reference in mmdet's own terms: every prior of the generator the config builds
    (``TASK_UTILS.build(anchors.generator_cfg()).grid_priors``) against every box by mmdet's ``bbox_overlaps``."""
    import torch
    from mmdet.registry import TASK_UTILS
    from mmdet.structures.bbox import bbox_overlaps

    import mmdet_custom.models  # noqa: F401  (registers PerLevelAnchorGenerator)
    from mmdet_custom.anchor_search.recall import grid_counts
    generator = TASK_UTILS.build(anchors.generator_cfg())
    featmap_sizes = [tuple(int(v) for v in grid_counts(img_shape, s)) for s in anchors.strides]
    priors = torch.cat(generator.grid_priors(featmap_sizes, dtype=torch.float64, device='cpu'))
    return bbox_overlaps(torch.as_tensor(boxes, dtype=torch.float64), priors).max(dim=1).values.numpy()


def test_exact_equals_brute_force_and_mmdet_real_isaid(isaid_raw_dir):
    """The exact recall on the real boxes against the float64 brute force (1e-9) and against mmdet's own generator
    + bbox_overlaps (1e-6: mmdet makes its base anchors in float32)."""
    resize = ResizeSpec(scale=(800, 800), keep_ratio=True)
    n_checked = 0
    for stem, _, width, height, boxes, _ in isaid_instances(isaid_raw_dir):
        new_w, new_h, sx, sy = resize.output_size(width, height)
        scaled = boxes * [sx, sy, sx, sy]
        shape = np.array([math.ceil(new_h / 32) * 32, math.ceil(new_w / 32) * 32])
        for anchors in (SEED_ANCHORS, MMDET_ANCHORS):
            exact = max_iou_exact(scaled, shape, anchors)
            assert np.abs(exact - max_iou_brute_force(scaled, shape, anchors)).max() <= 1e-9, stem
            reference = _max_iou_mmdet(scaled, shape, anchors)
            assert reference.min() < 0.5 < reference.max()
            np.testing.assert_allclose(exact, reference, atol=1e-6, err_msg=stem)
        n_checked += len(boxes)
    assert n_checked == 131 + 59    # P0005 (train) and P0003 (val) of the devkit sample


def test_recall_table_hand_computed():
    ious = np.array([0.9, 0.69, 0.7, 0.4, 0.75])
    labels = np.array([0, 0, 1, 1, 1])
    areas = np.array([10., 32.**2, 5000., 96.**2, 1e5])
    table = recall_table(ious, [0.5, 0.7], labels, ('ship', 'plane'), areas)
    assert table['all'] == {0.5: 0.8, 0.7: 0.6, 'num': 5}
    assert table['ship'] == {0.5: 1.0, 0.7: 0.5, 'num': 2}
    assert table['plane'][0.7] == pytest.approx(2 / 3)
    assert table['small'] == {0.5: 1.0, 0.7: 1.0, 'num': 1}               # 32**2 itself is medium
    assert table['medium'] == {0.5: 1.0, 0.7: 0.5, 'num': 2}
    assert table['large'] == {0.5: 0.5, 0.7: 0.5, 'num': 2}


# ----------------------------------------------------------------------------------------------- boxes
def test_resize_spec_matches_mmcv_rounding():
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(800, 800), keep_ratio=True)]
    resize = ResizeSpec.from_pipeline(pipeline)
    # P0005 is 884 x 977 (w x h): factor min(800 / 977, 800 / 884) = 0.81883, (884 * f + 0.5, 977 * f + 0.5)
    assert resize.output_size(884, 977) == (724, 800, 724 / 884, 800 / 977)
    assert ResizeSpec(scale=(1333, 800), keep_ratio=True).output_size(800, 800)[:2] == (800, 800)
    assert ResizeSpec(scale=(1333, 800), keep_ratio=False).output_size(800, 600) == (1333, 800, 1333 / 800,
                                                                                       800 / 600)
    assert ResizeSpec(scale_factor=0.5, keep_ratio=True).output_size(801, 600)[:2] == (401, 300)
    with pytest.raises(ValueError, match='RandomResize'):
        ResizeSpec.from_pipeline([dict(type='RandomResize', scale=[(800, 800), (1000, 1000)])])
    with pytest.warns(UserWarning, match='no Resize'):
        assert ResizeSpec.from_pipeline([dict(type='LoadImageFromFile')]).output_size(10, 20) == (10, 20, 1., 1.)


def _info(img_id, w, h, instances):
    return dict(img_id=img_id, width=w, height=h, instances=[
        dict(bbox=b, bbox_label=lab, ignore_flag=ign) for b, lab, ign in instances])


def test_gt_boxes_from_data_infos_scales_pads_and_skips():
    resize = ResizeSpec(scale=(800, 800), keep_ratio=True)
    infos = [
        _info(7, 400, 200, [([10, 20, 30, 60], 1, 0),          # x2 scale -> [20, 40, 60, 120]
                            ([0, 0, 50, 50], 0, 1),            # crowd
                            ([390, 100, 420, 150], 0, 0),      # crosses the border: clipped to 800
                            ([400, 10, 410, 20], 0, 0)]),      # outside the image: zero width once clipped
        _info(8, 100, 100, [([5, 5, 5, 9], 0, 0)]),             # zero width
    ]
    with pytest.warns(UserWarning, match='skipped 2 box'):
        gt = gt_boxes_from_data_infos(infos, ('a', 'b'), resize, pad_size_divisor=32, source='toy.json')
    np.testing.assert_allclose(gt.boxes, [[20, 40, 60, 120], [780, 200, 800, 300]])
    np.testing.assert_array_equal(gt.labels, [1, 0])
    np.testing.assert_array_equal(gt.img_ids, [7, 7])
    np.testing.assert_array_equal(gt.img_shapes, [[416, 800], [416, 800]])   # 800 x 400 padded to 32
    assert (gt.num_images, gt.num_crowd, gt.num_zero_size) == (2, 1, 2)
    with pytest.raises(ValueError, match='toy.json: no ground-truth boxes'):
        gt_boxes_from_data_infos([_info(1, 10, 10, [])], ('a', ), resize, source='toy.json')
    with pytest.raises(ValueError, match='toy.json: no ground-truth boxes'), pytest.warns(UserWarning):
        gt_boxes_from_data_infos(infos[1:], ('a', ), resize, source='toy.json')


# ----------------------------------------------------------------------------------------------- search
def _toy_gt(n=300, seed=0) -> GTBoxes:
    rng = np.random.default_rng(seed)
    wh = np.exp(rng.normal(np.log(14), 0.7, (n, 2)))
    xy = rng.uniform(0, 256 - wh)
    boxes = np.concatenate([xy, xy + wh], 1)
    return GTBoxes(boxes, rng.integers(0, 2, n), np.zeros(n, int), np.tile([256, 256], (n, 1)), ('a', 'b'),
                   'toy', 1)


def test_weights_parsing():
    assert parse_weights(['pos=0.7', '0.7=0.3']) == (('pos', 0.7), (0.7, 0.3))
    assert resolve_weights(parse_weights(['pos=1', '0.5=1']), 0.6) == ((0.6, 1.0), (0.5, 1.0))
    for bad, match in ((['0.7'], 'IOU=WEIGHT'), (['1.5=1'], r'not in \(0, 1\]'), (['0.5=-1'], 'negative'),
                       (['0.5=0'], 'sum to 0')):
        with pytest.raises(ValueError, match=match):
            parse_weights(bad)


def test_search_space_round_trip_and_snap():
    space = SearchSpace.around(SEED_ANCHORS)
    assert space.size_ranges[0] == (2.0, 32.0, 2.0) and space.size_ranges[-1] == (32.0, 512.0, 32.0)
    assert space.setting(space.params(SEED_ANCHORS)) == SEED_ANCHORS
    snapped = space.snap(AnchorSetting(SEED_ANCHORS.strides, ((9.1, 1.), (16, 33), (32, 64), (64, 128),
                                                              (128, 9999)), (0.1, 1.0, 2.12345)))
    assert snapped.sizes[0] == (2.0, 10.0) and snapped.sizes[1] == (16.0, 32.0) and snapped.sizes[4][1] == 512.
    assert snapped.ratios == (0.2, 1.0, 2.123)
    with pytest.raises(ValueError, match='do not fit'):
        space.params(MMDET_ANCHORS)
    # mmdet's stock anchors (one size, 8 x stride) are inside their own space
    assert SearchSpace.around(MMDET_ANCHORS).size_ranges[0] == (2.0, 32.0, 2.0)


def test_data_suggested_anchors_follow_the_boxes():
    gt = _toy_gt(2000)
    space = SearchSpace.around(SEED_ANCHORS)
    suggested = data_suggested_anchors(gt, SEED_ANCHORS, space)
    assert suggested == space.snap(suggested)
    # boxes of median side ~14 px: the P2 sizes bracket the small boxes, the empty P6 keeps the seed's sizes
    assert suggested.sizes[0][0] < 14 < suggested.sizes[1][1] and suggested.sizes[4] == (128., 256.)
    assert suggested.ratios[0] < 1 < suggested.ratios[2]
    # all boxes of one size: both P2 quantiles snap to 14, the second is stepped up to 16
    same = GTBoxes(np.tile([[0., 0., 14., 14.]], (10, 1)), np.zeros(10, int), np.zeros(10, int),
                   np.tile([256, 256], (10, 1)))
    assert data_suggested_anchors(same, SEED_ANCHORS, space).sizes[0] == (14., 16.)


def test_study_resumes_and_keeps_baseline(tmp_path):
    gt = _toy_gt()
    space = SearchSpace.around(SEED_ANCHORS)
    weights = resolve_weights((('pos', 0.7), (0.7, 0.3)), 0.7)
    storage = f'sqlite:///{tmp_path}/nested/anchors.db'
    for _ in range(2):
        study = open_study(storage, 'toy', space, weights, seed=0, data='toy')
        run_study(study, space, gt, weights, 3, enqueue=[('config', SEED_ANCHORS)])
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.value is not None for t in trials)
    assert trials[0].params == space.params(SEED_ANCHORS) and trials[0].user_attrs['role'] == 'config'
    assert sum(t.params == space.params(SEED_ANCHORS) for t in trials) == 1
    assert study.best_value >= trials[0].value
    assert 0 < trials[0].user_attrs['recall@0.7'] < 1
    # the same storage and name with another search space or objective is refused
    other = SearchSpace.around(stride_adjusted_anchors((4, 8, 16, 32)))
    with pytest.raises(ValueError, match='different search space'):
        open_study(storage, 'toy', other, weights)
    with pytest.raises(ValueError, match='different objective'):
        open_study(storage, 'toy', space, resolve_weights((('pos', 1.0), ), 0.7))


def test_fragment_written_loads_and_builds(tmp_path):
    from mmdet.registry import TASK_UTILS
    from mmengine import Config
    setting = AnchorSetting((4, 8, 16, 32, 64), ((6, 12), (14, 30), (32, 48), (64, 96), (160, 256)),
                            (0.333, 1.0, 2.5))
    frag = write_anchor_fragment(str(tmp_path / 'frag.py'), setting, ['study: toy'], name=fragment_name('toy-1'),
                                 pos_iou_thr=0.5)
    assert [p.name for p in tmp_path.iterdir()] == ['frag.py']     # no temporary file left
    text = Path(frag).read_text()
    assert text.startswith('# study: toy\n') and '#   model = _base_._anchors_toy_1\n' in text
    assert '# pos_iou_thr 0.5: the RPN positive IoU' in text
    # the written recipe, from the root config (stock anchors, RPN positive IoU 0.7) and from the anchors step,
    # which already inherits the stride-adjusted fragment's _rpn_anchor_generator
    for parent, parent_iou in ((ROOT_CONFIG, 0.7), (ANCHORS_STEP, 0.5)):
        assert Config.fromfile(str(parent)).model.train_cfg.rpn.assigner.pos_iou_thr == parent_iou
        variant = tmp_path / f'variant_{parent.stem}.py'
        variant.write_text(f"_base_ = ['{parent}', '{frag}']\nmodel = _base_._anchors_toy_1\n")
        cfg = read_config(str(variant))
        generator = TASK_UTILS.build(cfg.model.rpn_head.anchor_generator)
        assert generator.sizes == [list(map(float, s)) for s in setting.sizes]
        assert generator.ratios.tolist() == pytest.approx(list(setting.ratios))
        assert generator.num_base_priors == [6] * 5
        assert 'scales' not in cfg.model.rpn_head.anchor_generator  # _delete_ dropped the stock keys
        # the IoU the recall was optimised at, whatever the parent's; the rest of the assigner is the parent's
        assert cfg.model.train_cfg.rpn.assigner.pos_iou_thr == 0.5
        assert cfg.model.train_cfg.rpn.assigner.type == 'SparseMaxIoUAssigner'
        assert cfg.model.train_cfg.rpn.assigner.neg_iou_thr == 0.3
        assert cfg.model.roi_head.bbox_head.num_classes == 15


def test_fragment_without_pos_iou_sets_only_the_anchors(tmp_path):
    from mmengine import Config
    frag = write_anchor_fragment(str(tmp_path / 'frag.py'), SEED_ANCHORS, name='_anchors_x')
    part = Config.fromfile(frag)._anchors_x
    assert set(part) == {'rpn_head'} and part.rpn_head.anchor_generator._delete_ is True


def test_duplicate_base_name_is_one_line_naming_both_files(tmp_path):
    """The old recipe (the stride-adjusted fragment beside a config that already inherits it): mmengine's raw
    KeyError becomes one line naming the config, the key and the two files."""
    from mmdet_custom.utils.config import DuplicateBaseKeyError
    variant = tmp_path / 'variant.py'
    variant.write_text(f"_base_ = ['{ANCHORS_STEP}', '{STRIDE_ADJUSTED}']\n"
                       "model = dict(rpn_head=dict(anchor_generator=_base_._rpn_anchor_generator))\n")
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = '{variant}'\n")
    with pytest.raises(DuplicateBaseKeyError) as info:
        read_config(str(variant))
    message = str(info.value)
    assert '\n' not in message and isinstance(info.value, KeyError)
    assert message.startswith(f'config {variant}: its _base_ list holds two files that both define '
                              f'_rpn_anchor_generator: {STRIDE_ADJUSTED} (inherited through {ANCHORS_STEP}) and '
                              f'{STRIDE_ADJUSTED};')
    with pytest.raises(DuplicateBaseKeyError, match=f'config {child}: its base {variant} lists two files'):
        read_config(str(child))
    # what it replaces: mmengine names neither file
    from mmengine import Config
    with pytest.raises(KeyError, match='Duplicate key is not allowed among bases'):
        Config.fromfile(str(variant))


def test_stride_adjusted_fragment_is_the_library_set():
    from mmengine import Config
    frag = Config.fromfile(str(STRIDE_ADJUSTED))._rpn_anchor_generator
    expected = stride_adjusted_anchors((4, 8, 16, 32, 64)).generator_cfg()
    assert {k: v for k, v in frag.items() if k != '_delete_'} == expected and frag._delete_ is True


def _write_isaid_coco(raw_dir: Path, out: Path) -> Path:
    """A COCO json of the devkit sample's full images (boxes from the instance-id PNGs, one crowd box)."""
    from mmdet_custom.datasets import ISAID_CLASSES
    images, anns = [], []
    for img_id, (stem, split, width, height, boxes, classes) in enumerate(isaid_instances(raw_dir), start=1):
        images.append(dict(id=img_id, file_name=f'{split}/images/{stem}.png', width=width, height=height))
        for box, cls in zip(boxes, classes):
            x1, y1, x2, y2 = box.tolist()
            anns.append(dict(id=len(anns) + 1, image_id=img_id, category_id=int(cls) + 1, iscrowd=0,
                             bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1)))
    anns[0]['iscrowd'] = 1
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(ISAID_CLASSES)]
    out.write_text(json.dumps(dict(images=images, annotations=anns, categories=categories)))
    return out


@pytest.mark.slow
def test_tool_end_to_end_on_real_isaid(isaid_raw_dir, tmp_path, capsys):
    from mmdet.registry import TASK_UTILS
    from mmengine import Config
    main = runpy.run_path(str(REPO_ROOT / 'tools' / 'anchor_search.py'))['main']
    ann = _write_isaid_coco(isaid_raw_dir, tmp_path / 'instances.json')
    config = tmp_path / 'isaid_tiny.py'
    config.write_text(f"_base_ = ['{ROOT_CONFIG}']\n"
                      f"train_dataloader = dict(dataset=dict(data_root='{isaid_raw_dir}/', ann_file='{ann}',"
                      f" data_prefix=dict(img='')))\n")
    out = tmp_path / 'anchors' / 'found.py'
    storage = f'sqlite:///{tmp_path}/search.db'
    args = [str(config), '--trials', '4', '--storage', storage, '--study-name', 'tiny', '--out', str(out),
            '--work-dir', str(tmp_path / 'plots'), '--seed', '1']
    main(args)
    printed = capsys.readouterr().out
    assert '189 boxes in 2 images' in printed and '1 crowd' in printed     # 190 objects, one marked crowd
    for row in ('config', 'stride-adjusted', 'data-suggested', 'best'):
        assert f'\n{row} ' in printed
    text = out.read_text()
    assert 'study: tiny' in text and '4 completed trials' in text and str(ann) in text
    for name in ('optimization_history', 'param_importances', 'parallel_coordinate'):
        assert (tmp_path / 'plots' / f'{name}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    variant = tmp_path / 'variant.py'
    variant.write_text(f"_base_ = ['{config}', '{out}']\nmodel = _base_._anchors_tiny\n")
    generator = TASK_UTILS.build(Config.fromfile(str(variant)).model.rpn_head.anchor_generator)
    found = Config.fromfile(str(out))._anchors_tiny.rpn_head.anchor_generator
    assert 'pos_iou_thr 0.7' in text  # the root config's RPN positive IoU, which the search optimised at
    assert generator.sizes == [[float(v) for v in s] for s in found.sizes]
    assert generator.strides == [(s, s) for s in (4, 8, 16, 32, 64)]

    # resumed: 2 more trials in the same study, the config's anchors still tried once
    main(args[:2] + ['2'] + args[3:])
    import optuna
    study = optuna.load_study(study_name='tiny', storage=storage)
    assert len(study.trials) == 6
    assert sum(t.user_attrs.get('role') == 'config' for t in study.trials) == 1


def test_importances_skipped_gracefully(tmp_path):
    """One completed trial: the history and parallel-coordinate plots are drawn, the importances skipped with the
    reason (the plots and their names are the study engine's, shared with tools/hpo.py)."""
    import optuna

    from mmdet_custom.studies.plots import save_plots, written
    gt = _toy_gt(50)
    space = SearchSpace.around(SEED_ANCHORS)
    weights = resolve_weights((('pos', 1.0), ), 0.7)
    study = open_study('sqlite:///:memory:', 'one', space, weights)
    run_study(study, space, gt, weights, 1, enqueue=[('config', SEED_ANCHORS)])
    results = save_plots(study, str(tmp_path))
    assert results['param_importances'] == ('skipped: importances need >= 2 completed trials with different '
                                            'objective values')
    assert [Path(p).name for p in written(results)] == ['optimization_history.png', 'parallel_coordinate.png']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['optimization_history.png', 'parallel_coordinate.png']
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE, ))) == 1


def test_load_gt_boxes_on_converted_isaid_patches(isaid_raw_dir, tmp_path):
    """Boxes of the converter's 400 px patches, doubled by the root config's Resize((800, 800), keep_ratio)."""
    from mmengine import Config

    from mmdet_custom.anchor_search import load_gt_boxes
    from mmdet_custom.converters.isaid import convert_isaid
    convert_isaid(isaid_raw_dir, tmp_path, splits=['train'], patch_size=400, overlap=0, max_boxes=None,
                  max_empty_fraction=None, show_progress=False)
    coco = json.loads((tmp_path / 'annotations' / 'instances_train.json').read_text())
    names = {c['id']: c['name'] for c in coco['categories']}
    expected = [(a['bbox'][0] * 2, a['bbox'][1] * 2, (a['bbox'][0] + a['bbox'][2]) * 2,
                 (a['bbox'][1] + a['bbox'][3]) * 2, names[a['category_id']]) for a in coco['annotations']
                if not a.get('iscrowd') and a['bbox'][2] >= 1 and a['bbox'][3] >= 1 and a['area'] > 0]
    assert {(im['width'], im['height']) for im in coco['images']} == {(400, 400)}

    cfg = Config.fromfile(str(ROOT_CONFIG))
    cfg.train_dataloader.dataset.data_root = f'{tmp_path}/'
    gt = load_gt_boxes(cfg)
    got = sorted((*b, gt.classes[c]) for b, c in zip(gt.boxes.tolist(), gt.labels.tolist()))
    assert len(got) == len(expected) > 150
    np.testing.assert_allclose([g[:4] for g in got], [e[:4] for e in sorted(expected)], atol=1e-9)
    assert [g[4] for g in got] == [e[4] for e in sorted(expected)]
    assert (gt.img_shapes == 800).all() and gt.source.endswith('instances_train.json')
    exact = max_iou_exact(gt.boxes, gt.img_shapes, SEED_ANCHORS)
    assert np.abs(exact - max_iou_brute_force(gt.boxes, gt.img_shapes, SEED_ANCHORS)).max() <= 1e-9


# ----------------------------------------------------------------------------------------------- hardening: parallel
# workers, killed workers, bad input
def _worker_params(study):
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)]


def test_workers_with_the_same_seed_never_repeat_trials(tmp_path):
    """Two workers of one study, both --seed 0, taking turns: every trial is new; one worker is reproducible."""
    gt = _toy_gt(100)
    space = SearchSpace.around(SEED_ANCHORS)
    weights = resolve_weights((('pos', 1.0), ), 0.7)
    storage = f'sqlite:///{tmp_path}/shared.db'
    workers = [open_study(storage, 'shared', space, weights, seed=0) for _ in range(2)]
    for _ in range(3):  # (with one random stream per process, worker 2 repeated each trial of worker 1 here)
        for study in workers:
            run_study(study, space, gt, weights, 1)
    params = _worker_params(workers[0])
    assert len(params) == 6 and len(set(params)) == 6
    # the same seed alone: the same trials, trial by trial
    runs = []
    for _ in range(2):
        study = open_study('sqlite:///:memory:', 'solo', space, weights, seed=0)
        run_study(study, space, gt, weights, 3)
        runs.append(_worker_params(study))
    assert runs[0] == runs[1] and len(set(runs[0])) == 3
    from mmdet_custom.anchor_search.sampler import trial_seed
    assert trial_seed(0, 1) != trial_seed(0, 2) and trial_seed(0, 1) == trial_seed(0, 1) != trial_seed(1, 1)


# A search worker killed (SIGKILL) during its third trial: the trial stays RUNNING in the storage until a worker
# resumes the study after the grace period.
_KILLED_WORKER = r'''
import os, sys, time
import numpy as np
import mmdet_custom.anchor_search.search as search
from mmdet_custom.anchor_search import GTBoxes, SearchSpace, AnchorSetting, open_study, resolve_weights, run_study
storage, ready = sys.argv[1:3]
rng = np.random.default_rng(0)
xy = rng.uniform(0, 200, (50, 2))
gt = GTBoxes(np.concatenate([xy, xy + 14], 1), np.zeros(50, int), np.zeros(50, int), np.tile([256, 256], (50, 1)))
space = SearchSpace.around(AnchorSetting((4, 8), ((8., 16.), (16., 32.)), (0.5, 1.0, 2.0)))
weights = resolve_weights((('pos', 1.0), ), 0.7)
evaluate, calls = search.evaluate, []
def evaluate_or_hang(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        open(ready, 'w').close()
        time.sleep(600)
    return evaluate(*args, **kwargs)
search.evaluate = evaluate_or_hang
study = open_study(storage, 'killed', space, weights, heartbeat_interval=1, grace_period=1)
run_study(study, space, gt, weights, 5)
'''


def test_trial_of_a_killed_worker_is_marked_failed_on_resume(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna

    storage, ready = f'sqlite:///{tmp_path}/killed.db', tmp_path / 'ready'
    env = dict(os.environ, MMDET_CUSTOM_NO_REGISTER='1')
    proc = subprocess.Popen([sys.executable, '-c', _KILLED_WORKER, storage, str(ready)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Optuna's heartbeat thread records the third trial a moment after it starts; a trial killed before its first
    # beat is never found stale, so kill only once the beat is stored (a fixed sleep was flaky under load)
    import sqlite3
    with sqlite3.connect(tmp_path / 'killed.db', timeout=60) as db:
        while not db.execute("SELECT 1 FROM trial_heartbeats h JOIN trials t ON t.trial_id = h.trial_id "
                             "WHERE t.state = 'RUNNING'").fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    states = [t.state for t in optuna.load_study(study_name='killed', storage=storage).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.RUNNING]

    time.sleep(2.5)  # the heartbeat is now older than the grace period (1 s; sqlite's clock counts seconds)
    gt = _toy_gt(50)
    space = SearchSpace.around(AnchorSetting((4, 8), ((8., 16.), (16., 32.)), (0.5, 1.0, 2.0)))
    weights = resolve_weights((('pos', 1.0), ), 0.7)
    with pytest.warns(UserWarning, match=r"trial\(s\) \[2\] were left RUNNING by a killed worker .* marked FAIL"):
        study = open_study(storage, 'killed', space, weights, heartbeat_interval=1, grace_period=1)
    run_study(study, space, gt, weights, 1)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.FAIL,
                                                               optuna.trial.TrialState.COMPLETE]


def _tool_config(tmp_path, ann: Path, data_root: Path) -> Path:
    config = tmp_path / 'cfg.py'
    config.write_text(f"_base_ = ['{ROOT_CONFIG}']\n"
                      f"train_dataloader = dict(dataset=dict(data_root='{data_root}/', ann_file='{ann}',"
                      f" data_prefix=dict(img='')))\n")
    return config


def test_tool_refuses_bad_input_before_any_trial(tmp_path, capsys):
    """--out unwritable, --trials 0 on a new study, an empty or malformed train json: one error line, exit 2,
    before any trial (the storage is never created)."""
    from mmdet_custom.utils.cli import run_cli
    main = runpy.run_path(str(REPO_ROOT / 'tools' / 'anchor_search.py'))['main']
    from mmdet_custom.datasets import ISAID_CLASSES
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(ISAID_CLASSES)]
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(dict(images=[dict(id=1, file_name='a.png', width=100, height=100)], annotations=[],
                                     categories=categories)))
    broken = tmp_path / 'broken.json'
    broken.write_text('{"images": [')
    (tmp_path / 'a_file').write_text('')
    db = tmp_path / 'search.db'

    def run(ann, *extra):
        args = [str(_tool_config(tmp_path, ann, tmp_path)), '--storage', f'sqlite:///{db}', '--study-name', 's',
                '--out', str(tmp_path / 'frag.py'), '--work-dir', str(tmp_path / 'plots'), '--trials', '2', *extra]
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and 'Traceback' not in err and err.count('\n') == 1, err
        return err

    err = run(empty, '--out', str(tmp_path / 'a_file' / 'frag.py'))
    assert err.startswith('error: --out ') and 'a_file is a file, not a folder' in err
    assert 'is a folder' in run(empty, '--out', str(tmp_path))
    assert '--work-dir' in run(empty, '--work-dir', str(tmp_path / 'a_file'))
    assert not db.exists()  # nothing ran
    err = run(empty, '--trials', '0')
    assert "--trials 0: study 's' holds no completed trial" in err
    assert 'empty.json' in run(empty)  # the dataset's own check, or the anchor search's "no ground-truth boxes"
    err = run(broken)
    assert 'broken.json is not valid json' in err
    assert not (tmp_path / 'frag.py').exists()


def test_dataset_wrappers_unwrapped_with_the_nearest_pipeline():
    """Repeat / MultiImageMix wrappers (through datasets.utils.innermost_dataset_cfg) and Concat lists: each leaf once,
    with its own Resize, else the nearest wrapper's pipeline."""
    from mmdet_custom.anchor_search.data import _leaf_dataset_cfgs
    resize, load = dict(type='Resize', scale=(64, 64)), dict(type='LoadImageFromFile')
    coco = dict(type='CocoDataset', pipeline=[load])
    assert _leaf_dataset_cfgs(dict(type='RepeatDataset', times=3, dataset=coco)) == [(coco, [load])]
    mix = dict(type='MultiImageMixDataset', pipeline=[resize], dataset=dict(type='RepeatDataset', dataset=coco))
    leaves = _leaf_dataset_cfgs(mix)
    assert leaves == [(coco, [resize])] and leaves[0][0] is coco
    own = dict(type='CocoDataset', pipeline=[dict(type='Resize', scale=(32, 32))])
    concat = dict(type='RepeatDataset', dataset=dict(type='ConcatDataset', pipeline=[resize], datasets=[coco, own]))
    assert _leaf_dataset_cfgs(concat) == [(coco, [resize]), (own, own['pipeline'])]


def test_empty_training_set_is_a_clear_error(tmp_path):
    """mmdet's CocoDataset with filter_empty_gt drops every image of a json without annotations."""
    from mmengine import Config

    from mmdet_custom.anchor_search import AnchorSearchError, load_gt_boxes
    ann = tmp_path / 'no_boxes.json'
    ann.write_text(json.dumps(dict(images=[dict(id=1, file_name='a.png', width=64, height=64)], annotations=[],
                                   categories=[dict(id=1, name='cell')])))
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='CocoDataset', data_root=str(tmp_path), ann_file=str(ann), data_prefix=dict(img=''),
        metainfo=dict(classes=('cell', )),
        filter_cfg=dict(filter_empty_gt=True), pipeline=[dict(type='Resize', scale=(64, 64), keep_ratio=True)]))))
    with pytest.raises(AnchorSearchError, match=r'no_boxes\.json: the training set of .* holds no image'):
        load_gt_boxes(cfg)
    cfg.train_dataloader.dataset.filter_cfg.filter_empty_gt = False
    with pytest.raises(AnchorSearchError, match=r'no_boxes\.json: no ground-truth boxes to measure anchors on'):
        load_gt_boxes(cfg)


def test_run_study_drops_a_queued_trial_another_worker_reported_first():
    """SQLite has no row locks, so two workers can pop the same queued trial; the one that reports second gets
    Optuna's UpdateFinishedTrialError. Its copy is dropped with a warning and it still runs its own share."""
    import optuna

    class Study:
        calls = 0

        def optimize(self, objective, n_trials):
            assert n_trials == 1
            self.calls += 1
            if self.calls == 1:
                raise optuna.exceptions.UpdateFinishedTrialError('Trial#0 has already finished and can not be updated.')

    study = Study()
    with pytest.warns(UserWarning, match='reported first'):
        run_study(study, None, None, (), 3)
    assert study.calls == 4    # the dropped copy + 3 trials of its own
