from .coco_export import CocoResultsExport  # noqa: F401
from .dice_iou import DiceIoUMetric  # noqa: F401
from .max_dets_coco_metric import MaxDetsCocoMetric  # noqa: F401
