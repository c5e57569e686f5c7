"""Exact RPN anchor recall and an Optuna search for per-level anchor sizes, by any number of workers sharing one
study (see tools/anchor_search.py and :mod:`.workers`), and the check of a config's anchors before training
(:mod:`.check`)."""
from .check import ANCHOR_CHECK_MODES, AnchorCheck, AnchorRecallError, check_anchor_recall, measure_anchor_recall
from .data import AnchorSearchError, GTBoxes, ResizeSpec, gt_boxes_from_data_infos, load_gt_boxes
from .recall import AnchorSetting, grid_anchors, level_name, max_iou_brute_force, max_iou_exact, recall_table
from .search import (
    DEFAULT_WEIGHTS,
    Evaluation,
    SearchResult,
    SearchSpace,
    anchor_setting_from_cfg,
    best_trial,
    check_writable_path,
    count_completed_trials,
    data_suggested_anchors,
    evaluate,
    format_comparison,
    format_groups,
    fragment_header,
    fragment_name,
    make_storage,
    open_study,
    parse_weights,
    resolve_weights,
    run_study,
    save_study_plots,
    search_anchors,
    stride_adjusted_anchors,
    write_anchor_fragment,
)

__all__ = [
    'ANCHOR_CHECK_MODES', 'AnchorCheck', 'AnchorRecallError', 'check_anchor_recall', 'measure_anchor_recall',
    'AnchorSearchError', 'AnchorSetting', 'GTBoxes', 'ResizeSpec', 'gt_boxes_from_data_infos', 'load_gt_boxes',
    'grid_anchors', 'level_name', 'max_iou_brute_force', 'max_iou_exact', 'recall_table', 'DEFAULT_WEIGHTS',
    'Evaluation', 'SearchResult', 'SearchSpace', 'anchor_setting_from_cfg', 'best_trial', 'check_writable_path',
    'count_completed_trials', 'data_suggested_anchors', 'evaluate', 'format_comparison', 'format_groups',
    'fragment_header', 'fragment_name', 'make_storage', 'open_study', 'parse_weights', 'resolve_weights', 'run_study',
    'save_study_plots', 'search_anchors', 'stride_adjusted_anchors', 'write_anchor_fragment'
]
