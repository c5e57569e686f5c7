"""SparseMaxIoUAssigner: bit-identical to mmdet's MaxIoUAssigner (gt_inds, max_overlaps, labels) on real iSAID
patches and on synthetic dense ones with ties, boxes outside the image and zero-area boxes; bounded memory."""
import json
from collections import defaultdict

import pytest
import torch
from mmdet.models.task_modules.assigners import MaxIoUAssigner
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmengine.structures import InstanceData

from mmdet_custom.models.task_modules import PerLevelAnchorGenerator, SparseMaxIoUAssigner
from mmdet_custom.models.task_modules.assigners import morton_order

# many small tensor ops: two OpenMP threads spinning against other jobs cost them tens of times more (conftest)
pytestmark = pytest.mark.usefixtures('one_torch_thread')

# mmdet's Mask R-CNN train_cfg (rpn, rcnn) as the iSAID configs use them, plus the variants that take other paths
RPN = dict(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1)
SETTINGS = {
    'rpn': RPN,
    'rpn_pos0.5': dict(RPN, pos_iou_thr=0.5),
    'rcnn': dict(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
    'argmax_only': dict(RPN, gt_max_assign_all=False),
    'min_pos_iou_0': dict(RPN, min_pos_iou=0.0),  # zero IoUs matter: the chunked all-prior path
    'neg_range': dict(RPN, neg_iou_thr=(0.1, 0.3)),
    'ignore': dict(RPN, ignore_iof_thr=0.5),
    'ignore_wrt_gt': dict(RPN, ignore_iof_thr=0.5, ignore_wrt_candidates=False),
}


def assert_same(priors, gt_bboxes, gt_labels, settings, ignore=None, **sparse_kwargs):
    """Both assigners on the same inputs; every output equal bit for bit."""
    pred = InstanceData(priors=priors)
    gts = InstanceData(bboxes=gt_bboxes, labels=gt_labels)
    ign = None if ignore is None else InstanceData(bboxes=ignore)
    ref = MaxIoUAssigner(**settings).assign(pred, gts, ign)
    ours = SparseMaxIoUAssigner(**settings, **sparse_kwargs).assign(pred, gts, ign)
    assert ours.num_gts == ref.num_gts
    for field in ('gt_inds', 'max_overlaps', 'labels'):
        a, b = getattr(ours, field), getattr(ref, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        assert torch.equal(a, b), (field, int((a != b).sum()), 'of', a.numel())
    return ref


def grid_anchors(generator, size):
    """All anchors of an ``size`` x ``size`` input with FPN strides, as the RPN's assigner receives them."""
    shapes = [(size // s[0], size // s[1]) for s in generator.strides]
    return torch.cat(generator.grid_priors(shapes, device='cpu'))


def full_model_anchors(size):
    return grid_anchors(PerLevelAnchorGenerator(strides=[4, 8, 16, 32, 64],
                                                sizes=[[8, 16], [16, 32], [32, 64], [64, 128], [128, 256]],
                                                ratios=[0.5, 1.0, 2.0]), size)


def stock_anchors(size):
    return grid_anchors(AnchorGenerator(strides=[4, 8, 16, 32, 64], ratios=[0.5, 1.0, 2.0], scales=[8]), size)


def dense_boxes(n, size, seed=0):
    """``n`` objects like a parking lot: small boxes on a jittered grid, with exact duplicates (argmax ties),
    boxes equal to anchors (IoU 1 with several objects), boxes half or wholly outside the image, zero-area and
    inverted boxes, and a few large ones."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = 4 + torch.rand(n, 2, generator=g) * 24
    boxes = torch.cat([xy, xy + wh], 1).round()  # integral coordinates: many exactly equal IoUs
    k = n // 20
    boxes[1:k:2] = boxes[0:k - 1:2]                                   # duplicates
    boxes[k:k + 4] = torch.tensor([[-8., -8., 8., 8.], [0., 0., 16., 16.], [-4., -8., 4., 8.], [8., 8., 24., 24.]])
    boxes[k + 4] = torch.tensor([size - 10., size - 10., size + 30., size + 30.])  # half outside
    boxes[k + 5] = torch.tensor([size + 50., size + 50., size + 80., size + 90.])  # wholly outside
    boxes[k + 6] = torch.tensor([100., 100., 100., 100.])                           # zero area
    boxes[k + 7] = torch.tensor([50., 60., 50., 90.])                               # zero width
    boxes[k + 8] = torch.tensor([70., 70., 60., 60.])                               # inverted
    boxes[k + 9] = torch.tensor([0., 0., size * 0.9, size * 0.6])                   # large
    labels = torch.randint(0, 15, (n, ), generator=g)
    return boxes, labels


@pytest.mark.parametrize('name', sorted(SETTINGS))
def test_dense_synthetic_equals_mmdet(name):
    size = 320
    priors = full_model_anchors(size)
    boxes, labels = dense_boxes(600, size)
    ignore = torch.tensor([[30., 30., 90., 80.], [200., 10., 260., 40.]]) if name.startswith('ignore') else None
    # small max_pairs: groups are halved, the all-prior path is chunked (4 objects a chunk), many folds per prior
    ref = assert_same(priors, boxes, labels, SETTINGS[name], ignore, max_pairs=200_000, group_size=32)
    assert (ref.gt_inds > 0).sum() > 500  # a dense, non-trivial assignment
    if name == 'rpn':
        assert (ref.gt_inds == 0).any() and (ref.gt_inds == -1).any()


def test_ties_go_to_the_first_object_for_argmax_and_to_the_last_for_low_quality():
    """Two identical objects: mmdet's argmax keeps the first, its low-quality loop lets the last overwrite."""
    priors = torch.tensor([[0., 0., 10., 10.], [0., 0., 20., 20.], [100., 100., 110., 110.]])
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.], [0., 0., 10., 10.]])
    labels = torch.tensor([4, 5, 6])
    ref = assert_same(priors, boxes, labels, dict(RPN, pos_iou_thr=0.9), max_pairs=1, group_size=1)
    assert ref.gt_inds.tolist() == [3, 0, 0] and ref.labels.tolist() == [6, -1, -1]
    ref = assert_same(priors, boxes, labels, SETTINGS['rcnn'], max_pairs=1, group_size=1)
    assert ref.gt_inds.tolist() == [1, 0, 0] and ref.labels.tolist() == [4, -1, -1]


@pytest.mark.parametrize('n', [0, 1])
def test_empty_and_tiny_inputs(n):
    priors = stock_anchors(64)
    boxes, labels = dense_boxes(20, 64)
    assert_same(priors, boxes[:n], labels[:n], RPN, max_pairs=1)
    assert_same(priors[:0], boxes, labels, RPN, max_pairs=1)


def test_nan_box_is_refused_with_a_clear_error():
    boxes, labels = dense_boxes(50, 128)
    boxes[7, 2] = float('nan')
    with pytest.raises(ValueError, match=r'1 ground-truth box\(es\) of 50 have NaN or infinite'):
        SparseMaxIoUAssigner(**RPN, max_pairs=1).assign(InstanceData(priors=stock_anchors(128)),
                                                        InstanceData(bboxes=boxes, labels=labels))


def test_morton_order_groups_neighbours():
    boxes, _ = dense_boxes(400, 512)
    order = morton_order(boxes)
    assert sorted(order.tolist()) == list(range(400))
    centres = (boxes[order, :2] + boxes[order, 2:]) / 2
    # consecutive groups of 32 are far more compact than the same groups in the original order
    def spread(c):
        return sum(float((g.max(0).values - g.min(0).values).prod()) for g in c.split(32))
    assert spread(centres) < 0.3 * spread((boxes[:, :2] + boxes[:, 2:]) / 2)


@pytest.mark.needs_data
def test_real_isaid_patches_equal_mmdet(isaid_reference_dir):
    """The devkit's own train and val patches (P0005, P0003): the RPN with the anchors step's 6 anchors per location
    (and stock anchors), the RoI stage with proposals around the objects; every output equal."""
    checked = 0
    for split in ('train', 'val'):
        data = json.loads((isaid_reference_dir / f'instancesonly_filtered_{split}.json').read_text())
        per_image = defaultdict(list)
        for ann in data['annotations']:
            x, y, w, h = ann['bbox']
            per_image[ann['image_id']].append([x, y, x + w, y + h, ann['category_id']])
        # the densest patch of each split (mmdet's own assigner takes ~4 s per 800 px patch here)
        for img in sorted(data['images'], key=lambda im: -len(per_image.get(im['id'], [])))[:1]:
            rows = torch.tensor(per_image.get(img['id'], []), dtype=torch.float32).reshape(-1, 5)
            boxes, labels = rows[:, :4], rows[:, 4].long()
            size = max(img['width'], img['height'])
            assert_same(full_model_anchors(size), boxes, labels, SETTINGS['rpn_pos0.5'])  # the anchors step
            if split == 'train':
                assert_same(stock_anchors(size), boxes, labels, RPN)  # the root config
            g = torch.Generator().manual_seed(img['id'])
            jitter = (torch.rand(2000, 4, generator=g) - 0.5) * 16
            proposals = torch.cat([boxes[torch.randint(0, max(len(boxes), 1), (2000, ), generator=g)] + jitter
                                   if len(boxes) else jitter.abs() * 10, boxes])  # mmdet adds the gts
            assert_same(proposals, boxes, labels, SETTINGS['rcnn'], max_pairs=100_000)
            checked += len(boxes)
    assert checked > 100
