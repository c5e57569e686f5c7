"""Mask Dice and IoU of each ground-truth instance with its best-matching prediction."""
import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log


def _as_bool_masks(masks, what: str) -> np.ndarray:
    """``BitmapMasks`` / ``PolygonMasks`` / tensor / array -> ``(N, H, W)`` bool array."""
    if hasattr(masks, 'to_ndarray'):
        masks = masks.to_ndarray()
    elif isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f'DiceIoUMetric: {what} must be (N, H, W) masks, got shape {masks.shape}')
    return masks.astype(bool)


def best_match_ious(gt_masks: np.ndarray,
                    pred_masks: np.ndarray,
                    gt_labels: Optional[np.ndarray] = None,
                    pred_labels: Optional[np.ndarray] = None) -> np.ndarray:
    """For each ground-truth mask, the highest mask IoU over the predicted masks.

    Args:
        gt_masks (np.ndarray): ``(G, H, W)`` bool ground-truth masks.
        pred_masks (np.ndarray): ``(P, H, W)`` bool predicted masks (already filtered by score).
        gt_labels, pred_labels (np.ndarray, optional): ``(G,)`` / ``(P,)`` class indices; when both are given a
            prediction only matches ground truths of its own class.

    Returns:
        np.ndarray: ``(G,)`` float64 IoUs in [0, 1]; 0 for a ground truth that no prediction overlaps. A
        prediction may be the best match of several ground truths (the matching is not one-to-one).

    Raises:
        ValueError: when the two sets of masks differ in height or width.
    """
    if gt_masks.shape[1:] != pred_masks.shape[1:]:
        raise ValueError(f'DiceIoUMetric: predicted masks are {pred_masks.shape[1:]} but ground-truth masks are '
                         f'{gt_masks.shape[1:]}; both must be at the original image size (put LoadAnnotations '
                         f'after Resize in the test pipeline and predict with rescale=True)')
    num_gt = len(gt_masks)
    if num_gt == 0 or len(pred_masks) == 0:
        return np.zeros(num_gt)

    def rle(masks):  # pycocotools wants (H, W, N) uint8 in Fortran order
        return mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))

    ious = np.asarray(mask_util.iou(rle(pred_masks), rle(gt_masks), [0] * num_gt)).reshape(len(pred_masks), num_gt)
    if gt_labels is not None and pred_labels is not None:
        ious = np.where(np.asarray(pred_labels)[:, None] == np.asarray(gt_labels)[None, :], ious, 0.0)
    return ious.max(axis=0)


@METRICS.register_module()
class DiceIoUMetric(BaseMetric):
    """Mean mask IoU and mean Dice of the ground-truth instances with their best-matching predictions.

    For every image and every ground-truth instance ``g`` (ignored / crowd instances excluded), the match is the
    prediction ``p`` with score >= ``score_thr`` whose mask has the highest IoU with ``g``:
    ``IoU(g) = max_p |g ∩ p| / |g ∪ p|``, and 0 when no prediction overlaps ``g`` (an unmatched ground truth).
    The Dice of the matched pair, ``2|g ∩ p| / (|g| + |p|)``, equals ``2 IoU / (1 + IoU)``. The matching is
    greedy per ground truth, not one-to-one: one prediction may be the best match of several ground truths, and
    predictions that match nothing do not lower the scores. The metric therefore measures how well the objects
    are covered by masks (the recall side); COCO AP measures the precision side.

    Results (with the default prefix ``dice``), averaged over all ground-truth instances of the dataset (not per
    image first):

    - ``dice/mIoU``: mean of ``IoU(g)``, in [0, 1];
    - ``dice/mDice``: mean of ``Dice(g)``, in [0, 1].

    Both are NaN (with a warning) when the evaluated set holds no ground-truth instance. Masks are compared at the
    original image size: ``pred_instances.masks`` as returned by ``predict(rescale=True)`` and
    ``gt_instances.masks`` from ``LoadAnnotations`` placed after ``Resize`` (mmdet's test pipelines do this).

    It can sit beside ``CocoMetric`` in one evaluator::

        val_evaluator = [dict(type='CocoMetric', ann_file=..., metric=['bbox', 'segm']),
                         dict(type='DiceIoUMetric', score_thr=0.5)]

    Args:
        score_thr (float): predictions scoring below this are dropped before matching (``mask_scores`` when the
            model gives them, else ``scores``). Defaults to 0.5.
        match_labels (bool): only match predictions of the ground truth's class. Defaults to False
            (class-agnostic: mask quality alone).
        collect_device (str): 'cpu' or 'gpu', for collecting results across ranks. Defaults to 'cpu'.
        prefix (str, optional): prefix of the result keys. Defaults to ``'dice'``.

    Raises:
        KeyError: in ``process`` when a data sample has no ``gt_instances.masks`` (the pipeline did not load
            masks) or no ``pred_instances.masks`` (the model does not predict masks).
        ValueError: in ``process`` when predicted and ground-truth masks differ in size.
    """
    default_prefix: Optional[str] = 'dice'

    def __init__(self,
                 score_thr: float = 0.5,
                 match_labels: bool = False,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.score_thr = score_thr
        self.match_labels = match_labels

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store, per image, the ``(G,)`` best-match IoUs of its ground-truth instances."""
        for sample in data_samples:
            pred, gt = sample.get('pred_instances', {}), sample.get('gt_instances', {})
            if 'masks' not in pred:
                raise KeyError(f'DiceIoUMetric: no pred_instances.masks for image {sample.get("img_path")}; '
                               f'the model must predict masks')
            if 'masks' not in gt:
                raise KeyError(f'DiceIoUMetric: no gt_instances.masks for image {sample.get("img_path")}; load '
                               f'them with LoadAnnotations(with_mask=True) in the test pipeline')
            scores = pred.get('mask_scores', pred['scores'])
            keep = (torch.as_tensor(scores) >= self.score_thr).cpu().numpy()
            pred_masks = _as_bool_masks(pred['masks'], 'pred_instances.masks')[keep]
            gt_masks = _as_bool_masks(gt['masks'], 'gt_instances.masks')
            labels = {}
            if self.match_labels:
                labels = dict(gt_labels=torch.as_tensor(gt['labels']).cpu().numpy(),
                              pred_labels=torch.as_tensor(pred['labels']).cpu().numpy()[keep])
            self.results.append(best_match_ious(gt_masks, pred_masks, **labels))

    def compute_metrics(self, results: List[np.ndarray]) -> Dict[str, float]:
        """Average the per-instance IoUs and Dice coefficients over the whole dataset."""
        ious = np.concatenate([np.zeros(0)] + list(results))
        if len(ious) == 0:
            print_log('DiceIoUMetric: no ground-truth instance in the evaluated set; mIoU and mDice are NaN',
                      logger='current', level=logging.WARNING)
            return dict(mIoU=float('nan'), mDice=float('nan'))
        return dict(mIoU=float(ious.mean()), mDice=float((2 * ious / (1 + ious)).mean()))
