"""COCO AP where *every* summary number uses the largest detection budget, as iSAID's protocol requires."""
from typing import Dict
from unittest import mock

import numpy as np
from mmdet.datasets.api_wrappers import COCOeval
from mmdet.evaluation.metrics import coco_metric
from mmdet.evaluation.metrics.coco_metric import CocoMetric
from mmdet.registry import METRICS


class _COCOevalAtMaxDets(COCOeval):
    """pycocotools' ``summarize`` computes AP@[.5:.95] (``stats[0]``) at ``maxDets=100`` whatever ``params.maxDets``
    holds, while AP50, AP75 and APs/m/l use ``params.maxDets[2]``. Recompute ``stats[0]`` at ``maxDets[-1]``."""

    def summarize(self):
        super().summarize()
        if self.params.iouType in ('bbox', 'segm'):
            precision = self.eval['precision'][:, :, :, 0, -1]  # all IoUs, recalls, classes; area 'all'; last maxDets
            valid = precision[precision > -1]
            self.stats[0] = float(np.mean(valid)) if valid.size else -1.0
            print(f' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets={self.params.maxDets[-1]:>4d} ]'
                  f' = {self.stats[0]:0.3f}  (replaces the maxDets=100 line above)')


@METRICS.register_module()
class MaxDetsCocoMetric(CocoMetric):
    """mmdet's :class:`CocoMetric` with ``mAP`` (AP@[.5:.95]) also computed over the largest of ``proposal_nums``.

    iSAID images hold up to thousands of objects and its benchmark evaluates up to 1000 detections per image
    (Waqas Zamir et al., iSAID, CVPR-W 2019, Sec. 5). mmdet passes ``proposal_nums`` to COCOeval as ``maxDets``, but
    pycocotools reports its headline AP at a fixed 100 detections, so with ``proposal_nums=(100, 300, 1000)`` the
    stock metric's ``mAP`` used 100 while its ``mAP_50``, ``mAP_75``, ``mAP_s/m/l`` and the per-class table used
    1000. Here all of them use ``proposal_nums[-1]``. Arguments are :class:`CocoMetric`'s; ``use_mp_eval`` is not
    supported (raises ``ValueError``).

    When the whole dataset gets no prediction (an untrained model, a high score threshold), stock ``CocoMetric``
    logs an error and returns no metric at all, and whatever reads ``coco/segm_mAP`` (``CheckpointHook``'s
    ``save_best``, ``ReduceOnPlateauLR``, early stopping) then fails with a ``KeyError`` in the middle of training.
    Here each AP of a bbox/segm metric is 0.0 in that case: nothing was detected.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_mp_eval:
            raise ValueError('MaxDetsCocoMetric does not support use_mp_eval=True')

    def compute_metrics(self, results: list) -> Dict[str, float]:
        with mock.patch.object(coco_metric, 'COCOeval', _COCOevalAtMaxDets):
            metrics = super().compute_metrics(results)
        if not self.format_only:
            items = self.metric_items or ['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l']
            for metric in self.metrics:
                if metric in ('bbox', 'segm') and f'{metric}_mAP' not in metrics:
                    metrics.update({f'{metric}_{item}': 0.0 for item in items if item.startswith('mAP')})
        return metrics
