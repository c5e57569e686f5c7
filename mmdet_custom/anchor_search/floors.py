"""Per-class and per-size recall: the cost a single objective hides, and floors a search must keep.

The anchor search maximises one weighted recall over all boxes; a setting can raise it while one class or size loses
boxes (on the shared iSAID samples a search raised the mean while Small_Vehicle's recall@0.5 fell from 1.00 to 0.84).
:func:`recall_change` reports every class and COCO size bucket (:data:`~.recall.SIZE_BUCKETS`, box area in
network-input pixels) of the best setting against the config's own anchors; ``--min-recall NAME[@IOU]=VALUE``
(:func:`parse_floors`) makes every trial below a floor infeasible.

Infeasible, as Optuna means it: each trial records ``floor - recall`` of every floor with
``optuna.trial.Trial.set_constraint`` (feasible when all are <= 0), which Optuna's TPE sampler reads to steer away
from infeasible regions; the trial still completes with its objective. The best trial is the best feasible one, the
floors judged on each trial's recalls (stored as user attributes ``recall:<name>@<iou>``, measured again for a trial
of an earlier run that did not store them), so a study may be resumed with other floors.
"""
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mmdet_custom.utils.tables import plain_table

from .data import AnchorSearchError, GTBoxes
from .recall import SIZE_BUCKETS

__all__ = ['RecallFloor', 'SIZE_NAMES', 'parse_floors', 'resolve_floors', 'check_floor_names', 'floor_recalls',
           'violations', 'recall_change', 'format_recall_change']

#: Size groups a floor may name (COCO buckets of box area in network-input pixels).
SIZE_NAMES = tuple(name for name, _, _ in SIZE_BUCKETS)
#: The IoU of a floor written without ``@IOU``: the RPN assigner's positive threshold.
POS = 'pos'


@dataclass(frozen=True)
class RecallFloor:
    """A lower bound on the recall of one group of boxes.

    Attributes:
        group (str): a class name of the dataset, ``all``, or a size bucket (``small``, ``medium``, ``large``).
        iou (float | str): the IoU threshold in (0, 1], or ``'pos'`` (the RPN positive IoU) until resolved.
        value (float): the least recall allowed, in [0, 1].
    """
    group: str
    iou: object
    value: float

    @property
    def key(self) -> str:
        """``<group>@<iou>``, e.g. ``Small_Vehicle@0.5``: the name of its constraint and stored recall."""
        return f'{self.group}@{self.iou:g}' if self.iou != POS else f'{self.group}@{POS}'


def parse_floors(items: Sequence[str], flag: str = '--min-recall') -> Tuple[RecallFloor, ...]:
    """Parse ``['Small_Vehicle=0.95', 'small@0.5=0.9']`` (``NAME[@IOU]=VALUE``; IoU default: the RPN positive IoU).

    Names are checked against the data later (:func:`check_floor_names`).

    Raises:
        AnchorSearchError: a malformed item, an IoU outside (0, 1], a value outside [0, 1], or a name given twice at
            the same IoU (named, with ``flag``).
    """
    floors, seen = [], set()
    for item in items or ():
        name, sep, value = item.rpartition('=')
        group, _, iou = name.partition('@')
        try:
            if not sep or not group.strip():
                raise ValueError
            value = float(value)
            iou = POS if iou.strip() in ('', POS) else float(iou)
        except ValueError:
            raise AnchorSearchError(f'{flag} {item!r}: expected NAME=VALUE or NAME@IOU=VALUE (NAME a class of '
                                    f'the dataset or a size: {", ".join(SIZE_NAMES)}; e.g. Small_Vehicle@0.5=0.95)'
                                    ) from None
        if iou != POS and not 0. < iou <= 1.:
            raise AnchorSearchError(f'{flag} {item!r}: IoU {iou:g} is not in (0, 1]')
        if not 0. <= value <= 1.:
            raise AnchorSearchError(f'{flag} {item!r}: recall {value:g} is not in [0, 1]')
        floor = RecallFloor(group.strip(), iou, value)
        if floor.key in seen:
            raise AnchorSearchError(f'{flag} {item!r}: {floor.key} is given twice')
        seen.add(floor.key)
        floors.append(floor)
    return tuple(floors)


def resolve_floors(floors: Sequence[RecallFloor], pos_iou: float) -> Tuple[RecallFloor, ...]:
    """Replace the IoU ``'pos'`` by the RPN positive IoU."""
    return tuple(RecallFloor(f.group, float(pos_iou) if f.iou == POS else float(f.iou), float(f.value))
                 for f in floors)


def check_floor_names(floors: Sequence[RecallFloor], gt: GTBoxes, flag: str = '--min-recall') -> None:
    """Refuse a floor on a name that is neither a class of the data nor a size, or on a group without boxes.

    Raises:
        AnchorSearchError: naming the floor, the data and the names it may take.
    """
    areas = gt.areas
    for f in floors:
        if f.group == 'all':
            continue
        if f.group in SIZE_NAMES:
            low, high = next((lo, hi) for name, lo, hi in SIZE_BUCKETS if name == f.group)
            num = int(((areas >= low) & (areas < high)).sum())
        elif f.group in gt.classes:
            num = int((gt.labels == gt.classes.index(f.group)).sum())
        else:
            raise AnchorSearchError(f'{flag} {f.group}: not a class of {gt.source} nor a size; classes: '
                                    f'{", ".join(gt.classes)}; sizes: {", ".join(SIZE_NAMES)}; or all')
        if num == 0:
            raise AnchorSearchError(f'{flag} {f.group}: {gt.source} holds no training box of {f.group} (in '
                                    f'network-input pixels): a floor on it would judge nothing')


def floor_recalls(table: Mapping[str, Mapping[float, float]], floors: Sequence[RecallFloor]) -> Dict[str, float]:
    """The recall of each floor's group at its IoU, from a :func:`~.recall.recall_table` (``{key: recall}``)."""
    return {f.key: float(table[f.group][float(f.iou)]) for f in floors}


def violations(recalls: Mapping[str, float], floors: Sequence[RecallFloor]) -> List[Tuple[RecallFloor, float]]:
    """The floors a setting's recalls (``{key: recall}``) fall below, with the recall."""
    return [(f, recalls[f.key]) for f in floors if not recalls[f.key] >= f.value]


def recall_change(base: Mapping[str, Mapping], best: Mapping[str, Mapping], thresholds: Sequence[float],
                  floors: Sequence[RecallFloor] = ()) -> dict:
    """Per-group recall of the best setting against the config's anchors.

    Args:
        base, best (dict): :func:`~.recall.recall_table` of the config's anchors and of the best setting (same boxes).
        thresholds (Sequence[float]): IoU thresholds reported (each in both tables).
        floors (Sequence[RecallFloor]): resolved floors, reported with their margin.

    Returns:
        dict: ``{'thresholds': [...], 'groups': {name: {'boxes': n, 'config': {iou: r}, 'best': {iou: r},
        'change': {iou: best - config}}}, 'floors': [{'name', 'iou', 'min', 'config', 'best', 'met'}]}`` (IoUs as
        ``'%g'`` strings; groups without boxes are left out; recalls in [0, 1]).
    """
    groups = {}
    for name, row in base.items():
        if not row['num']:
            continue
        cfg = {f'{t:g}': row[float(t)] for t in thresholds}
        new = {f'{t:g}': best[name][float(t)] for t in thresholds}
        groups[name] = dict(boxes=row['num'], config=cfg, best=new, change={k: new[k] - cfg[k] for k in cfg})
    return dict(thresholds=[float(t) for t in thresholds], groups=groups, floors=[
        dict(name=f.group, iou=float(f.iou), min=f.value, config=base[f.group][float(f.iou)],
             best=best[f.group][float(f.iou)], met=bool(best[f.group][float(f.iou)] >= f.value)) for f in floors])


def format_recall_change(change: dict, iou: Optional[float] = None) -> str:
    """Plain-text table of :func:`recall_change`: boxes, then config / best / change at each threshold (or at
    ``iou`` only), one row per class and size; the floors below."""
    ious = [f'{t:g}' for t in change['thresholds']] if iou is None else [f'{iou:g}']
    header = ['group', 'boxes'] + [f'{col} R@{t}' for t in ious for col in ('config', 'best', 'change')]
    lines = [header]
    for name, g in change['groups'].items():
        lines.append([name, str(g['boxes'])] + [v for t in ious for v in (
            f'{g["config"][t]:.4f}', f'{g["best"][t]:.4f}', f'{g["change"][t]:+.4f}')])
    text = plain_table(lines, heading_rule=False)
    for f in change['floors']:
        text += (f'\nfloor {f["name"]} R@{f["iou"]:g} >= {f["min"]:g}: best {f["best"]:.4f} '
                 f'({"met" if f["met"] else "NOT met"}), config {f["config"]:.4f}')
    return text

