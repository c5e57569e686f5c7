"""Export mmdet instance predictions as a COCO results list (the ``loadRes`` / submission format).

The implementation lives in :mod:`mmdet_custom.evaluation.functional.results` (a lower layer, so that the
``CocoResultsExport`` metric does not import ``apis``); this module re-exports it for ``tools/test.py`` and users.
"""
from mmdet_custom.evaluation.functional.results import load_name_to_ids, predictions_to_coco_results
from mmdet_custom.utils.fileio import dump_json_atomic

__all__ = ['predictions_to_coco_results', 'load_name_to_ids', 'dump_json_atomic']
