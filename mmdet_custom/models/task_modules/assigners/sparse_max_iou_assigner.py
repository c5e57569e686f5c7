"""mmdet's MaxIoUAssigner with memory and time that do not grow with objects x priors."""
from typing import Optional, Tuple

import torch
from mmdet.models.task_modules.assigners import AssignResult, BboxOverlaps2D, MaxIoUAssigner
from mmdet.models.task_modules.assigners.max_iou_assigner import perm_repeat_bboxes
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import get_box_tensor
from mmengine.structures import InstanceData
from torch import Tensor


def _spread_bits(v: Tensor) -> Tensor:
    """Interleave zeros between the 16 low bits of ``v`` (int64): the Morton-code half of one axis."""
    v = (v | (v << 8)) & 0x00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F
    v = (v | (v << 2)) & 0x33333333
    return (v | (v << 1)) & 0x55555555


def morton_order(boxes: Tensor, cell: float = 4.) -> Tensor:
    """Indices that sort boxes along a Z-order (Morton) curve of their centres.

    Consecutive runs of the result are spatially compact, so the union box of a run is small when its boxes are.

    Args:
        boxes (Tensor): ``(N, 4)`` xyxy boxes, finite, in pixels.
        cell (float): quantisation of the centres, in pixels. Defaults to 4.

    Returns:
        Tensor: ``(N,)`` int64 permutation (stable for equal codes).
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    centres = (boxes[:, :2] + boxes[:, 2:4]) / 2
    q = ((centres - centres.min(dim=0).values) / cell).long().clamp_(0, 0xFFFF)
    code = _spread_bits(q[:, 0]) | (_spread_bits(q[:, 1]) << 1)
    return torch.sort(code, stable=True).indices


@TASK_UTILS.register_module()
class SparseMaxIoUAssigner(MaxIoUAssigner):
    """:class:`~mmdet.models.task_modules.assigners.MaxIoUAssigner` whose memory is bounded by ``max_pairs``
    IoU values instead of the full ``(num_gts, num_priors)`` matrix, with bit-identical assignments.

    mmdet's assigner materialises ``overlaps = iou_calculator(gts, priors)`` plus ``(num_gts, num_priors, 2)``
    broadcast temporaries and loops in Python over the objects for the low-quality matches: on an 800 px iSAID
    patch with 1,239 objects and ~320k anchors that is several GiB per image. The assignment itself only needs,
    per prior, the best IoU and the first object reaching it, and, per object, the priors reaching that object's
    best IoU. IoU is zero unless a box and a prior overlap, so this assigner:

    1. sorts the objects along a Z-order curve of their centres and takes them in small, spatially compact groups;
    2. per group, keeps only the priors that overlap the group's union box (all others have IoU exactly 0 with
       every object of the group) and computes the group's IoUs with ``iou_calculator``, ``<= max_pairs``
       values at a time (groups are halved until they fit; one object is never split);
    3. folds the group into running per-prior maxima with mmdet's tie rules: the *first* object of the
       maximal IoU wins ``argmax`` (``Tensor.max``), and in the low-quality step the *last* object of the list
       wins a shared prior (mmdet's loop overwrites in order).

    Where zero IoUs can matter (``match_low_quality`` with ``min_pos_iou <= 0``, where an object whose best IoU
    is 0 takes every prior, or an ``iou_calculator`` other than plain :class:`BboxOverlaps2D`) it falls back to
    the same running computation over *all* priors in chunks of objects, in their order: still bounded, never the
    full matrix. Problems with ``num_gts * num_priors <= max_pairs`` go to mmdet's own code unchanged.

    Every IoU it compares is computed by the configured ``iou_calculator`` from the same two boxes, elementwise,
    so ``gt_inds``, ``max_overlaps`` and ``labels`` equal :class:`MaxIoUAssigner`'s bit for bit, ties included
    (tested on real iSAID patches and on synthetic dense ones with duplicate objects, boxes outside the image
    and zero-area boxes). Memory: ``O(num_priors + max_pairs)``; time: proportional to the overlapping pairs,
    plus one ``O(num_priors)`` candidate pass per group.

    Args:
        max_pairs (int): Most IoU values computed at once (each costs ~40 bytes of temporaries). Defaults to
            ``2 ** 22``.
        group_size (int): Largest number of objects per group. Defaults to 64.
        *args, **kwargs: :class:`MaxIoUAssigner`'s (``pos_iou_thr``, ``neg_iou_thr``, ``min_pos_iou``,
            ``gt_max_assign_all``, ``ignore_iof_thr``, ``ignore_wrt_candidates``, ``match_low_quality``,
            ``gpu_assign_thr``, ``iou_calculator``, ``perm_repeat_gt_cfg``), with the same meaning.

    Raises:
        ValueError: ``max_pairs`` or ``group_size`` < 1 (at construction); at :meth:`assign`, a ground-truth box
            or prior with a NaN or infinite coordinate (mmdet would assign against NaN IoUs silently).

    Example:
        >>> import torch
        >>> from mmengine.structures import InstanceData
        >>> self = SparseMaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.3, max_pairs=1)
        >>> priors = InstanceData(priors=torch.tensor([[0., 0., 10., 10.], [10., 10., 20., 20.]]))
        >>> gts = InstanceData(bboxes=torch.tensor([[0., 0., 10., 9.]]), labels=torch.tensor([3]))
        >>> result = self.assign(priors, gts)
        >>> result.gt_inds.tolist(), result.labels.tolist()
        ([1, 0], [3, -1])
    """

    def __init__(self, *args, max_pairs: int = 1 << 22, group_size: int = 64, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if max_pairs < 1 or group_size < 1:
            raise ValueError(f'SparseMaxIoUAssigner: max_pairs and group_size must be >= 1, got {max_pairs} and '
                             f'{group_size}')
        self.max_pairs = int(max_pairs)
        self.group_size = int(group_size)

    @property
    def sparse_exact(self) -> bool:
        """bool: whether IoUs of non-overlapping pairs (exactly 0) cannot change the assignment."""
        zero_irrelevant = not self.match_low_quality or self.min_pos_iou > 0
        return zero_irrelevant and type(self.iou_calculator) is BboxOverlaps2D

    def assign(self,
               pred_instances: InstanceData,
               gt_instances: InstanceData,
               gt_instances_ignore: Optional[InstanceData] = None,
               **kwargs) -> AssignResult:
        """Assign each prior to an object (1-based), to the background (0) or to nothing (-1).

        Args:
            pred_instances (InstanceData): ``priors``, ``(num_priors, 4)`` xyxy (or 5 columns, or box type).
            gt_instances (InstanceData): ``bboxes`` ``(num_gts, 4)`` xyxy and ``labels`` ``(num_gts,)``.
            gt_instances_ignore (InstanceData, optional): ``bboxes`` to ignore (with ``ignore_iof_thr > 0``).

        Returns:
            AssignResult: ``gt_inds`` ``(num_priors,)`` int64, ``max_overlaps`` ``(num_priors,)``, ``labels``
            ``(num_priors,)`` int64; equal to :meth:`MaxIoUAssigner.assign`'s.

        Raises:
            ValueError: a ground-truth box or prior with a non-finite coordinate.
        """
        gt_bboxes = get_box_tensor(gt_instances.bboxes)
        priors = get_box_tensor(pred_instances.priors)
        num_gts, num_priors = gt_bboxes.shape[0], priors.shape[0]
        for name, boxes in (('ground-truth box', gt_bboxes), ('prior', priors)):
            finite = torch.isfinite(boxes).all(dim=-1) if boxes.numel() else boxes.new_ones(0, dtype=torch.bool)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise ValueError(f'SparseMaxIoUAssigner: {bad} {name}(es) of {boxes.shape[0]} have NaN or '
                                 f'infinite coordinates (first: {boxes[~finite][0].tolist()}); IoUs with them are '
                                 f'undefined. Check the annotation file or the loss for divergence.')
        if num_gts * num_priors <= self.max_pairs:
            return super().assign(pred_instances, gt_instances, gt_instances_ignore, **kwargs)

        gt_labels = gt_instances.labels
        gt_bboxes_ignore = None if gt_instances_ignore is None else get_box_tensor(gt_instances_ignore.bboxes)
        device = priors.device
        if self.gpu_assign_thr > 0 and num_gts > self.gpu_assign_thr:
            priors, gt_bboxes, gt_labels = priors.cpu(), gt_bboxes.cpu(), gt_labels.cpu()
            gt_bboxes_ignore = None if gt_bboxes_ignore is None else gt_bboxes_ignore.cpu()
        if self.perm_repeat_gt_cfg is not None:
            gt_bboxes = perm_repeat_bboxes(gt_bboxes, self.iou_calculator, self.perm_repeat_gt_cfg)
        ignored = self._ignored_priors(priors, gt_bboxes_ignore)

        max_overlaps, argmax_overlaps, low_quality = self._fold_groups(gt_bboxes, priors, ignored)
        if ignored is not None:  # mmdet sets the IoUs of ignored priors to -1 for every object
            max_overlaps[ignored] = -1
            argmax_overlaps[ignored] = 0

        assigned_gt_inds = torch.full((num_priors, ), -1, dtype=torch.long, device=priors.device)
        if isinstance(self.neg_iou_thr, float):
            assigned_gt_inds[(max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)] = 0
        elif isinstance(self.neg_iou_thr, tuple):
            assert len(self.neg_iou_thr) == 2
            assigned_gt_inds[(max_overlaps >= self.neg_iou_thr[0]) & (max_overlaps < self.neg_iou_thr[1])] = 0
        pos = max_overlaps >= self.pos_iou_thr
        assigned_gt_inds[pos] = argmax_overlaps[pos] + 1
        if self.match_low_quality:
            matched = low_quality >= 0
            assigned_gt_inds[matched] = low_quality[matched] + 1
        assigned_labels = assigned_gt_inds.new_full((num_priors, ), -1)
        pos_inds = torch.nonzero(assigned_gt_inds > 0, as_tuple=False).squeeze()
        if pos_inds.numel() > 0:
            assigned_labels[pos_inds] = gt_labels[assigned_gt_inds[pos_inds] - 1]
        return AssignResult(
            num_gts=num_gts,
            gt_inds=assigned_gt_inds.to(device),
            max_overlaps=max_overlaps.to(device),
            labels=assigned_labels.to(device))

    def _ignored_priors(self, priors: Tensor, gt_bboxes_ignore: Optional[Tensor]) -> Optional[Tensor]:
        """``(num_priors,)`` bool: priors whose IoF with an ignored box passes ``ignore_iof_thr``, or None."""
        if not (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None and gt_bboxes_ignore.numel() > 0
                and priors.numel() > 0):
            return None
        step = max(1, self.max_pairs // gt_bboxes_ignore.shape[0])
        parts = []
        for start in range(0, priors.shape[0], step):
            chunk = priors[start:start + step]
            if self.ignore_wrt_candidates:
                iof = self.iou_calculator(chunk, gt_bboxes_ignore, mode='iof').max(dim=1).values
            else:
                iof = self.iou_calculator(gt_bboxes_ignore, chunk, mode='iof').max(dim=0).values
            parts.append(iof > self.ignore_iof_thr)
        return torch.cat(parts)

    def _groups(self, gt_bboxes: Tensor, priors: Tensor):
        """Yield ``(object indices ascending, candidate prior indices ascending or None for all)``."""
        num_gts, num_priors = gt_bboxes.shape[0], priors.shape[0]
        if not self.sparse_exact:
            step = max(1, self.max_pairs // num_priors)
            for start in range(0, num_gts, step):
                yield torch.arange(start, min(start + step, num_gts), device=priors.device), None
            return
        order = morton_order(gt_bboxes[:, :4])
        p = priors[:, :4]
        pending = [order[i:i + self.group_size] for i in range(0, num_gts, self.group_size)]
        while pending:
            members = pending.pop()
            box = gt_bboxes[members, :4]
            x1, y1 = box[:, 0].min(), box[:, 1].min()
            x2, y2 = box[:, 2].max(), box[:, 3].max()
            # strict: a prior that does not overlap the union box has zero overlap, hence IoU 0, with each member
            cand = torch.nonzero((p[:, 0] < x2) & (p[:, 2] > x1) & (p[:, 1] < y2) & (p[:, 3] > y1)).squeeze(1)
            if members.numel() > 1 and members.numel() * cand.numel() > self.max_pairs:
                half = members.numel() // 2
                pending += [members[half:], members[:half]]
                continue
            yield torch.sort(members).values, cand

    def _fold_groups(self, gt_bboxes: Tensor, priors: Tensor,
                     ignored: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Per prior: max IoU over objects, its first object, and the last low-quality object (-1: none)."""
        num_priors = priors.shape[0]
        dtype = self.iou_calculator(gt_bboxes[:1], priors[:1]).dtype
        # sparse: every pair not visited has IoU exactly 0, so (0, object 0) is each prior's starting point
        start = 0. if self.sparse_exact else float('-inf')
        max_overlaps = torch.full((num_priors, ), start, dtype=dtype, device=priors.device)
        argmax_overlaps = torch.zeros(num_priors, dtype=torch.long, device=priors.device)
        low_quality = torch.full((num_priors, ), -1, dtype=torch.long, device=priors.device)
        for members, cand in self._groups(gt_bboxes, priors):
            if cand is not None and cand.numel() == 0:
                continue
            sub = priors if cand is None else priors[cand]
            ious = self.iou_calculator(gt_bboxes[members], sub)
            if ignored is not None:
                ious[:, ignored if cand is None else ignored[cand]] = -1
            idx = slice(None) if cand is None else cand
            # per prior: first maximal object of the group (Tensor.max), then the first over groups
            value, row = ious.max(dim=0)
            obj = members[row]
            best, best_obj = max_overlaps[idx], argmax_overlaps[idx]
            better = (value > best) | ((value == best) & (obj < best_obj))
            max_overlaps[idx] = torch.where(better, value, best)
            argmax_overlaps[idx] = torch.where(better, obj, best_obj)
            if not self.match_low_quality:
                continue
            gt_max, gt_argmax = ious.max(dim=1)
            valid = gt_max >= self.min_pos_iou
            if not bool(valid.any()):
                continue
            if self.gt_max_assign_all:
                hit = (ious == gt_max[:, None]) & valid[:, None]
                last = torch.where(hit, members[:, None], -1).amax(dim=0)
                low_quality[idx] = torch.maximum(low_quality[idx], last)
            else:
                prior_idx = gt_argmax[valid] if cand is None else cand[gt_argmax[valid]]
                low_quality.scatter_reduce_(0, prior_idx, members[valid], reduce='amax')
        return max_overlaps, argmax_overlaps, low_quality
