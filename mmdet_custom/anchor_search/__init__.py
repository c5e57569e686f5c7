"""Exact RPN anchor recall and an Optuna search for per-level anchor sizes, by any number of workers sharing one
study (see tools/anchor_search.py; the study engine is :mod:`mmdet_custom.studies`), with per-class and per-size
recall floors (:mod:`.floors`), and the check of a config's anchors before training (:mod:`.check`).

- :mod:`.recall`: exact max IoU of every box over an anchor grid, recall tables;
- :mod:`.data`: training boxes in network-input pixels;
- :mod:`.space`: the search space; :mod:`.objective`: the weighted recall; :mod:`.floors`: per-group floors;
- :mod:`.search`: the study, its workers and outputs; :mod:`.report`: tables and the config fragment.
"""
from .check import ANCHOR_CHECK_MODES, AnchorCheck, AnchorRecallError, check_anchor_recall, measure_anchor_recall
from .data import AnchorSearchError, GTBoxes, ResizeSpec, gt_boxes_from_data_infos, load_gt_boxes
from .floors import RecallFloor, format_recall_change, parse_floors, recall_change
from .objective import DEFAULT_WEIGHTS, Evaluation, evaluate, parse_weights, resolve_weights
from .recall import AnchorSetting, grid_anchors, level_name, max_iou_brute_force, max_iou_exact, recall_table
from .report import format_comparison, format_groups, fragment_name, write_anchor_fragment
from .search import (
    RECALL_CHANGE,
    SearchResult,
    best_trial,
    count_completed_trials,
    fragment_header,
    make_storage,
    open_study,
    run_study,
    search_anchors,
)
from .space import SearchSpace, anchor_setting_from_cfg, data_suggested_anchors, stride_adjusted_anchors

__all__ = [
    'ANCHOR_CHECK_MODES', 'AnchorCheck', 'AnchorRecallError', 'check_anchor_recall', 'measure_anchor_recall',
    'AnchorSearchError', 'AnchorSetting', 'GTBoxes', 'ResizeSpec', 'gt_boxes_from_data_infos', 'load_gt_boxes',
    'grid_anchors', 'level_name', 'max_iou_brute_force', 'max_iou_exact', 'recall_table', 'DEFAULT_WEIGHTS',
    'Evaluation', 'SearchResult', 'SearchSpace', 'anchor_setting_from_cfg', 'best_trial', 'count_completed_trials',
    'data_suggested_anchors', 'evaluate', 'format_comparison', 'format_groups', 'fragment_header', 'fragment_name',
    'make_storage', 'open_study', 'parse_weights', 'resolve_weights', 'run_study', 'search_anchors',
    'stride_adjusted_anchors', 'write_anchor_fragment', 'RecallFloor', 'parse_floors', 'recall_change',
    'format_recall_change', 'RECALL_CHANGE'
]
