"""Torch-free COCO-style evaluation: the iSAID devkit protocol and COCO's over pycocotools, categories by name;
the mask helpers and the prediction -> COCO results export shared by the metrics, converters and apis."""
from .categories import CategoryMismatchError, category_ids_by_name
from .coco_eval import (
    AP_NAMES,
    AREA_LABELS,
    PROTOCOLS,
    CocoEvalInputError,
    CocoEvalReport,
    EvalProtocol,
    check_max_dets,
    evaluate_coco,
    evaluate_coco_reports,
    evaluate_coco_results,
    format_summary,
    format_tables,
    get_protocol,
    load_coco_gt,
    load_coco_results,
    metrics_to_json,
    read_results,
    reports_to_dict,
    size_band,
    summary_items,
    summary_names,
)
from .image_ids import ImageNumberingError, check_result_image_ids
from .masks import encode_mask, touches_border
from .results import load_name_to_ids, parse_name_to_ids, predictions_to_coco_results

__all__ = [
    'AP_NAMES', 'AREA_LABELS', 'PROTOCOLS', 'CategoryMismatchError', 'CocoEvalInputError', 'CocoEvalReport',
    'EvalProtocol', 'category_ids_by_name', 'check_max_dets', 'evaluate_coco', 'evaluate_coco_reports',
    'evaluate_coco_results', 'format_summary', 'format_tables', 'get_protocol', 'load_coco_gt', 'load_coco_results',
    'metrics_to_json', 'read_results', 'reports_to_dict', 'size_band', 'summary_items', 'summary_names',
    'encode_mask', 'touches_border', 'load_name_to_ids', 'parse_name_to_ids',
    'predictions_to_coco_results', 'ImageNumberingError', 'check_result_image_ids'
]
