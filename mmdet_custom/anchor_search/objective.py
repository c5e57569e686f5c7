"""The anchor search's objective: a weighted exact recall of the training boxes (:func:`evaluate`)."""
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

from .data import AnchorSearchError, GTBoxes
from .recall import AnchorSetting, max_iou_exact, recall_table

#: IoU thresholds always reported, besides the RPN's positive threshold.
REPORT_IOUS = (0.5, 0.7, 0.75)
#: Marker of the RPN positive IoU threshold in objective weights.
POS = 'pos'
DEFAULT_WEIGHTS = ((POS, 0.7), (0.7, 0.3))


# ----------------------------------------------------------------------------------------------- objective
def parse_weights(items: Sequence[str]) -> Tuple[Tuple[object, float], ...]:
    """Parse ``['pos=0.7', '0.7=0.3']`` into ``(('pos', 0.7), (0.7, 0.3))`` (IoU threshold = weight).

    Raises:
        AnchorSearchError: (a ``ValueError``) on a malformed item, an IoU outside (0, 1], a negative weight or
            weights summing to 0.
    """
    weights = []
    for item in items:
        try:
            iou, weight = item.split('=')
            iou = POS if iou.strip() == POS else float(iou)
            weight = float(weight)
        except ValueError:
            raise AnchorSearchError(
                f'--weights: expected IOU=WEIGHT (IOU a number or "pos"), got {item!r}.') from None
        weights.append((iou, weight))
    return check_weights(weights)


def check_weights(weights) -> Tuple[Tuple[object, float], ...]:
    """Validate objective weights ``((iou | 'pos', weight), ...)``; see :func:`parse_weights`."""
    weights = tuple((iou, float(w)) for iou, w in weights)
    for iou, w in weights:
        if iou != POS and not 0. < float(iou) <= 1.:
            raise AnchorSearchError(f'objective weights: IoU threshold {iou} is not in (0, 1].')
        if w < 0:
            raise AnchorSearchError(f'objective weights: weight {w} of IoU {iou} is negative.')
    if not weights or sum(w for _, w in weights) <= 0:
        raise AnchorSearchError(f'objective weights {weights} sum to 0.')
    return weights


def resolve_weights(weights, pos_iou: float) -> Tuple[Tuple[float, float], ...]:
    """Replace ``'pos'`` by the RPN positive IoU threshold."""
    return tuple((float(pos_iou) if iou == POS else float(iou), w) for iou, w in check_weights(weights))


def describe_objective(weights: Sequence[Tuple[float, float]]) -> str:
    return ' + '.join(f'{w:g} x recall@{iou:g}' for iou, w in weights)


@dataclass
class Evaluation:
    """Recall of one anchor setting."""

    setting: AnchorSetting
    objective: float
    recalls: Dict[float, float]
    table: Dict[str, Dict[float, float]] = field(default_factory=dict, repr=False)


def evaluate(setting: AnchorSetting, gt: GTBoxes, weights: Sequence[Tuple[float, float]],
             thresholds: Sequence[float] = REPORT_IOUS, per_group: bool = False) -> Evaluation:
    """Exact recall of ``setting`` on ``gt`` and the weighted objective.

    Args:
        setting (AnchorSetting): anchors.
        gt (GTBoxes): boxes in network-input pixels.
        weights: resolved ``((iou, weight), ...)``; the objective is ``sum(w * recall@iou) / sum(w)``.
        thresholds: IoU thresholds to report besides those of the weights.
        per_group (bool): also compute the per-class and per-size table.
    """
    ious = max_iou_exact(gt.boxes, gt.img_shapes, setting)
    thrs = sorted({float(t) for t in thresholds} | {iou for iou, _ in weights})
    recalls = {t: float((ious >= t).mean()) for t in thrs}
    objective = sum(w * recalls[iou] for iou, w in weights) / sum(w for _, w in weights)
    table = recall_table(ious, thrs, gt.labels, gt.classes, gt.areas) if per_group else {}
    return Evaluation(setting, float(objective), recalls, table)
