"""Config loading and ``--cfg-options``: the one implementation (``apis.runner``, the analysis tools, hpo use it).

mmengine's ``Config.merge_from_dict`` adds any key it is given, so a typo in ``--cfg-options`` is silently ignored;
:func:`read_config` refuses keys the config does not have (``+key=value`` adds one on purpose).

Private config names: a top-level name starting with one underscore (``_r50_cbam_plugins``) is a part that config
files hand to each other through ``_base_`` (the fragments in ``configs/_base_/models``, ``recipes``, ``anchors``).
mmengine merges every base name into the child, so :func:`read_config` drops these names from the resolved config:
the config a run dumps and the one the tools see hold only what something reads. (mmengine drops ``__names`` itself,
but at each file, so a child could not read them.) mmengine's own ``_base_``, ``_scope_``, ``_delete_`` and
``_deprecation_`` are kept.
"""
import ast
import contextlib
import difflib
import os.path as osp
import re
import uuid
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from mmengine.config import Config

from mmdet_custom.utils.errors import UserError

__all__ = [
    'ANNOTATION_LOADERS', 'ConfigKeyError', 'DuplicateBaseKeyError', 'check_cfg_options', 'drop_private_names',
    'duplicate_base_key_error', 'is_annotation_loader', 'isolate_run', 'isolate_visualizer', 'read_config',
    'STAGE_CFG_KEYS', 'check_stage_cfg_keys', 'config_build_errors'
]

MMENGINE_RESERVED = ('_base_', '_scope_', '_delete_', '_deprecation_')


class ConfigKeyError(UserError, KeyError):
    """A ``--cfg-options`` key or a hook setting that the config / hook does not have."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ''


class DuplicateBaseKeyError(UserError, KeyError):
    """Two bases of one config define the same top-level name (mmengine's "Duplicate key is not allowed among
    bases")."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def _base_paths(path: str) -> List[str]:
    """The resolved files of a config's ``_base_`` list (``mmdet::`` paths through mmengine's own resolution)."""
    return [osp.normpath(Config._get_cfg_path(base, path)[0]) for base in Config._get_base_files(path)]


def _own_names(path: str) -> set:
    """The top-level names a Python config file assigns itself (not those it inherits)."""
    if not path.endswith('.py'):
        return set()
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def _origin(path: str, key: str) -> str:
    """The file that assigns ``key`` for ``path``: the file itself, or (recursively) the base it inherits it from."""
    if key in _own_names(path):
        return path
    for base in _base_paths(path):
        if key in Config._file2dict(base)[0]:
            return _origin(base, key)
    return path


def _find_duplicate_base_key(path: str) -> Optional[Tuple[str, str, str, str]]:
    """Where mmengine's duplicate-key error comes from: ``(config, key, base 1, base 2)``, the config whose
    ``_base_`` list holds two files (``base 1``, ``base 2``) that both define ``key``; None if not found."""
    seen: Dict[str, str] = {}
    for base in _base_paths(path):
        try:
            names = Config._file2dict(base)[0].keys()
        except KeyError as e:
            if 'Duplicate key' in str(e):
                return _find_duplicate_base_key(base)
            raise
        for name in names:
            if name in seen:
                return path, name, seen[name], base
            seen[name] = base
    return None


def duplicate_base_key_error(config: str, error: KeyError) -> UserError:
    """mmengine's raw ``KeyError: Duplicate key is not allowed among bases`` as one line that names the config
    whose ``_base_`` list is at fault, the key and the two files that define it (each through which base)."""
    try:
        found = _find_duplicate_base_key(config)
    except Exception:  # the message must not hide the original error
        found = None
    if found is None:
        return DuplicateBaseKeyError(f'config {config}: {error.args[0] if error.args else error}')
    where, key, base_a, base_b = found

    def described(base: str) -> str:
        origin = _origin(base, key)
        return origin if osp.samefile(origin, base) else f'{origin} (inherited through {base})'

    whose = 'its _base_ list holds' if osp.samefile(where, config) else f'its base {where} lists'
    return DuplicateBaseKeyError(
        f'config {config}: {whose} two files that both define {key}: {described(base_a)} and '
        f'{described(base_b)}; mmengine refuses a name that two bases define. Inherit only one of them, or give one '
        f'of them another name')


def _flat_keys(node: Any, prefix: str = '') -> Iterator[str]:
    """Every dotted key of a config tree (list items by index, as ``merge_from_dict`` addresses them)."""
    if isinstance(node, Mapping):
        items = node.items()
    elif isinstance(node, (list, tuple)):
        items = enumerate(node)
    else:
        return
    for k, v in items:
        key = f'{prefix}{k}'
        yield key
        yield from _flat_keys(v, key + '.')


def _missing_part(tree: Mapping, key: str) -> Optional[str]:
    """The leading part of ``key`` that does not exist in ``tree`` (None when the whole key exists)."""
    node: Any = tree
    parts = key.split('.')
    for i, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return '.'.join(parts[:i + 1])
    return None


def check_cfg_options(cfg: Config, options: Optional[Mapping[str, Any]], source: str = '') -> Dict[str, Any]:
    """Refuse ``--cfg-options`` keys that ``cfg`` does not have; return the options ready for ``merge_from_dict``.

    mmengine's ``merge_from_dict`` adds any key it is given, so a typo (``trian_cfg.max_iters=2``) is silently
    ignored by everything that reads the config. Here every dotted key must exist (list items by index, e.g.
    ``train_dataloader.dataset.pipeline.2.scale``), except keys written with a leading ``+``
    (``+model.backbone.with_cp=True``), which are added on purpose (the ``+`` is removed).

    Args:
        cfg (Config): the config the options are merged into.
        options (Mapping[str, Any], optional): ``--cfg-options`` as parsed by mmengine's ``DictAction``.
        source (str): the config file, for the message.

    Returns:
        dict: the options with ``+`` prefixes removed.

    Raises:
        ConfigKeyError: naming each unknown key, the part of it that is missing and the closest existing keys.
    """
    if not options:
        return {}
    tree = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    clean, problems, bad_keys, flat = {}, [], [], None
    for key, value in options.items():
        if key.startswith('+'):
            clean[key[1:]] = value
            continue
        clean[key] = value
        missing = _missing_part(tree, key)
        if missing is None:
            continue
        bad_keys.append(key)
        if flat is None:
            flat = list(_flat_keys(tree))
        close = difflib.get_close_matches(key, flat, n=1, cutoff=0.6)
        what = f'has no key {missing}' + ('' if missing == key else f' (in {key})')
        problems.append(what + (f', did you mean {close[0]}?' if close else ''))
    if problems:
        where = f'the config {source}' if source else 'the config'
        listed = '; '.join(problems)
        raise ConfigKeyError(f'--cfg-options: {where} {listed}{"" if listed.endswith("?") else "."} To add a key '
                             f'on purpose, write it with a leading +, e.g. --cfg-options +{bad_keys[0]}=...')
    return clean


def drop_private_names(cfg: Config) -> Config:
    """Remove the top-level private names (``_name``, see the module docstring) from ``cfg`` in place; return it.

    >>> cfg = Config(dict(_part=dict(type='X'), model=dict(type='X')))
    >>> sorted(drop_private_names(cfg).keys())
    ['model']
    """
    for key in list(cfg.keys()):
        if key.startswith('_') and not key.startswith('__') and key not in MMENGINE_RESERVED:
            cfg.pop(key)
    return cfg


#: The keys mmdet 3.3's two-stage detectors read from ``model.train_cfg`` / ``model.test_cfg`` (``RPNHead``,
#: ``StandardRoIHead``, ``BBoxHead``, ``FCNMaskHead``); they read these by attribute or ``.get`` and ignore any other.
STAGE_CFG_KEYS = {
    ('test_cfg', 'rpn'): ('nms_pre', 'max_per_img', 'nms', 'min_bbox_size'),
    ('test_cfg', 'rcnn'): ('score_thr', 'nms', 'max_per_img', 'mask_thr_binary'),
    ('train_cfg', 'rpn'): ('assigner', 'sampler', 'allowed_border', 'pos_weight', 'debug'),
    ('train_cfg', 'rpn_proposal'): ('nms_pre', 'max_per_img', 'nms', 'min_bbox_size'),
    ('train_cfg', 'rcnn'): ('assigner', 'sampler', 'mask_size', 'pos_weight', 'debug'),
}


def check_stage_cfg_keys(cfg: Config, source: str = '') -> None:
    """Refuse a key of ``model.train_cfg`` / ``model.test_cfg`` (stages ``rpn``, ``rpn_proposal``, ``rcnn``, the
    latter also a list as in Cascade R-CNN) that mmdet does not read: a misspelt ``max_per_imgs`` would be ignored and
    the default used without a word.

    Raises:
        ConfigKeyError: naming the config file, the key's path and the closest known key.
    """
    model = cfg.get('model') if hasattr(cfg, 'get') else None
    if not isinstance(model, Mapping):
        return
    source = source or getattr(cfg, 'filename', None) or 'the config'
    for (part, stage), known in STAGE_CFG_KEYS.items():
        node = (model.get(part) or {}).get(stage) if isinstance(model.get(part), Mapping) else None
        nodes = node if isinstance(node, (list, tuple)) else [node]
        for i, item in enumerate(nodes):
            if not isinstance(item, Mapping):
                continue
            for key in item:
                if key in known or key in MMENGINE_RESERVED:
                    continue
                where = f'model.{part}.{stage}' + (f'[{i}]' if isinstance(node, (list, tuple)) else '')
                close = difflib.get_close_matches(key, known, n=1)
                hint = f' Did you mean {close[0]!r}?' if close else ''
                raise ConfigKeyError(f'{source}: {where}.{key} is not a setting mmdet reads (it would be ignored; '
                                     f'known: {", ".join(known)}).{hint}')


_UNEXPECTED_ARG = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")


def _paths_of_key(node: Any, key: str, prefix: str = '') -> Iterator[str]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            path = f'{prefix}.{k}' if prefix else str(k)
            if k == key:
                yield path
            yield from _paths_of_key(v, key, path)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _paths_of_key(v, key, f'{prefix}[{i}]')


@contextlib.contextmanager
def config_build_errors(cfg: Config, source: str = '') -> Iterator[None]:
    """Turn a registry build that fails on an unexpected argument (mmengine: a bare ``TypeError: X.__init__() got an
    unexpected keyword argument 'k'``) into one :class:`ConfigKeyError` naming the config file, the class and where
    ``k`` is set in the config. Other errors, and a ``k`` the config does not hold, pass unchanged.
    """
    try:
        yield
    except TypeError as e:
        match = _UNEXPECTED_ARG.search(str(e))
        paths = list(_paths_of_key(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg, match.group(2))) \
            if match else []
        if not paths:
            raise
        source = source or getattr(cfg, 'filename', None) or 'the config'
        more = f' (and {len(paths) - 3} more places)' if len(paths) > 3 else ''
        raise ConfigKeyError(f'{source}: {", ".join(paths[:3])}{more}: {match.group(1)} takes no argument '
                             f'{match.group(2)!r} (misspelt?)') from e


def read_config(config: Union[str, Config], cfg_options: Optional[Mapping[str, Any]] = None) -> Config:
    """Read ``config`` (path, or a :class:`Config` that is copied) and merge the checked ``cfg_options``.

    Private names (``_name``) are dropped from the result (:func:`drop_private_names`).

    Raises:
        FileNotFoundError: the config file does not exist.
        UserError: the config file has a syntax error.
        ConfigKeyError: see :func:`check_cfg_options`.
        DuplicateBaseKeyError: two files of one ``_base_`` list define the same name (mmengine's "Duplicate key
            is not allowed among bases"), naming the config, the key and both files.
        ConfigKeyError: a ``model.train_cfg`` / ``test_cfg`` key mmdet does not read (:func:`check_stage_cfg_keys`).
    """
    if isinstance(config, str):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file not found: {config}')
        try:
            cfg = Config.fromfile(config)
        except SyntaxError as e:
            raise UserError(f'config {config}: {e}') from e
        except KeyError as e:
            if 'Duplicate key is not allowed among bases' not in str(e):
                raise
            raise duplicate_base_key_error(config, e) from e
    else:
        cfg = config.copy()
    drop_private_names(cfg)
    if cfg_options:
        source = config if isinstance(config, str) else (getattr(cfg, 'filename', None) or '')
        cfg.merge_from_dict(check_cfg_options(cfg, cfg_options, source))
    check_stage_cfg_keys(cfg, config if isinstance(config, str) else '')
    return cfg


def isolate_visualizer(cfg: Config) -> None:
    """Give the run's visualizer a name of its own (``<name>_<8 hex digits>``).

    mmengine keeps one Visualizer per name in a process: a second run (ablations, the LR range test, notebooks,
    tests) would reuse the first one's and log its ``scalars.json`` into the first run's work dir, or fail when that
    folder was temporary and is gone.
    """
    if cfg.get('visualizer') is not None:
        cfg.visualizer.name = f"{cfg.visualizer.get('name', 'visualizer')}_{uuid.uuid4().hex[:8]}"


def isolate_run(cfg: Config) -> None:
    """Give the run's mmengine instances names of their own: the visualizer's (:func:`isolate_visualizer`) and the
    experiment's, ``<experiment_name or config file stem>_<8 hex digits>`` (mmengine then appends the timestamp).

    mmengine names a run ``<config file stem>_<timestamp to the second>`` and keys its logger, message hub and
    default scope by that name, reusing an instance of the same name: a second run in the same process within the
    same second (train then test in a script, an ablation, tests) got the first run's logger, so its log went to
    the first run's work dir (or failed when that folder was temporary and gone) and its own work dir had none.
    """
    isolate_visualizer(cfg)
    base = cfg.get('experiment_name') or (osp.splitext(osp.basename(cfg.filename))[0] if cfg.filename else 'run')
    cfg.experiment_name = f'{base}_{uuid.uuid4().hex[:8]}'


#: Pipeline steps that load ground truth: mmdet's, and the compact one that keeps polygons
#: (``mmdet_custom.datasets.transforms.LoadCompactAnnotations``).
ANNOTATION_LOADERS = ('LoadAnnotations', 'LoadCompactAnnotations')


def is_annotation_loader(step: Mapping) -> bool:
    """Whether a pipeline step config (``dict(type=...)``, type a name, scoped name or class) loads annotations."""
    kind = step.get('type', '')
    name = kind.__name__ if isinstance(kind, type) else str(kind)
    return name.split('.')[-1] in ANNOTATION_LOADERS
