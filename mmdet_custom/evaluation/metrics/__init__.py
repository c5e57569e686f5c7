from .dice_iou import DiceIoUMetric  # noqa: F401
