"""What the anchor search prints and writes: the comparison and per-group tables, and the config fragment."""
import math
import re
from typing import Optional, Sequence, Tuple

from mmdet_custom.utils.fileio import atomic_path
from mmdet_custom.utils.tables import plain_table

from .objective import REPORT_IOUS, Evaluation
from .recall import AnchorSetting, _plain_number, level_name


# ----------------------------------------------------------------------------------------------- reports
def format_comparison(rows: Sequence[Tuple[str, Evaluation]], thresholds: Sequence[float] = REPORT_IOUS) -> str:
    """Plain-text table: sizes per level (P2, P3, ...), ratios, recall@thresholds and the objective."""
    strides = rows[0][1].setting.strides
    header = ['anchors'] + [level_name(s) for s in strides] + ['ratios'] + \
        [f'R@{t:g}' for t in thresholds] + ['objective']
    lines = [header]
    for name, ev in rows:
        sizes = ev.setting.describe_sizes() if ev.setting.strides == strides else ['-'] * len(strides)
        lines.append([name] + sizes + ['/'.join(f'{r:g}' for r in ev.setting.ratios)] +
                     [f'{ev.recalls.get(float(t), math.nan):.4f}' for t in thresholds] + [f'{ev.objective:.4f}'])
    return plain_table(lines)


def format_groups(evaluations: Sequence[Tuple[str, Evaluation]], thresholds: Sequence[float] = REPORT_IOUS) -> str:
    """Plain-text per-class and per-size recall table, one column block per named evaluation."""
    header = ['group', 'boxes'] + [f'{name} R@{t:g}' for name, _ in evaluations for t in thresholds]
    lines = [header]
    first = evaluations[0][1].table
    for group, row in first.items():
        if row['num']:
            lines.append([group, str(row['num'])] +
                         [f'{ev.table[group][float(t)]:.4f}' for _, ev in evaluations for t in thresholds])
    return plain_table(lines, heading_rule=False)


def fragment_name(study_name: str) -> str:
    """The private config name a searched fragment defines: ``_anchors_<study name>`` (non-word characters as ``_``).

    Named after the study, so that it cannot clash with the anchors-step fragment's ``_rpn_anchor_generator`` that
    a parent config already inherits (mmengine refuses a name defined by two bases of one config), nor with the
    fragment of another study.

    >>> fragment_name('isaid-v1')
    '_anchors_isaid_v1'
    """
    return '_anchors_' + re.sub(r'\W', '_', study_name)


def write_anchor_fragment(path: str, setting: AnchorSetting, header: Sequence[str] = (),
                          name: str = '_anchors_search', pos_iou_thr: Optional[float] = None) -> str:
    """Write ``setting`` as a config fragment, atomically (temp file in the same folder, then ``os.replace``).

    The fragment defines one private name, ``name`` (:func:`fragment_name` of the study), holding the part of
    ``model`` the search decided: ``rpn_head.anchor_generator`` (a complete dict with ``_delete_=True``) and, when
    ``pos_iou_thr`` is given, ``train_cfg.rpn.assigner.pos_iou_thr``, the RPN positive IoU the recall was optimised
    at. Any iSAID config takes both with two lines (mmengine refuses a ``model`` defined by two files of one
    ``_base_`` list, hence a private name)::

        _base_ = [<parent config>, <this file>]
        model = _base_.<name>

    Returns:
        str: the path written.
    """
    cfg = setting.generator_cfg()
    body = [f'        {key}={value!r},' for key, value in cfg.items() if key != 'type']
    rpn_iou = ([f'# pos_iou_thr {pos_iou_thr:g}: the RPN positive IoU (train_cfg.rpn.assigner) the recall was '
                'optimised at, the searched', '# config\'s; the fragment sets it too, whatever the parent\'s.']
               if pos_iou_thr is not None else [])
    train_cfg = ([f'    train_cfg=dict(rpn=dict(assigner=dict(pos_iou_thr={_plain_number(pos_iou_thr)!r}))),']
                 if pos_iou_thr is not None else [])
    text = '\n'.join(
        [f'# {line}' if line else '#' for line in header] +
        ['# _delete_: replaces the parent\'s whole anchor_generator; the stock AnchorGenerator\'s scales /',
         '# octave_base_scale / base_sizes keys do not apply to PerLevelAnchorGenerator.'] + rpn_iou +
        ['# Use, from any iSAID config (the name is the study\'s, so it never clashes with the anchors step\'s):',
         '#   _base_ = [<parent config>, <this file>]',
         f'#   model = _base_.{name}',
         f'{name} = dict(',
         '    rpn_head=dict(anchor_generator=dict(',
         '        _delete_=True,',
         f'        type={cfg["type"]!r},'] + body + ['    )),'] + train_cfg + [')', ''])
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        f.write(text)
    return path
