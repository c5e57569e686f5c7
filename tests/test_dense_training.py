"""Dense patches through the iSAID configs: polygons stay polygons, RLE masks are kept, bad coordinates are refused,
training losses are identical with mmdet's assigner and ours, and 10,000 objects assign with bounded memory."""
import copy
import json

import numpy as np
import pytest
import torch
from helpers import load_config, shrink_for_cpu
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.structures import InstanceData

from mmdet_custom.analysis.dense_bench import write_dense_dataset
from mmdet_custom.models.task_modules import SparseMaxIoUAssigner
from mmdet_custom.utils.errors import UserError

ANCHORS_CONFIG = 'configs/mask_rcnn/mask-rcnn_r50_fpn_anchors_1x_isaid.py'
ROOT_CONFIG = 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'


def _dataset(cfg, data, test_mode=False):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import mmdet_custom.register  # noqa: F401
    init_default_scope('mmdet')
    ds = copy.deepcopy(cfg.train_dataloader.dataset)
    ds.update(data_root='', ann_file=data['ann_file'], data_prefix=dict(img=data['img_dir'] + '/'), test_mode=test_mode)
    return DATASETS.build(ds)


@pytest.fixture(scope='module')
def dense_1239(tmp_path_factory):
    """Two 800 px patches with 1,239 polygon objects each (iSAID's densest reported patch)."""
    return write_dense_dataset(str(tmp_path_factory.mktemp('dense')), 1239, img_size=800, num_images=2)


def test_every_isaid_config_uses_the_sparse_assigner_and_compact_masks():
    from test_configs import CONFIGS  # every project config, globbed
    isaid = [p for p in CONFIGS if p.name.endswith('isaid.py') or p.name.endswith('isaid-smoke.py')]
    assert len(isaid) > 15
    for path in isaid:
        cfg = load_config(path)
        rcnn = cfg.model.train_cfg.rcnn
        for stage in [cfg.model.train_cfg.rpn] + (rcnn if isinstance(rcnn, list) else [rcnn]):
            assert stage.assigner.type == 'SparseMaxIoUAssigner', path
        loaders = [t['type'] for t in cfg.train_dataloader.dataset.pipeline if 'Annotations' in t['type']]
        assert loaders == ['LoadCompactAnnotations'], (path, loaders)


def test_dense_patch_keeps_polygons_through_the_pipeline(dense_1239):
    cfg = load_config(ROOT_CONFIG)
    dataset = _dataset(cfg, dense_1239)
    item = dataset[0]
    gt = item['data_samples'].gt_instances
    assert isinstance(gt.masks, PolygonMasks) and len(gt) == 1239
    assert gt.masks.height == 800 and gt.masks.width == 800
    # the polygons rasterise to the boxes' objects: every mask's extent lies within its box (+1 px)
    some = gt.masks[:50].to_ndarray()
    boxes = gt.bboxes.tensor[:50].numpy()
    for mask, (x1, y1, x2, y2) in zip(some, boxes):
        ys, xs = np.nonzero(mask)
        assert len(xs) > 0
        assert xs.min() >= x1 - 1 and xs.max() <= x2 + 1 and ys.min() >= y1 - 1 and ys.max() <= y2 + 1
    bytes_poly = sum(p.nbytes for obj in gt.masks.masks for p in obj)
    assert bytes_poly < 1239 * 200  # 64 B of coordinates per object vs 640 KB as a bitmap


def test_rle_masks_are_decoded_not_dropped(tmp_path):
    import pycocotools.mask as mask_util
    data = write_dense_dataset(str(tmp_path), 20, img_size=128, num_images=1)
    coco = json.loads(open(data['ann_file']).read())
    rle_mask = np.zeros((128, 128), np.uint8, order='F')
    rle_mask[10:30, 40:70] = 1
    rle = mask_util.encode(rle_mask)
    rle['counts'] = rle['counts'].decode()
    coco['annotations'][3].update(segmentation=rle, bbox=[40, 10, 30, 20], area=600)
    open(data['ann_file'], 'w').write(json.dumps(coco))
    cfg = load_config(ROOT_CONFIG)
    item = _dataset(cfg, data)[0]
    gt = item['data_samples'].gt_instances
    assert len(gt) == 20 and len(item['data_samples'].ignored_instances) == 0  # nothing ignored
    assert isinstance(gt.masks, BitmapMasks)
    # the RLE object (index 3: the pipeline keeps the order) is its 600 px, scaled by Resize's 800 / 128 on each side
    areas = gt.masks.masks.reshape(20, -1).sum(1)
    assert abs(areas[3] / (600 * (800 / 128) ** 2) - 1) < 0.03
    assert (areas > 0).all()


@pytest.mark.parametrize('field,value', [('bbox', [1.0, float('nan'), 5.0, 5.0]),
                                         ('segmentation', [[1.0, 2.0, float('inf'), 4.0, 5.0, 6.0]])])
def test_nan_coordinates_are_refused_naming_file_and_annotation(tmp_path, field, value):
    data = write_dense_dataset(str(tmp_path), 5, img_size=64, num_images=1)
    coco = json.loads(open(data['ann_file']).read())
    coco['annotations'][2][field] = value
    open(data['ann_file'], 'w').write(json.dumps(coco))  # json writes NaN / Infinity tokens
    with pytest.raises(UserError, match=rf"annotations.json: annotation id 2 .*'{field}.*NaN, infinite"):
        _dataset(load_config(ROOT_CONFIG), data)


def _cpu_cfg(assigner, max_pairs):
    cfg = shrink_for_cpu(load_config(ANCHORS_CONFIG), image_size=(192, 192), iters=None, proposals=50, rois=32)
    for stage in (cfg.model.train_cfg.rpn, cfg.model.train_cfg.rcnn):
        stage.assigner.type = assigner
        if assigner == 'SparseMaxIoUAssigner':
            stage.assigner.max_pairs = max_pairs  # small: the grouped path runs in both stages
    return cfg


@pytest.mark.slow
def test_training_losses_identical_with_either_assigner(tmp_path, one_torch_thread):
    """Two SGD steps of the anchors config (R18, 6 anchors per location, 192 px) on dense patches (300 objects,
    and a patch with none): every loss of every step is the same number with mmdet's assigner and ours."""
    from mmengine.optim import build_optim_wrapper

    from mmdet_custom.models.builder import build_model
    dense = write_dense_dataset(str(tmp_path / 'dense'), 300, img_size=192, num_images=2)
    empty = write_dense_dataset(str(tmp_path / 'empty'), 0, img_size=192, num_images=1)
    curves = {}
    for assigner in ('MaxIoUAssigner', 'SparseMaxIoUAssigner'):
        cfg = _cpu_cfg(assigner, max_pairs=20_000)
        torch.manual_seed(0)
        np.random.seed(0)
        model = build_model(cfg).train()
        optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        # (a json of empty patches alone is refused for training: read that one in test mode, same pipeline)
        items = [_dataset(cfg, d, test_mode=d is empty)[i] for d, i in ((dense, 0), (dense, 1), (empty, 0))]
        batches = [[items[0], items[1]], [items[2], items[0]]]
        curve = []
        for batch in batches:
            from mmengine.dataset import pseudo_collate
            losses = model.train_step(pseudo_collate(batch), optim)
            curve.append({k: v.item() for k, v in losses.items()})
        curves[assigner] = curve
    ours, ref = curves['SparseMaxIoUAssigner'], curves['MaxIoUAssigner']
    assert ours == ref
    assert ref[0]['loss_rpn_bbox'] > 0 and ref[0]['loss_mask'] > 0  # positives were assigned and learnt from


def _peak_rss_growth(fn):
    """Peak resident memory of this process during ``fn()`` above its level before, in bytes (Linux)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pytest.skip('peak RSS cannot be reset on this system')

    def field(name):
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(name))
    before = field('VmRSS:')
    out = fn()
    return field('VmHWM:') - before, out


def test_ten_thousand_objects_assign_with_bounded_memory(one_torch_thread):
    """10,000 objects on an 800 px patch against the full model's ~320k anchors: the full IoU matrix would be
    12.8 GB (plus temporaries); the sparse assigner stays far below 1 GB and assigns every object somewhere."""
    from test_sparse_assigner import dense_boxes, full_model_anchors
    priors = full_model_anchors(800)
    boxes, labels = dense_boxes(10_000, 800)
    assigner = SparseMaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.3, min_pos_iou=0.3)
    growth, result = _peak_rss_growth(
        lambda: assigner.assign(InstanceData(priors=priors), InstanceData(bboxes=boxes, labels=labels)))
    assert growth < 1 * 2**30, f'{growth / 2**30:.2f} GiB'
    assert result.gt_inds.shape == (priors.shape[0], )
    matched = torch.unique(result.gt_inds[result.gt_inds > 0])
    assert len(matched) > 9000  # nearly every object gets a positive anchor (some are outside or have zero area)


def test_dense_dataset_writer_gives_n_valid_objects_per_patch(tmp_path):
    data = write_dense_dataset(str(tmp_path), 1239, img_size=800, num_images=2)
    coco = json.loads(open(data['ann_file']).read())
    assert [sum(a['image_id'] == i for a in coco['annotations']) for i in (0, 1)] == [1239, 1239]
    for ann in coco['annotations']:
        x, y, w, h = ann['bbox']
        xs, ys = ann['segmentation'][0][0::2], ann['segmentation'][0][1::2]
        assert w > 0 and h > 0 and 0 <= x and x + w <= 800 and 0 <= y and y + h <= 800
        assert max(min(xs), 0) == x and max(min(ys), 0) == y  # the box is the polygon's extent, clipped


@pytest.mark.slow
def test_bench_dense_stops_a_step_above_the_memory_cap(tmp_path):
    """A step whose process passes --max-gib is killed and reported, not left to take the machine down."""
    from mmdet_custom.analysis.dense_bench import format_markdown, run_dense_benchmark
    report = run_dense_benchmark({'R50': ROOT_CONFIG}, objects=[10], variants=['ours'], max_gib=0.2, img_size=64,
                                 batch=1, progress=lambda line: None)
    row, = report['rows']
    assert row['stopped'] == 'stopped above 0.2 GiB' and 'peak_gib' not in row
    assert row['max_rss_seen_gib'] > 0.2
    assert '| R50 | 10 |  | stopped above 0.2 GiB |  |' in format_markdown(report)
