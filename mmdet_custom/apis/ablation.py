"""Ablation table of a config family: each config trained for the same budget on the same data, then tested.

For every config the table gives its parent (its first ``_base_``), what it changes against the parent (the keys
of the two resolved configs that differ, in dotted form, shortened: a sub-tree whose ``type`` changed is one
entry ``key: Old -> New``, a sub-tree the other config lacks is one entry ``+key`` / ``-key``), segm AP / AP50 /
APs and box AP50 of its test run, its parameter count and its inference ms/image.

Same budget, same data: every config is trained with mmengine's ``IterBasedTrainLoop`` for ``iters`` iterations
(no validation during training), with the same seed, on the same data (``data``: converted iSAID patches, or the
configs' own), then tested on the configs' test split. Each config keeps its model, optimizer and data pipeline;
of its lr schedule only the iteration-based parts (e.g. the linear warm-up) are kept, because epoch-based steps
and plateau rules do not fire inside an iteration budget (the table says so).

Metrics come from the config's ``test_evaluator``: with ``MaxDetsCocoMetric(protocol='isaid')`` (the iSAID
configs) AP is the official iSAID protocol (maxDets 1000, iSAID's size bands), otherwise mmdet's COCO metric; the
table names the protocol.
"""
import copy
import csv
import functools
import glob
import hashlib
import json
import os
import os.path as osp
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.config.utils import _get_package_and_cfg_path
from mmengine.utils import get_installed_path

from mmdet_custom.analysis.benchmark import machine_info, prepare_data
from mmdet_custom.analysis.infer_bench import benchmark_inference
from mmdet_custom.analysis.model_stats import disable_pretrained
from mmdet_custom.apis.runner import test as run_test
from mmdet_custom.apis.runner import train
from mmdet_custom.datasets.utils import innermost_dataset_cfg
from mmdet_custom.utils.config import read_config
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_path, dump_json_atomic, write_csv_atomic

#: Metric keys of mmdet's CocoMetric / the project's MaxDetsCocoMetric -> table column.
METRICS = (('coco/segm_mAP', 'segm_AP'), ('coco/segm_mAP_50', 'segm_AP50'), ('coco/segm_mAP_s', 'segm_APs'),
           ('coco/bbox_mAP_50', 'bbox_AP50'))
_ABSENT = '<absent>'


class AblationInputError(UserError, ValueError):
    """A config pattern that matches no file, or options that cannot work."""


# ----------------------------------------------------------------------------------------------------------------
# Configs: expansion, parent, diff
# ----------------------------------------------------------------------------------------------------------------
def expand_configs(patterns: Sequence[str]) -> List[str]:
    """Config files named by ``patterns`` (paths or glob patterns), in the given order, each once.

    Raises:
        AblationInputError: a pattern matches no ``.py`` file.
    """
    files: List[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if m.endswith('.py') and osp.isfile(m)]
        if not matches:
            raise AblationInputError(f'config {pattern!r} matches no .py file')
        files += [m for m in matches if osp.abspath(m) not in {osp.abspath(f) for f in files}]
    return files


def load_any_config(config: str):
    """A config from a file or ``package::path`` (e.g. ``mmdet::_base_/models/mask-rcnn_r50_fpn.py``); a fresh
    copy of a cached parse (parsing costs ~1 s, and a family's configs share parents)."""
    return copy.deepcopy(_load_cached(config if '::' in config else osp.abspath(config)))


@functools.lru_cache(maxsize=64)
def _load_cached(config: str):
    if '::' in config:
        package, path = _get_package_and_cfg_path(config)
        return read_config(osp.join(get_installed_path(package), '.mim', 'configs', path))
    return read_config(config)  # private names (fragment parts) dropped: they are no change of the model


def parent_config(config: str) -> Optional[str]:
    """The config's first ``_base_`` as a path (``package::path`` kept), or None when it has none."""
    bases = Config._get_base_files(config)
    if not bases:
        return None
    base = bases[0]
    return base if '::' in base else osp.normpath(osp.join(osp.dirname(config), base))


def flatten(node: Any, prefix: str = '') -> Dict[str, Any]:
    """Dotted keys of a config tree: dicts by key, lists of dicts by index (``a.0.b``); other values are leaves."""
    if isinstance(node, dict):
        out: Dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f'{prefix}{key}.'))
        return out or {prefix[:-1]: {}}
    if isinstance(node, (list, tuple)) and node and all(isinstance(v, dict) for v in node):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f'{prefix}{i}.'))
        return out
    return {prefix[:-1]: tuple(node) if isinstance(node, list) else node}


def _short(value: Any, width: int = 24) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + '...'


def config_diff(child: Dict, parent: Dict, ignore: Sequence[str] = ('filename', 'work_dir')) -> List[str]:
    """What ``child`` changes against ``parent`` (two resolved config dicts), as short dotted entries.

    * a sub-tree whose ``type`` differs: one entry ``key: OldType -> NewType`` (its other keys are not listed);
    * a sub-tree present on one side only: one entry ``+key`` (added) or ``-key`` (removed);
    * any other differing leaf: ``key=value`` (``-key`` when the child lacks it).

    Returns:
        list[str]: the entries, most telling first: ``model.*``, then the recipe (``optim_wrapper``,
        ``param_scheduler``, ``train_cfg``), then the rest, and last the top-level names a config adds for its
        children to reuse (e.g. ``+attention_fpn_neck`` of a parts fragment); by key within each group.
    """
    a, b = flatten(child), flatten(parent)
    keys = sorted(k for k in set(a) | set(b)
                  if a.get(k, _ABSENT) != b.get(k, _ABSENT) and k.split('.')[0] not in ignore
                  and '_scope_' not in k.split('.'))
    entries: Dict[str, str] = {}
    covered: List[str] = []

    def under(key: str, prefix: str) -> bool:
        return key == prefix or key.startswith(prefix + '.')

    # a leaf on one side where the other has a sub-tree (e.g. init_cfg=None replacing a dict): one entry
    for key in keys:
        if (key in a and any(k.startswith(key + '.') for k in b)) or \
                (key in b and any(k.startswith(key + '.') for k in a)):
            entries[key] = f'{key}={_short(a[key])}' if key in a else f'{key}={{...}}'
            covered.append(key)
    # sub-trees whose type changed
    for key in keys:
        if any(under(key, c) for c in covered):
            continue
        if key.endswith('.type') and key in a and key in b:
            prefix = key[:-len('.type')]
            entries[prefix] = f'{prefix}: {b[key]} -> {a[key]}'  # parent's type -> child's
            covered.append(prefix)
    for key in keys:
        if any(under(key, c) for c in covered):
            continue
        if key in a and key in b:
            entries[key] = f'{key}={_short(a[key])}'
            continue
        side, other, sign = (a, b, '+') if key in a else (b, a, '-')
        # the highest ancestor the other config lacks entirely
        parts = key.split('.')
        top = key
        for i in range(1, len(parts) + 1):
            prefix = '.'.join(parts[:i])
            if not any(under(k, prefix) for k in other):
                top = prefix
                break
        if top != key:
            entries.setdefault(top, f'{sign}{top}')
            covered.append(top)
        else:
            entries[key] = f'{key}={_short(a[key])}' if sign == '+' else f'-{key}'
    def rank(key: str) -> Tuple[int, str]:
        top = key.split('.')[0]
        if top == 'model':
            return 0, key
        if top in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'auto_scale_lr'):
            return 1, key
        if '.' not in key and entries[key].startswith('+'):
            return 3, key
        return 2, key

    return [entries[k] for k in sorted(entries, key=rank)]


def shorten_diff(entries: Sequence[str], max_items: int = 6, strip: str = 'model.') -> str:
    """The diff entries as one line: the leading ``model.`` dropped, at most ``max_items``, then ``+N more``."""
    items = []
    for entry in entries:
        sign = entry[0] if entry[:1] in '+-' else ''
        body = entry[len(sign):]
        items.append(sign + (body[len(strip):] if strip and body.startswith(strip) else body))
    text = '; '.join(items[:max_items])
    if len(items) > max_items:
        text += f'; +{len(items) - max_items} more'
    return text or '(same as parent)'


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class AblationRow:
    """One row of the ablation table (metrics in [0, 1] as the evaluator gives them; None: not measured)."""
    config: str
    parent: str
    changes: str
    protocol: str
    segm_AP: Optional[float] = None
    segm_AP50: Optional[float] = None
    segm_APs: Optional[float] = None
    bbox_AP50: Optional[float] = None
    params_m: Optional[float] = None
    infer_ms: Optional[float] = None
    iters: int = 0
    train_s: Optional[float] = None
    error: str = ''
    changed_keys: List[str] = field(default_factory=list)


def _pipelines(cfg) -> Iterator[list]:
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(name)
        if loader:
            ds = innermost_dataset_cfg(loader.dataset)
            if ds.get('pipeline'):
                yield ds.pipeline
    for name in ('train_pipeline', 'test_pipeline'):
        if isinstance(cfg.get(name), list):
            yield cfg[name]


def _protocol(cfg) -> str:
    evaluator = cfg.get('test_evaluator') or {}
    evaluators = evaluator if isinstance(evaluator, list) else [evaluator]
    for ev in evaluators:
        if ev.get('type') == 'MaxDetsCocoMetric':
            return ev.get('protocol', 'coco')
        if ev.get('type') == 'CocoMetric':
            return 'coco'
    return evaluators[0].get('type', '?') if evaluators else '-'


def prepare_ablation_cfg(config: str, work_dir: str, iters: int, data_root: Optional[str] = None,
                         img_size: Optional[int] = None, seed: int = 0, random_init: bool = False,
                         workers: Optional[int] = None, batch_size: Optional[int] = None,
                         cfg_options: Optional[Dict] = None):
    """The config as the ablation trains and tests it (see the module doc); ``config`` itself is not changed.

    Args:
        config (str): config file.
        work_dir (str): the run's work dir (checkpoints, logs, test metrics).
        iters (int): training iterations.
        data_root (str, optional): converted iSAID patches (``annotations/instances_{train,val}.json``,
            ``{train,val}/images``) for every split (test = val); None keeps the config's data.
        img_size (int, optional): square ``Resize`` scale of every pipeline; None keeps the config's.
        seed (int): the run's seed.
        random_init (bool): no pretrained weights (offline runs, tests).
        workers (int, optional): dataloader workers of every split.
        batch_size (int, optional): training batch size.
        cfg_options (dict, optional): overrides merged last.
    """
    cfg = load_any_config(config)
    cfg.work_dir = work_dir
    cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # no validation inside the budget
    schedulers = cfg.get('param_scheduler') or []
    schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
    cfg.param_scheduler = [s for s in schedulers if s.get('by_epoch', True) is False]
    cfg.default_hooks.checkpoint = ConfigDict(type='CheckpointHook', by_epoch=False, interval=iters,
                                              save_optimizer=False, max_keep_ckpts=1, save_best=None)
    cfg.default_hooks.logger = ConfigDict(type='LoggerHook', interval=max(1, min(50, iters)),
                                          log_metric_by_epoch=False)
    cfg.log_processor = dict(cfg.get('log_processor') or {}, by_epoch=False)
    cfg.randomness = dict(seed=seed)
    if random_init:
        disable_pretrained(cfg.model)
    if data_root is not None:
        root = str(data_root).rstrip('/') + '/'
        for loader, split in (('train_dataloader', 'train'), ('test_dataloader', 'val')):
            ds = innermost_dataset_cfg(cfg[loader].dataset)
            ds.update(data_root=root, ann_file=f'annotations/instances_{split}.json',
                      data_prefix=dict(img=f'{split}/images/'))
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        for ev in evaluators:
            if 'ann_file' in ev:
                ev.ann_file = root + 'annotations/instances_val.json'
    if img_size is not None:
        for pipeline in _pipelines(cfg):
            for t in pipeline:
                if t.get('type') == 'Resize':
                    t['scale'] = (img_size, img_size)
                    t['keep_ratio'] = True
    if workers is not None:
        for name in ('train_dataloader', 'test_dataloader'):
            cfg[name].num_workers = workers
            cfg[name].persistent_workers = workers > 0
    if batch_size is not None:
        cfg.train_dataloader.batch_size = batch_size
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def run_one(config: str, work_dir: str, iters: int, infer_iters: int = 3, **prepare_kwargs) -> AblationRow:
    """Train, test and time one config (see :func:`prepare_ablation_cfg` for the keyword arguments).

    Errors of the run itself are caught and returned in ``error`` (the table goes on with the next config).
    """
    parent = parent_config(config)
    try:
        entries = config_diff(load_any_config(config).to_dict(), load_any_config(parent).to_dict()) if parent \
            else []
    except Exception as err:  # a parent that cannot be read alone (e.g. a fragment needing others)
        entries = [f'(diff unavailable: {type(err).__name__})']
    cfg = prepare_ablation_cfg(config, work_dir, iters, **prepare_kwargs)
    row = AblationRow(config=config, parent=parent or '-', changes=shorten_diff(entries), protocol=_protocol(cfg),
                      iters=iters, changed_keys=entries)
    try:
        start = time.perf_counter()
        runner = train(copy.deepcopy(cfg), work_dir=work_dir)
        row.train_s = time.perf_counter() - start
        row.params_m = sum(p.numel() for p in runner.model.parameters()) / 1e6
        del runner
        checkpoint = osp.join(work_dir, f'iter_{iters}.pth')
        metrics = run_test(copy.deepcopy(cfg), checkpoint, work_dir=osp.join(work_dir, 'test'))
        for key, column in METRICS:
            setattr(row, column, metrics.get(key))
        timing = benchmark_inference(copy.deepcopy(cfg), checkpoint, batch_sizes=(1, ), num_warmup=1,
                                     num_iters=infer_iters, split='test')
        row.infer_ms = timing[0]['ms_per_img']
    except Exception as err:  # noqa: BLE001 - reported in the table, the other configs still run
        row.error = f'{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ""}'
    return row


#: Table columns: (header, AblationRow field, format).
TABLE_COLUMNS = (('config', 'config', None), ('parent', 'parent', None), ('changes vs parent', 'changes', None),
                 ('segm AP', 'segm_AP', '.3f'), ('segm AP50', 'segm_AP50', '.3f'), ('segm APs', 'segm_APs', '.3f'),
                 ('box AP50', 'bbox_AP50', '.3f'), ('params (M)', 'params_m', '.2f'),
                 ('infer ms/img', 'infer_ms', '.0f'))


def _cell(value: Any, fmt: Optional[str]) -> str:
    if value is None:
        return '-'
    return format(value, fmt) if fmt else str(value)


def format_markdown(rows: Sequence[AblationRow], settings: Dict) -> str:
    """The ablation table as markdown, with the budget, data, protocol and schedule note."""
    protocols = sorted({r.protocol for r in rows})
    out = ['# Ablation', '',
           f'- budget: {settings.get("iters")} iterations per config, seed {settings.get("seed")}, same data: '
           f'{settings.get("data")}; input {settings.get("img_size") or "as configured"}',
           '- lr schedule: each config\'s iteration-based parts only (epoch-based steps and plateau rules do not '
           'fire inside an iteration budget); no validation during training',
           f'- metrics: test split, protocol {", ".join(protocols)} (isaid: the official iSAID evaluator, '
           'maxDets 1000, small = 10^2-144^2 px^2); infer ms/img: batch 1, model.test_step incl. post-processing',
           f'- machine: {settings.get("machine", "-")}', '',
           '| ' + ' | '.join(h for h, _, _ in TABLE_COLUMNS) + ' |',
           '|' + '|'.join('---' if fmt is None else '--:' for _, _, fmt in TABLE_COLUMNS) + '|']
    for r in rows:
        cells = [_cell(getattr(r, name), fmt) for _, name, fmt in TABLE_COLUMNS]
        if r.error:
            cells[3] = f'failed: {r.error}'
        out.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
    return '\n'.join(out) + '\n'


CSV_FIELDS = [f.name for f in fields(AblationRow)]


def write_table(rows: Sequence[AblationRow], md_path: str, csv_path: str, settings: Dict) -> None:
    """Write the markdown and the CSV (all :class:`AblationRow` fields; ``changed_keys`` joined by ``; ``),
    each atomically."""
    with atomic_path(md_path) as tmp, open(tmp, 'w') as f:
        f.write(format_markdown(rows, settings))
    records = []
    for r in rows:
        rec = asdict(r)
        rec['changed_keys'] = '; '.join(r.changed_keys)
        records.append(['' if rec[k] is None else rec[k] for k in CSV_FIELDS])
    write_csv_atomic(csv_path, CSV_FIELDS, records)


def read_csv(path: str) -> List[AblationRow]:
    """Read back a CSV written by :func:`write_table`."""
    rows = []
    with open(path, newline='') as f:
        for rec in csv.DictReader(f):
            values: Dict[str, Any] = {}
            for fld in fields(AblationRow):
                text = rec[fld.name]
                if fld.name == 'changed_keys':
                    values[fld.name] = text.split('; ') if text else []
                elif fld.name == 'iters':
                    values[fld.name] = int(text)
                elif fld.type in (str, 'str'):
                    values[fld.name] = text
                else:
                    values[fld.name] = float(text) if text != '' else None
            rows.append(AblationRow(**values))
    return rows


def run_ablation(configs: Sequence[str], work_dir: str, iters: int, out: Optional[str] = None,
                 data: Optional[str] = None, img_size: Optional[int] = None, seed: int = 0,
                 random_init: bool = False, workers: Optional[int] = None, batch_size: Optional[int] = None,
                 infer_iters: int = 3, cfg_options: Optional[Dict] = None,
                 log: Callable[[str], None] = print) -> Tuple[List[AblationRow], str, str]:
    """Train, test and time every config of ``configs`` (files or globs) and write the table.

    Args:
        configs (Sequence[str]): config files or glob patterns.
        work_dir (str): each config runs in ``<work_dir>/<config name>``.
        iters (int): training iterations per config (the same budget for all).
        out (str, optional): markdown table path; the CSV goes beside it (``.csv``). Default
            ``<work_dir>/ablation.md``. Both are rewritten (atomically) after every config.
        data (str, optional): converted iSAID patches or a raw devkit folder (converted into ``work_dir``) for
            every config; None: each config's own data.
        img_size, seed, random_init, workers, batch_size, cfg_options: see :func:`prepare_ablation_cfg`.
        infer_iters (int): timed inference steps per config.

    Returns:
        tuple: (rows, markdown path, csv path).

    A rerun with the same arguments keeps the rows that finished before (:data:`FINISHED_ROW` in the config's
    folder, for the same resolved config and settings: :func:`row_fingerprint`) and runs the others: failed ones,
    those a kill interrupted, and those whose config or settings changed. Delete a config's folder to run it again.

    Raises:
        AblationInputError: no config matched, two configs share a name, or ``iters`` < 1.
    """
    files = expand_configs(configs)
    if iters < 1:
        raise AblationInputError(f'--iters must be >= 1, got {iters}')
    names = [osp.splitext(osp.basename(f))[0] for f in files]
    if len(set(names)) != len(names):
        raise AblationInputError(f'two configs share a file name (their work dirs would collide): {names}')
    out = out or osp.join(work_dir, 'ablation.md')
    csv_path = osp.splitext(out)[0] + '.csv'
    os.makedirs(work_dir, exist_ok=True)
    data_root, data_text = (None, 'each config\'s own') if data is None else prepare_data(data, work_dir)
    m = machine_info('cuda' if _cuda() else 'cpu')
    settings = dict(iters=iters, seed=seed, data=data_text, img_size=img_size,
                    machine=f'{m["cpu"]}, {m["usable_cores"]} cores, torch {m["torch"]}, '
                            f'{m.get("device_name") or m["device"]}')
    run_settings = dict(iters=iters, infer_iters=infer_iters, data_root=data_root, img_size=img_size, seed=seed,
                        random_init=random_init, workers=workers, batch_size=batch_size, cfg_options=cfg_options)
    rows: List[AblationRow] = []
    for file, name in zip(files, names):
        config_dir = osp.join(work_dir, name)
        fingerprint = row_fingerprint(file, run_settings)
        row = finished_row(config_dir, fingerprint)
        if row is not None:
            log(f'ablation: {file} ({len(rows) + 1}/{len(files)}) finished before with this config and these '
                f'settings: its row is kept ({osp.join(config_dir, FINISHED_ROW)})')
        else:
            log(f'ablation: {file} ({len(rows) + 1}/{len(files)})')
            row = run_one(file, config_dir, iters, infer_iters=infer_iters, data_root=data_root,
                          img_size=img_size, seed=seed, random_init=random_init, workers=workers,
                          batch_size=batch_size, cfg_options=cfg_options)
            if row.error:
                log(f'ablation: {file} failed: {row.error}')
            else:
                dump_json_atomic(dict(fingerprint=fingerprint, row=asdict(row)), osp.join(config_dir, FINISHED_ROW))
        rows.append(row)
        write_table(rows, out, csv_path, settings)
    return rows, out, csv_path


#: Written into a config's folder once its row is complete (no error); a rerun keeps the row instead of running.
FINISHED_ROW = 'ablation_row.json'


def row_fingerprint(config: str, settings: Dict[str, Any]) -> str:
    """sha256 of the resolved config (its bases included) and the run's settings: a finished row is reused only
    when both are the same, so an edited config or another ``--iters`` / ``--data`` / seed runs again."""
    resolved = load_any_config(config).to_dict()
    blob = json.dumps(dict(config=resolved, settings=settings), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def finished_row(config_dir: str, fingerprint: str) -> Optional[AblationRow]:
    """The row a previous run finished in ``config_dir`` with the same ``fingerprint``, or None (never run, failed,
    killed before its end, or run with another config or settings; an unreadable marker counts as none)."""
    try:
        with open(osp.join(config_dir, FINISHED_ROW)) as f:
            done = json.load(f)
        if done.get('fingerprint') != fingerprint:
            return None
        return AblationRow(**done['row'])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _cuda() -> bool:
    return torch.cuda.is_available()
