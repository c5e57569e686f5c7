"""Train and test entry points shared by ``tools/train.py``, ``tools/test.py``, the demo and the tests.

They follow mmdet 3.3's ``tools/train.py`` / ``tools/test.py`` step for step (same flags, same precedence of
work_dir: argument > config > ``work_dirs/<config name>``) so that a config behaves the same under mmdet's tools,
``mim train mmdet`` and ours. On top of mmdet they check at start what mmdet finds out late or never, and raise a
:class:`~mmdet_custom.utils.errors.UserError` naming the file and config key:

- ``--cfg-options`` keys the config does not have (typos), with the closest existing key
  (:func:`check_cfg_options`); ``+key=value`` adds a key on purpose;
- hook settings the hook does not know (``CheckpointHook`` passes them on and fails only at its first save);
- an empty train set, a ``num_classes`` that differs from the dataset's class count, missing or unreadable images
  (a header and end-of-file check of every image of the train/val/test lists);
- ``--resume`` without a checkpoint, a moved work dir (see :func:`mmdet_custom.checkpoint.find_resume_checkpoint`);
- a checkpoint that does not fit the model, an unwritable ``--out``, a malformed ``--name-to-ids``, before
  inference.
- RPN anchors that match almost none of the training boxes at the assigner's positive IoU (the exact recall of
  :mod:`mmdet_custom.anchor_search.check`, boxes scaled as the train pipeline's Resize scales them);
- a val / test evaluator whose json lists other images than its dataset (:mod:`.ann_files`), before inference;
  ``data_root`` (``--data-root``) points every dataset and evaluator at one folder.
"""
import difflib
import inspect
import math
import os
import os.path as osp
import time
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

from mmdet.evaluation import DumpDetResults
from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

import mmdet_custom.register  # noqa: F401  (registers the project's modules, also for configs built as dicts)
from mmdet_custom.anchor_search.check import check_anchor_recall
from mmdet_custom.apis.ann_files import check_evaluator_ann_files, leaf_datasets
from mmdet_custom.apis.distributed import prepare_distributed
from mmdet_custom.checkpoint import (
    check_checkpoint_matches,
    check_resume_checkpoint,
    find_newest_checkpoint,
    find_resume_checkpoint,
)
from mmdet_custom.datasets.utils import innermost_dataset_cfg, set_data_root
from mmdet_custom.engine import PreemptionHook
from mmdet_custom.utils.config import (  # noqa: F401  (re-exported)
    ConfigKeyError,
    check_cfg_options,
    config_build_errors,
    is_annotation_loader,
    isolate_run,
    isolate_visualizer,
    read_config,
)
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_path, check_writable, dump_json_atomic

__all__ = [
    'ConfigKeyError', 'DatasetCheckError', 'OptionError', 'read_config', 'check_cfg_options', 'load_config', 'train',
    'test', 'check_hooks', 'check_num_classes', 'check_images', 'image_problem', 'check_writable',
    'AtomicDumpDetResults', 'TestMetrics', 'isolate_run', 'isolate_visualizer', 'make_preemptible'
]


class DatasetCheckError(UserError, ValueError):
    """The data of a run cannot give a meaningful result: no images, missing/corrupt images, another class count."""


class OptionError(UserError, ValueError):
    """A flag that does not fit the config or the other flags (``--amp``, ``--format-only``, ``--out``)."""


def load_config(config: Union[str, Config],
                work_dir: Optional[str] = None,
                cfg_options: Optional[dict] = None,
                launcher: str = 'none',
                data_root: Optional[str] = None) -> Config:
    """Read ``config`` (path or :class:`Config`), merge the checked ``cfg_options``, point every dataset and
    evaluator at ``data_root`` when given (:func:`~mmdet_custom.datasets.utils.set_data_root`) and resolve
    ``work_dir``."""
    cfg = read_config(config, cfg_options)
    if data_root is not None:
        set_data_root(cfg, data_root, cfg_options)
    cfg.launcher = launcher
    prepare_distributed(cfg)  # gloo on CPU-only machines; refuses sync_bn for timm backbones
    isolate_run(cfg)  # its own logger, message hub and visualizer, even beside a run started in the same second
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        name = osp.splitext(osp.basename(config))[0] if isinstance(config, str) else 'default'
        cfg.work_dir = osp.join('./work_dirs', name)
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# Checks at start
# ----------------------------------------------------------------------------------------------------------------
def check_hooks(cfg: Config) -> None:
    """Refuse hook settings that the hook does not take, before anything is built.

    mmengine's ``CheckpointHook(**kwargs)`` keeps unknown keys and passes them to ``Runner.save_checkpoint`` at its
    first save, which then fails with ``TypeError`` after the first ``interval`` of training; other hooks fail when
    the runner builds them, with a ``TypeError`` that does not name the config key. Hooks whose ``__init__`` takes
    ``**kwargs`` for their own use (e.g. ``EMAHook``) are not checked.

    Args:
        cfg (Config): the run's config (``default_hooks`` and ``custom_hooks``).

    Raises:
        ConfigKeyError: naming the config key of each unknown argument and the closest argument of the hook.
    """
    from mmdet.registry import HOOKS
    from mmengine.hooks import CheckpointHook
    entries = [(f'default_hooks.{name}', h) for name, h in (cfg.get('default_hooks') or {}).items()]
    entries += [(f'custom_hooks.{i}', h) for i, h in enumerate(cfg.get('custom_hooks') or [])]
    problems = []
    for where, hook in entries:
        if not isinstance(hook, Mapping) or 'type' not in hook:
            continue
        cls = hook['type'] if inspect.isclass(hook['type']) else HOOKS.get(hook['type'])
        if cls is None:
            problems.append(f'{where}.type {hook["type"]!r} is not a registered hook (a typo, or a missing '
                            f'custom_imports?)')
            continue
        params = inspect.signature(cls.__init__).parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        if takes_kwargs and not issubclass(cls, CheckpointHook):
            continue
        known = [n for n, p in params.items() if n != 'self' and p.kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                                inspect.Parameter.VAR_POSITIONAL)]
        for key in hook:
            if key == 'type' or key in known or (key.startswith('_') and key.endswith('_')):  # _scope_, _delete_
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            takes = f'it takes {", ".join(known)}' if known else 'it takes no arguments'
            problems.append(f'{where}.{key}: {cls.__name__} has no argument {key}'
                            + (f', did you mean {close[0]}?' if close else f' ({takes})'))
    if problems:
        raise ConfigKeyError('; '.join(problems) + ('. CheckpointHook would fail only at its first save.' if any(
            'CheckpointHook' in p for p in problems) else ''))


def _dataset_cfg_name(dataset_cfg: Any) -> str:
    """``<type> <data_root/ann_file>`` of a (possibly wrapped) dataset config, for messages."""
    dataset_cfg = innermost_dataset_cfg(dataset_cfg)
    if not isinstance(dataset_cfg, Mapping):
        return 'dataset'
    ann = osp.join(dataset_cfg.get('data_root') or '', dataset_cfg.get('ann_file') or '')
    return f'{dataset_cfg.get("type", "dataset")} ({ann or "no ann_file"})'


def _build_dataset(runner: Runner, split: str, cfg: Config) -> Any:
    """Build the runner's ``<split>`` loop (as ``runner.train()`` / ``test()`` would) and return its dataset.

    mmengine's ``BaseDataset`` serialises its list with ``np.concatenate``: an empty list ends in "need at least one
    array to concatenate". Raised here as :class:`DatasetCheckError` naming the dataset.
    """
    try:
        with config_build_errors(cfg):
            loader = getattr(runner, f'{split}_dataloader')
    except ValueError as e:
        if 'need at least one array to concatenate' not in str(e):
            raise
        raise DatasetCheckError(
            f'the {split} dataset {_dataset_cfg_name(cfg[f"{split}_dataloader"].dataset)} holds no images (after '
            f'its filter_cfg): check its ann_file, data_prefix and that its categories match metainfo classes') from e
    dataset = loader.dataset
    if len(dataset) == 0:
        raise DatasetCheckError(f'the {split} dataset {_dataset_cfg_name(cfg[f"{split}_dataloader"].dataset)} holds '
                                f'no images (after its filter_cfg): there is nothing to {split} on')
    return dataset


def _num_classes_keys(node: Any, prefix: str = 'model') -> Iterator[Tuple[str, Any]]:
    """``(dotted key, value)`` of every ``num_classes`` of a model config, except the class-agnostic rpn_head."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            key = f'{prefix}.{k}'
            if k == 'num_classes':
                yield key, v
            elif k != 'rpn_head':
                yield from _num_classes_keys(v, key)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _num_classes_keys(v, f'{prefix}.{i}')


def check_num_classes(model_cfg: Mapping, dataset: Any, split: str = 'train') -> None:
    """Refuse a model whose heads predict another number of classes than the dataset has.

    With fewer, training stops at the first label beyond them (``Target 7 is out of bounds``); with more, the extra
    outputs are never trained and their predictions get no class name at evaluation.

    Args:
        model_cfg (Mapping): ``cfg.model``; every ``num_classes`` in it (``roi_head.bbox_head``,
            ``roi_head.mask_head``, a single-stage ``bbox_head``, ...) is checked; ``rpn_head`` is class-agnostic.
        dataset: the built dataset (its ``metainfo['classes']``).
        split (str): for the message.

    Raises:
        DatasetCheckError: naming the config keys, their values and the dataset's class count and names.
    """
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    if not classes:
        return
    wrong = [(k, v) for k, v in _num_classes_keys(model_cfg) if v != len(classes)]
    if wrong:
        keys = ', '.join(f'{k} = {v}' for k, v in wrong)
        names = ', '.join(map(str, classes[:5])) + (', ...' if len(classes) > 5 else '')
        fix = ' '.join(f'{k}={len(classes)}' for k, _ in wrong)
        raise DatasetCheckError(f'the model predicts another number of classes than the {split} dataset has: {keys}, '
                                f'but the dataset has {len(classes)} classes ({names}). Set '
                                f'--cfg-options {fix}, or give the dataset metainfo=dict(classes=...) of the model')


_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def image_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as an image, or None: missing, empty, no image header, or a truncated PNG.

    Reads the header with PIL (no decoding) and, for PNG, the last 12 bytes (the ``IEND`` chunk every complete PNG
    ends with): a PNG cut off by a full disk or a killed copy has a valid header but no end.
    """
    if not osp.isfile(path):
        return 'missing'
    try:
        size = osp.getsize(path)
        if size == 0:
            return 'empty file'
        from PIL import Image
        with Image.open(path) as im:
            im.size  # noqa: B018  (reads the header)
        with open(path, 'rb') as f:
            head = f.read(8)
            if head == _PNG_MAGIC:
                f.seek(max(size - 12, 0))
                if b'IEND' not in f.read(12):
                    return 'truncated PNG (no IEND chunk at its end)'
    except Exception as e:  # PIL.UnidentifiedImageError, OSError, ...
        return f'not a readable image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})'
    return None


def check_images(dataset: Any, what: str, max_report: int = 3, logger: Any = None) -> int:
    """Refuse a dataset with a missing or unreadable image before the first iteration reaches it.

    Args:
        dataset: a built mmengine dataset (wrappers are looked into); each entry's ``img_path`` is checked with
            :func:`image_problem`. Remote paths (``s3://...``) are skipped.
        what (str): e.g. ``'train'``, for the message.
        max_report (int): images named in the message.
        logger: gets one line with the count and time.

    Returns:
        int: the number of distinct images checked.

    Raises:
        DatasetCheckError: naming the number of bad images and the first ``max_report`` with their problem.
    """
    start = time.perf_counter()
    seen, bad = set(), []
    for leaf in leaf_datasets(dataset):
        if not hasattr(leaf, 'get_data_info'):
            continue
        for i in range(len(leaf)):
            path = leaf.get_data_info(i).get('img_path')
            if not path or path in seen or '://' in str(path):
                continue
            seen.add(path)
            problem = image_problem(path)
            if problem:
                bad.append(f'{path}: {problem}')
    if bad:
        more = f' (and {len(bad) - max_report} more)' if len(bad) > max_report else ''
        raise DatasetCheckError(f'{len(bad)} of the {len(seen)} {what} images cannot be read: '
                                f'{"; ".join(bad[:max_report])}{more}. Restore them or remove them from the '
                                f'annotation file.')
    if logger is not None:
        logger.info(f'checked {len(seen)} {what} images (exist, readable header) in '
                    f'{time.perf_counter() - start:.1f} s')
    return len(seen)


def _json_safe(value: Any) -> Any:
    """A metric value json can hold: numpy scalars as Python numbers, NaN / inf as None (json has no NaN)."""
    if hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------------------------
# Train and test
# ----------------------------------------------------------------------------------------------------------------
def train(config: Union[str, Config],
          work_dir: Optional[str] = None,
          cfg_options: Optional[dict] = None,
          resume: Union[bool, str, None] = None,
          amp: bool = False,
          auto_scale_lr: bool = False,
          launcher: str = 'none',
          check_image_files: bool = True,
          data_root: Optional[str] = None,
          anchor_check: Optional[str] = None) -> Runner:
    """Train a model as mmdet's ``tools/train.py`` does and return the finished :class:`Runner`.

    Before the first iteration it checks the hooks, the train (and val) dataset (not empty, ``num_classes`` equal
    to the dataset's class count, every image present and readable), so that a run fails at start, not hours in.

    Args:
        config (str | Config): config file or object.
        work_dir (str, optional): where logs and checkpoints go.
        cfg_options (dict, optional): overrides merged into the config (``--cfg-options``; see
            :func:`check_cfg_options`).
        resume (bool | str, optional): ``True`` resumes from the checkpoint named in ``<work_dir>/last_checkpoint``
            (found in the work dir too when it was moved; none is an error); ``'auto'`` from the newest complete
            checkpoint in the work dir (:func:`~mmdet_custom.checkpoint.find_newest_checkpoint`), or starts from
            iteration 0 when there is none; a path resumes from that checkpoint (model, optimizer, schedulers,
            iteration, message hub and RNG states).
        amp (bool): wrap the optimizer in mmengine's ``AmpOptimWrapper`` (dynamic loss scale).
        auto_scale_lr (bool): scale the lr by ``real batch / auto_scale_lr.base_batch_size``.
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'.
        check_image_files (bool): check every train/val image's existence and header at start. Defaults to True.
        data_root (str, optional): the data folder of every dataset and evaluator (``--data-root``, see
            :func:`~mmdet_custom.datasets.utils.set_data_root`).
        anchor_check (str, optional): ``'refuse'``, ``'warn'`` or ``'off'``: the exact recall of the RPN anchors on
            the training boxes at the assigner's positive IoU, before the first iteration
            (:func:`~mmdet_custom.anchor_search.check.check_anchor_recall`); None: the config's ``anchor_check``,
            default ``'refuse'``.

    Raises:
        UserError: a bad ``--cfg-options`` key or hook argument (:class:`ConfigKeyError`), ``amp`` with an optimizer
            wrapper of another type, ``auto_scale_lr`` without ``auto_scale_lr.base_batch_size``, ``resume`` without
            a checkpoint (:class:`~mmdet_custom.checkpoint.ResumeError`), an empty dataset, another class count or
            unreadable images (:class:`DatasetCheckError`), RPN anchors that match almost no training box
            (:class:`~mmdet_custom.anchor_search.check.AnchorRecallError`).

    Every run stops cleanly on SIGTERM / SIGINT: :class:`~mmdet_custom.engine.hooks.PreemptionHook` is added to the
    hooks (unless the config has one) and ``EpochBasedTrainLoop`` is replaced by
    :class:`~mmdet_custom.engine.loops.PreemptibleEpochBasedTrainLoop` (same arguments). After such a stop
    ``preempted_by(runner)`` names the signal.
    """
    cfg = load_config(config, work_dir, cfg_options, launcher, data_root)
    if amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise OptionError(f'--amp needs optim_wrapper.type OptimWrapper, the config has {wrapper!r}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise OptionError('--auto-scale-lr needs auto_scale_lr = dict(base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    fresh_start = False
    if resume == 'auto':
        found = find_newest_checkpoint(cfg.work_dir)
        fresh_start = found is None
        cfg.resume, cfg.load_from = (True, found) if found else (False, cfg.get('load_from'))
    elif resume is True:
        cfg.resume, cfg.load_from = True, find_resume_checkpoint(cfg.work_dir)
    elif isinstance(resume, str):
        if not osp.isfile(resume):
            raise FileNotFoundError(f'--resume: checkpoint not found: {resume}')
        cfg.resume, cfg.load_from = True, resume
    elif cfg.get('resume', False) and not cfg.get('load_from', None):  # resume = True in the config: auto-resume
        cfg.load_from = find_resume_checkpoint(cfg.work_dir)
    make_preemptible(cfg)
    check_hooks(cfg)
    with config_build_errors(cfg):
        runner = Runner.from_cfg(cfg)
    if fresh_start:
        runner.logger.info(f'--resume auto: no checkpoint in {cfg.work_dir}, starting from iteration 0')
    if cfg.get('resume', False) and '://' not in str(cfg.get('load_from') or '://'):  # a file it cannot resume from
        check_resume_checkpoint(runner.model, cfg.load_from)
    dataset = _build_dataset(runner, 'train', cfg)
    check_num_classes(cfg.model, dataset, 'train')
    check_anchor_recall(cfg, dataset, anchor_check or cfg.get('anchor_check', 'refuse'), logger=runner.logger)
    if check_image_files:
        check_images(dataset, 'train', logger=runner.logger)
    if runner.val_loop is not None:  # builds the val loop now (runner.train() would build it after the optimizer)
        val_dataset = _build_dataset(runner, 'val', cfg)
        check_num_classes(cfg.model, val_dataset, 'val')
        check_evaluator_ann_files(runner.val_loop.evaluator, val_dataset, 'val', logger=runner.logger)
        if check_image_files:
            check_images(val_dataset, 'val', logger=runner.logger)
    try:
        with config_build_errors(cfg):  # the optimizer, schedulers and loops are built here
            runner.train()
    finally:  # after_train restores them, but is not called when training fails
        for hook in runner.hooks:
            if isinstance(hook, PreemptionHook):
                hook.restore_signal_handlers()
    return runner


def make_preemptible(cfg: Config) -> None:
    """Add ``PreemptionHook`` to ``cfg.custom_hooks`` (unless there is one) and replace an ``EpochBasedTrainLoop``
    by ``PreemptibleEpochBasedTrainLoop``, in place; an iteration-based loop already stops on ``stop_training``."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, Mapping) and h.get('type') in ('PreemptionHook', PreemptionHook) for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='PreemptionHook')]
    train_cfg = cfg.get('train_cfg')
    if isinstance(train_cfg, Mapping):
        epoch_loop = train_cfg.get('type') in ('EpochBasedTrainLoop', 'mmengine.EpochBasedTrainLoop') or (
            'type' not in train_cfg and train_cfg.get('by_epoch', False))
        if epoch_loop:
            train_cfg.pop('by_epoch', None)
            train_cfg['type'] = 'PreemptibleEpochBasedTrainLoop'


class AtomicDumpDetResults(DumpDetResults):
    """mmdet's ``DumpDetResults`` (``--out results.pkl``: raw predictions, masks as RLE), written atomically.

    mmengine's ``DumpResults.compute_metrics`` pickles straight into ``out_file_path``: a run that fails while
    writing (full disk, an object that does not pickle, a kill) leaves a truncated pickle, over the previous one if
    there was one. Here the pickle goes to a temporary file beside it that replaces ``out_file_path`` only when
    complete (:func:`~mmdet_custom.utils.fileio.atomic_path`); on failure the previous file is left as it was.
    """

    def compute_metrics(self, results: list) -> dict:
        from mmengine.fileio import dump
        from mmengine.logging import print_log
        with atomic_path(self.out_file_path) as tmp:
            dump(results, tmp, file_format='pkl')
        print_log(f'Results has been saved to {self.out_file_path}.', logger='current')
        return {}


class TestMetrics(dict):
    """:func:`test`'s result: the metrics (a dict), plus where the run wrote them: ``work_dir``, ``metrics_file``
    (``<work_dir>/test_metrics.json``), ``log_dir`` (mmengine's ``<work_dir>/<timestamp>``, with the log) and
    ``out`` (the ``out`` file, or None)."""
    __test__ = False  # not a pytest test class, whatever module imports it

    def __init__(self, metrics: Mapping, work_dir: str, log_dir: str, out: Optional[str] = None):
        super().__init__(metrics)
        self.work_dir, self.log_dir, self.out = work_dir, log_dir, out
        self.metrics_file = osp.join(work_dir, 'test_metrics.json')


def _strip_annotations(pipeline: Sequence[dict]) -> list:
    return [t for t in pipeline if not is_annotation_loader(t)]


def _evaluators(cfg: Config) -> list:
    evaluators = cfg.get('test_evaluator') or []
    return evaluators if isinstance(evaluators, list) else [evaluators]


def _test_ann_file(cfg: Config) -> str:
    """``data_root/ann_file`` of the test dataset (inside its wrappers); ``''`` when it has none."""
    dataset = innermost_dataset_cfg((cfg.get('test_dataloader') or {}).get('dataset') or {})
    if not dataset.get('ann_file'):
        return ''
    return osp.join(dataset.get('data_root') or '', dataset.ann_file)


def _check_test_flags(config: Union[str, Config], cfg: Config, checkpoint: str, out: Optional[str],
                      format_only: bool, name_to_ids: Optional[str]) -> None:
    """The checks of :func:`test` that need no model: files exist, ``out`` is of the right kind, writable and no
    input of the run, ``name_to_ids`` is a valid map."""
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    if format_only and (not out or not out.endswith('.json')):
        raise OptionError(f'--format-only needs --out <file>.json, got {out!r}')
    if out is not None and not format_only and not out.endswith(('.pkl', '.pickle')):
        raise OptionError(f'--out without --format-only dumps raw predictions and must be a .pkl, got {out!r}')
    if out is not None:
        inputs = [('checkpoint', checkpoint), ('--name-to-ids', name_to_ids), ('test_dataloader.dataset.ann_file',
                                                                                _test_ann_file(cfg))]
        inputs += [('config', config if isinstance(config, str) else cfg.filename)]
        inputs += [(f'test_evaluator.{i}.ann_file', ev.get('ann_file')) for i, ev in enumerate(_evaluators(cfg))]
        for what, path in inputs:
            if path and osp.exists(path) and osp.exists(out) and osp.samefile(path, out):
                raise OptionError(f'--out {out} is the {what} of this run; writing it would replace an input. '
                                  f'Choose another file. Nothing was run.')
        check_writable(out, '--out')
    check_writable(osp.join(cfg.work_dir, 'test_metrics.json'), '--work-dir')
    if name_to_ids is not None:
        from .export import load_name_to_ids
        load_name_to_ids(name_to_ids)


def _set_max_per_img(cfg: Config, max_per_img: int) -> None:
    """Keep ``max_per_img`` detections per image and let the COCO evaluation count that many."""
    cfg.model.test_cfg.rcnn.max_per_img = max_per_img
    for ev in _evaluators(cfg):
        # the iSAID protocol fixes its budgets at the devkit's (1, 10, 1000); others follow max_per_img
        if ev.get('type') in ('CocoMetric', 'MaxDetsCocoMetric') and ev.get('protocol') != 'isaid':
            # COCOeval reports AP at its third maxDets and needs exactly three
            ev.proposal_nums = (100, 300, max_per_img) if max_per_img > 300 else (1, 10, max_per_img)


def _export_instead_of_evaluating(cfg: Config, out: str, score_thr: float, name_to_ids: Optional[str],
                                  drop_border: bool) -> None:
    """``--format-only``: no ``LoadAnnotations`` in the test pipeline, ``CocoResultsExport`` as the evaluator."""
    dataset = innermost_dataset_cfg(cfg.test_dataloader.dataset)
    dataset.pipeline = _strip_annotations(dataset.pipeline)
    # the test json's categories give each class its category_id (by name); absent: class i -> id i + 1
    ann_file = _test_ann_file(cfg)
    cfg.test_evaluator = ConfigDict(type='CocoResultsExport', out_file=out, score_thr=score_thr,
                                    name_to_ids=name_to_ids, drop_border=drop_border,
                                    ann_file=ann_file if osp.isfile(ann_file) else None)


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
         launcher: str = 'none',
         strict: bool = True,
         check_image_files: bool = True,
         data_root: Optional[str] = None) -> Dict[str, Any]:
    """Evaluate ``checkpoint`` on the config's test set and write the metrics as json in the work dir.

    Everything that can be checked before inference is: the checkpoint fits the model, ``out`` can be written and
    is no input of the run, ``name_to_ids`` is a valid map, the test set is not empty, has the model's class count
    and readable images.

    Args:
        config (str | Config): config file or object.
        checkpoint (str): checkpoint path (loaded with ``weights_only=True``, see :mod:`mmdet_custom.checkpoint`).
        work_dir (str, optional): where ``test_metrics.json`` and the logs go.
        cfg_options (dict, optional): overrides merged into the config (see :func:`check_cfg_options`).
        out (str, optional): with ``format_only``: the COCO results json to write (image_id, category_id, bbox
            xywh, score, RLE segmentation); otherwise a ``.pkl`` dump of the raw predictions (mmdet's ``--out``,
            written atomically by :class:`AtomicDumpDetResults`). Either replaces an existing file only once
            complete; a failed run leaves it as it was.
        format_only (bool): do not evaluate; export predictions for images without labels. The test pipeline's
            ``LoadAnnotations`` is dropped.
        score_thr (float): with ``format_only``: keep detections scoring at least this.
        max_per_img (int, optional): detections kept per image (``model.test_cfg.rcnn.max_per_img``); the COCO
            evaluation then also uses that many (``CocoMetric.proposal_nums``), except under
            ``MaxDetsCocoMetric(protocol='isaid')``, whose budgets are the devkit's (1, 10, 1000).
        name_to_ids (str, optional): json mapping image file name -> image id used in the export.
        drop_border (bool): with ``format_only``: drop instances whose mask touches the image border.
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'.
        strict (bool): refuse a checkpoint with missing, unexpected or shape-mismatched keys for the config's model.
            With False such a checkpoint is tested with a warning (its mismatched layers stay at their
            initialisation). Defaults to True.
        check_image_files (bool): check every test image's existence and header first. Defaults to True.
        data_root (str, optional): the data folder of every dataset and evaluator (``--data-root``, see
            :func:`~mmdet_custom.datasets.utils.set_data_root`).

    Returns:
        TestMetrics: the metrics (a dict, e.g. ``coco/segm_mAP``, ``coco/segm_mAP_50``), also written to
        ``<work_dir>/test_metrics.json`` (a NaN metric is written as ``null``), with the paths written
        (``metrics_file``, ``log_dir``, ``out``).

    Raises:
        UserError: ``format_only`` without a ``.json`` ``out``, ``out`` of the wrong kind, not writable or one of
            the run's inputs (checkpoint, config, ``name_to_ids``, the test ann_file), a bad ``name_to_ids`` file,
            a checkpoint that does not fit (:class:`~mmdet_custom.checkpoint.CheckpointMismatchError`) or is unsafe
            (:class:`~mmdet_custom.checkpoint.UnsafeCheckpointError`), a dataset problem
            (:class:`DatasetCheckError`).
        FileNotFoundError: ``checkpoint`` does not exist.
    """
    cfg = load_config(config, work_dir, cfg_options, launcher, data_root)
    _check_test_flags(config, cfg, checkpoint, out, format_only, name_to_ids)
    cfg.load_from = checkpoint
    if max_per_img is not None:
        _set_max_per_img(cfg, max_per_img)
    if format_only:
        _export_instead_of_evaluating(cfg, out, score_thr, name_to_ids, drop_border)
    with config_build_errors(cfg):
        runner = Runner.from_cfg(cfg)
    check_checkpoint_matches(runner.model, checkpoint, strict=strict, logger=runner.logger)
    dataset = _build_dataset(runner, 'test', cfg)
    check_num_classes(cfg.model, dataset, 'test')
    check_evaluator_ann_files(runner.test_loop.evaluator, dataset, 'test', logger=runner.logger)
    if check_image_files:
        check_images(dataset, 'test', logger=runner.logger)
    if out is not None and not format_only:
        runner.test_evaluator.metrics.append(AtomicDumpDetResults(out_file_path=out))
    metrics = TestMetrics(_json_safe(dict(runner.test())), cfg.work_dir, runner.log_dir, out)
    os.makedirs(cfg.work_dir, exist_ok=True)
    dump_json_atomic(dict(metrics), metrics.metrics_file, indent=2)
    return metrics


test.__test__ = False  # not a pytest test, whatever module imports it
