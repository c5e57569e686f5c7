"""COCO AP/AR under the iSAID devkit's protocol or COCO's, with categories matched by name."""
import os.path as osp
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmdet.evaluation.metrics.coco_metric import CocoMetric
from mmdet.registry import METRICS
from mmengine.logging import MMLogger

from mmdet_custom.evaluation.functional import (
    category_ids_by_name,
    evaluate_coco_reports,
    format_summary,
    format_tables,
    get_protocol,
    load_coco_gt,
    summary_names,
)


@METRICS.register_module()
class MaxDetsCocoMetric(CocoMetric):
    """mmdet's :class:`CocoMetric` with a selectable protocol, every AP at the largest budget, and categories
    matched by name.

    * ``protocol='isaid'``: the official iSAID evaluator (CAPTAIN-WHU/iSAID_Devkit,
      ``cocoapi/PythonAPI/pycocotools/cocoeval.py``; Waqas Zamir et al., iSAID, CVPR-W 2019, Sec. 5):
      maxDets (1, 10, 1000) and size bands small [10^2, 144^2], medium [144^2, 512^2], large [512^2, 1e10] px^2;
      its 12 summary numbers reproduced exactly (see :mod:`mmdet_custom.evaluation.functional.coco_eval`).
    * ``protocol='coco'`` (default): COCO's bands 32^2 / 96^2 with budgets ``proposal_nums`` (default
      (100, 300, 1000)). pycocotools reports its headline AP@[.5:.95] at a fixed 100 detections while AP50, AP75
      and APs/m/l use ``proposal_nums[-1]``; here every AP uses ``proposal_nums[-1]``.

    Results (prefix ``coco/``): ``{bbox,segm}_mAP``, ``_mAP_50``, ``_mAP_75``, ``_mAP_s``, ``_mAP_m``, ``_mAP_l`` (as
    ``CocoMetric``) and the recalls ``_AR@<n>`` for each budget and ``_AR_s@<n>``, ``_AR_m@<n>``, ``_AR_l@<n>`` at
    the largest (with 'isaid': ``AR@1``, ``AR@10``, ``AR@1000``, ``AR_s@1000`` ...), rounded to 3 decimals as mmdet
    does; with ``classwise`` the per-class table is logged and each class's AP is ``{bbox,segm}_<class>_precision``.

    Categories: prediction label ``i`` is written with the id of the ``ann_file`` category whose *name* is
    ``dataset_meta['classes'][i]`` (mmdet's ``CocoMetric`` pairs labels with ids in the json's category order,
    which mislabels devkit jsons). Predictions of classes the json does not list are not evaluated (COCOeval
    evaluates the json's categories only) and are counted in the log. Annotation ids of 0 (the devkit's) are
    renumbered for the evaluation, since pycocotools' matching treats id 0 as "unmatched".

    When the whole dataset gets no prediction (an untrained model, a high score threshold), stock ``CocoMetric``
    logs an error and returns no metric at all, and whatever reads ``coco/segm_mAP`` (``CheckpointHook``'s
    ``save_best``, ``ReduceOnPlateauLR``, early stopping) fails with a ``KeyError`` mid-training. Here every number
    is 0.0 in that case: nothing was detected.

    Args:
        ann_file (str, optional): COCO json of the ground truth (default: converted from the dataset).
        metric (str | list[str]): ``'bbox'`` and/or ``'segm'``. Defaults to ``'bbox'``.
        classwise (bool): log the per-class AP table. Defaults to False.
        proposal_nums (Sequence[int], optional): the three detection budgets (maxDets). Default: the protocol's,
            (1, 10, 1000) for 'isaid' (which allows no other) and (100, 300, 1000) for 'coco'.
        iou_thrs (float | Sequence[float], optional): IoU thresholds ('coco' only). Default 0.50:0.05:0.95.
        metric_items (Sequence[str], optional): the summary numbers to return, by the names above without the
            ``bbox_``/``segm_`` prefix (e.g. ``['mAP', 'mAP_50', 'AR@1000']``). Default: all 12.
        protocol (str): ``'isaid'`` or ``'coco'``. Defaults to ``'coco'``; iSAID configs set ``'isaid'``.
        backend (str): the ``COCOeval`` that matches and accumulates: ``'pycocotools'`` (default, the reference)
            or ``'faster-coco-eval'`` (PyPI ``faster-coco-eval``, C++): identical numbers (every summary number
            and per-class AP, checked on real iSAID results with 1000 detections per image in
            ``tests/test_eval_backend.py``), 4-11x faster there (``make bench-eval``).
        **kwargs: the other :class:`CocoMetric` arguments (``format_only``, ``outfile_prefix``, ``backend_args``,
            ``collect_device``, ``prefix``).

    Raises:
        ValueError: an unknown protocol or metric (``'proposal'`` and ``'proposal_fast'`` are ``CocoMetric``'s
            only), ``use_mp_eval=True``, budgets or IoU thresholds other than the iSAID protocol's with
            ``protocol='isaid'``, an unknown ``metric_items`` name, or an unknown ``backend``.
        UserError: ``backend='faster-coco-eval'`` without that package; a missing or malformed ``ann_file``, or one
            whose category names are not the dataset's classes (raised when the dataset's classes become known,
            i.e. before the first evaluation).
    """

    def __init__(self,
                 ann_file: Optional[str] = None,
                 metric: Union[str, List[str]] = 'bbox',
                 classwise: bool = False,
                 proposal_nums: Optional[Sequence[int]] = None,
                 iou_thrs: Optional[Union[float, Sequence[float]]] = None,
                 metric_items: Optional[Sequence[str]] = None,
                 protocol: str = 'coco',
                 backend: str = 'pycocotools',
                 **kwargs) -> None:
        if kwargs.get('use_mp_eval'):
            raise ValueError('MaxDetsCocoMetric does not support use_mp_eval=True')
        self.protocol = get_protocol(protocol)
        if backend != 'pycocotools':
            from mmdet_custom.evaluation.functional.coco_eval import coco_eval_class
            coco_eval_class(backend)  # an unknown or missing backend fails now, not after an epoch
        self.backend = backend
        if self.protocol.name == 'isaid':
            if proposal_nums is not None and tuple(proposal_nums) != self.protocol.max_dets:
                raise ValueError(f"protocol='isaid' evaluates the devkit's maxDets {self.protocol.max_dets}, got "
                                 f"proposal_nums={tuple(proposal_nums)}; drop proposal_nums or use protocol='coco'")
            if iou_thrs is not None:
                raise ValueError("protocol='isaid' evaluates IoU 0.50:0.05:0.95; drop iou_thrs or use "
                                 "protocol='coco'")
        proposal_nums = self.protocol.max_dets if proposal_nums is None else proposal_nums
        super().__init__(ann_file=None, metric=metric, classwise=classwise, proposal_nums=proposal_nums,
                         iou_thrs=iou_thrs, metric_items=metric_items, **kwargs)
        for name in self.metrics:
            if name not in ('bbox', 'segm'):
                raise ValueError(f"MaxDetsCocoMetric evaluates 'bbox' and 'segm', got {name!r} (use mmdet's "
                                 f'CocoMetric for proposals)')
        names = summary_names(self.proposal_nums)
        unknown = [item for item in metric_items or () if item not in names]
        if unknown:
            raise ValueError(f'metric_items {unknown} are not among this protocol\'s numbers {names}')
        self.ann_file = ann_file
        self._custom_iou_thrs = iou_thrs is not None
        if ann_file is not None:
            self._coco_api = load_coco_gt(ann_file, self.metrics, what='ann_file')

    @property
    def dataset_meta(self) -> Optional[dict]:
        """The dataset's meta (``classes``); setting it checks ``ann_file``'s category names against them."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        self._dataset_meta = dataset_meta
        if dataset_meta and getattr(self, '_coco_api', None) is not None:
            self._label_cat_ids()  # a json that does not match the classes fails now, not after an epoch

    def _label_cat_ids(self) -> List[Optional[int]]:
        """Category id of each label (None: the json does not list that class), matched by name."""
        source = self.ann_file or 'the ground truth converted from the dataset'
        return category_ids_by_name(self._coco_api.dataset['categories'], self.dataset_meta['classes'], source)

    def compute_metrics(self, results: list) -> Dict[str, Union[float, str]]:
        """Write the predictions as COCO results and evaluate them (see the class docstring for the keys)."""
        logger: MMLogger = MMLogger.get_current_instance()
        gts, preds = zip(*results)
        tmp_dir = None
        if self.outfile_prefix is None:
            tmp_dir = tempfile.TemporaryDirectory()
            outfile_prefix = osp.join(tmp_dir.name, 'results')
        else:
            outfile_prefix = self.outfile_prefix
        try:
            if self._coco_api is None:
                logger.info('Converting ground truth to coco format...')
                self._coco_api = load_coco_gt(self.gt_to_coco_json(gt_dicts=gts, outfile_prefix=outfile_prefix),
                                              self.metrics)
            label_cat_ids = self._label_cat_ids()
            preds, dropped = self._drop_unlisted_classes(preds, label_cat_ids)
            if dropped:
                logger.info(f'{dropped} predictions of classes that {self.ann_file or "the ground truth"} does not '
                            f'list are not evaluated (COCOeval evaluates the json\'s categories only)')
            # results2json (mmdet's) writes label i with self.cat_ids[i]
            self.cat_ids = [cat_id if cat_id is not None else -1 for cat_id in label_cat_ids]
            self.img_ids = self._coco_api.getImgIds()
            result_files = self.results2json(preds, outfile_prefix)
            if self.format_only:
                logger.info(f'results are saved in {osp.dirname(outfile_prefix)}')
                return OrderedDict()
            reports = []
            backend = {} if self.backend == 'pycocotools' else dict(backend=self.backend)  # pycocotools: default
            for metric in self.metrics:
                if metric not in result_files:
                    raise ValueError(f"metric '{metric}' needs predicted masks, and the predictions have none")
                reports += evaluate_coco_reports(
                    self._coco_api, result_files[metric], [metric], self.protocol, self.dataset_meta['classes'],
                    max_dets=self.proposal_nums, iou_thrs=self.iou_thrs if self._custom_iou_thrs else None,
                    gt_name=self.ann_file, **backend)
        finally:
            if tmp_dir is not None:
                tmp_dir.cleanup()
        return self._to_metrics(reports, logger)

    @staticmethod
    def _drop_unlisted_classes(preds: Sequence[dict], label_cat_ids: List[Optional[int]]):
        keep_label = np.array([cat_id is not None for cat_id in label_cat_ids], dtype=bool)
        if keep_label.all():
            return preds, 0
        kept, dropped = [], 0
        for pred in preds:
            keep = keep_label[pred['labels']] if len(pred['labels']) else np.zeros(0, dtype=bool)
            dropped += int((~keep).sum())
            pred = dict(pred)
            for key in ('labels', 'bboxes', 'scores', 'mask_scores'):
                if key in pred:
                    pred[key] = pred[key][keep]
            if 'masks' in pred:
                pred['masks'] = [mask for mask, k in zip(pred['masks'], keep) if k]
            kept.append(pred)
        return kept, dropped

    def _to_metrics(self, reports, logger: MMLogger) -> Dict[str, Union[float, str]]:
        eval_results = OrderedDict()
        items = self.metric_items or summary_names(self.proposal_nums)
        for report in reports:
            logger.info('\n' + format_summary(report))
            if report.num_ignored_detections:
                logger.info(f'{report.num_ignored_detections} {report.iou_type} detections of categories the '
                            f'ground truth does not list were not evaluated')
            for item in items:
                eval_results[f'{report.iou_type}_{item}'] = round(report.stats[item], 3)
            if self.classwise:
                for name, values in report.per_class:
                    eval_results[f'{report.iou_type}_{name}_precision'] = round(values[0], 3)
            ap = [report.stats[name] for name in summary_names(self.proposal_nums)[:6]]
            eval_results[f'{report.iou_type}_mAP_copypaste'] = ' '.join(f'{v:.3f}' for v in ap)
        logger.info('\n' + format_tables(reports, classwise=self.classwise))
        return eval_results
