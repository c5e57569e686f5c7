# Mean mask IoU and Dice of each ground-truth instance with its best prediction scoring >= 0.5
# (mmdet_custom/evaluation/metrics/dice_iou.py), reported as dice/mIoU and dice/mDice beside COCO AP.
# Use: val_evaluator = [_base_.val_evaluator, _base_._dice_iou_metric]; test_evaluator = val_evaluator
_dice_iou_metric = dict(type='DiceIoUMetric', score_thr=0.5)
