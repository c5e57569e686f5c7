"""Train and test entry points shared by ``tools/train.py``, ``tools/test.py``, the demo and the tests.

They follow mmdet 3.3's ``tools/train.py`` / ``tools/test.py`` step for step (same flags, same precedence of
work_dir: argument > config > ``work_dirs/<config name>``) so that a config behaves the same under mmdet's tools,
``mim train mmdet`` and ours.
"""
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Union

from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

from mmdet_custom.utils.fileio import dump_json_atomic


def load_config(config: Union[str, Config],
                work_dir: Optional[str] = None,
                cfg_options: Optional[dict] = None,
                launcher: str = 'none') -> Config:
    """Read ``config`` (path or :class:`Config`), merge ``cfg_options`` and resolve ``work_dir``."""
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        name = osp.splitext(osp.basename(config))[0] if isinstance(config, str) else 'default'
        cfg.work_dir = osp.join('./work_dirs', name)
    return cfg


def train(config: Union[str, Config],
          work_dir: Optional[str] = None,
          cfg_options: Optional[dict] = None,
          resume: Union[bool, str, None] = None,
          amp: bool = False,
          auto_scale_lr: bool = False,
          launcher: str = 'none') -> Runner:
    """Train a model as mmdet's ``tools/train.py`` does and return the finished :class:`Runner`.

    Args:
        config (str | Config): config file or object.
        work_dir (str, optional): where logs and checkpoints go.
        cfg_options (dict, optional): overrides merged into the config (``--cfg-options``).
        resume (bool | str, optional): ``True`` resumes from the latest checkpoint in ``work_dir``, a path resumes
            from that checkpoint (model, optimizer, schedulers, iteration and message hub).
        amp (bool): wrap the optimizer in mmengine's ``AmpOptimWrapper`` (dynamic loss scale).
        auto_scale_lr (bool): scale the lr by ``real batch / auto_scale_lr.base_batch_size``.
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'.

    Raises:
        ValueError: when ``amp`` is asked for with an optimizer wrapper that is already an AMP wrapper of another
            type, or ``auto_scale_lr`` with a config that has no ``auto_scale_lr.base_batch_size``.
    """
    cfg = load_config(config, work_dir, cfg_options, launcher)
    if amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, the config has {wrapper!r}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError('--auto-scale-lr needs auto_scale_lr = dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if resume is True or resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif isinstance(resume, str):
        cfg.resume, cfg.load_from = True, resume
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def _strip_annotations(pipeline: Sequence[dict]) -> list:
    return [t for t in pipeline if t.get('type') != 'LoadAnnotations']


def test(config: Union[str, Config],
         checkpoint: str,
         work_dir: Optional[str] = None,
         cfg_options: Optional[dict] = None,
         out: Optional[str] = None,
         format_only: bool = False,
         score_thr: float = 0.0,
         max_per_img: Optional[int] = None,
         name_to_ids: Optional[str] = None,
         drop_border: bool = False,
         launcher: str = 'none') -> Dict[str, float]:
    """Evaluate ``checkpoint`` on the config's test set and write the metrics as json in the work dir.

    Args:
        config (str | Config): config file or object.
        checkpoint (str): checkpoint path (loaded with ``weights_only=True``, see :mod:`mmdet_custom.checkpoint`).
        work_dir (str, optional): where ``test_metrics.json`` and the logs go.
        cfg_options (dict, optional): overrides merged into the config.
        out (str, optional): with ``format_only``: the COCO results json to write (image_id, category_id, bbox
            xywh, score, RLE segmentation); otherwise a ``.pkl`` dump of the raw predictions (mmdet's ``--out``).
        format_only (bool): do not evaluate; export predictions for images without labels. The test pipeline's
            ``LoadAnnotations`` is dropped.
        score_thr (float): with ``format_only``: keep detections scoring at least this.
        max_per_img (int, optional): detections kept per image (``model.test_cfg.rcnn.max_per_img``); the COCO
            evaluation then also uses that many (``CocoMetric.proposal_nums``).
        name_to_ids (str, optional): json mapping image file name -> image id used in the export.
        drop_border (bool): with ``format_only``: drop instances whose mask touches the image border.

    Returns:
        dict: the metrics (e.g. ``coco/segm_mAP``, ``coco/segm_mAP_50``), also written to
        ``<work_dir>/test_metrics.json``.

    Raises:
        ValueError: ``format_only`` without ``out``, or ``out`` of the wrong kind.
    """
    cfg = load_config(config, work_dir, cfg_options, launcher)
    cfg.load_from = checkpoint
    if max_per_img is not None:
        cfg.model.test_cfg.rcnn.max_per_img = max_per_img
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        for ev in evaluators:
            if ev.get('type') in ('CocoMetric', 'MaxDetsCocoMetric'):
                # COCOeval reports AP at its third maxDets and needs exactly three
                ev.proposal_nums = (100, 300, max_per_img) if max_per_img > 300 else (1, 10, max_per_img)
    if format_only:
        if not out or not out.endswith('.json'):
            raise ValueError(f'--format-only needs --out <file>.json, got {out!r}')
        dataset = cfg.test_dataloader.dataset
        while 'dataset' in dataset:
            dataset = dataset.dataset
        dataset.pipeline = _strip_annotations(dataset.pipeline)
        # the test json's categories give each class its category_id (by name); absent: class i -> id i + 1
        ann_file = osp.join(dataset.get('data_root') or '', dataset.get('ann_file') or '')
        cfg.test_evaluator = ConfigDict(type='CocoResultsExport', out_file=out, score_thr=score_thr,
                                        name_to_ids=name_to_ids, drop_border=drop_border,
                                        ann_file=ann_file if osp.isfile(ann_file) else None)
    runner = Runner.from_cfg(cfg)
    if out is not None and not format_only:
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out without --format-only dumps raw predictions and must be a .pkl, got {out!r}')
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    metrics = runner.test()
    metrics = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
    os.makedirs(cfg.work_dir, exist_ok=True)
    dump_json_atomic(metrics, osp.join(cfg.work_dir, 'test_metrics.json'), indent=2)
    return metrics


test.__test__ = False  # not a pytest test, whatever module imports it
