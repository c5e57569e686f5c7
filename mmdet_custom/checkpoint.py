"""Checkpoints that load safely, save atomically, match the model they are loaded into, and resume from a moved
work dir.

Loading (torch >= 2.6). mmengine 0.10.7 calls ``torch.load`` without ``weights_only``. Since torch 2.6 that
defaults to ``True`` and its own checkpoints no longer load (``Unsupported global:
mmengine.logging.history_buffer.HistoryBuffer``). Turning ``weights_only`` off would unpickle arbitrary objects, i.e.
run arbitrary code from a downloaded file. Instead this module allow-lists the few mmengine/numpy types that
mmengine/mmdet checkpoints hold, and replaces mmengine's loader for local files with one that refuses anything else
with :class:`UnsafeCheckpointError`.

Saving. mmengine's ``save_checkpoint`` (used by ``Runner.save_checkpoint`` and so by ``CheckpointHook``) opens
``iter_N.pth`` and writes into it: a full disk or a kill leaves a truncated file under the final name. Here a local
checkpoint is written to a temporary file in the same folder (``.iter_N.pth.tmp-<pid>-<random>``), flushed to disk
and renamed over the final name (``os.replace``, atomic on POSIX). ``CheckpointHook`` writes ``last_checkpoint``
only after the save returned, so a failed save leaves both the old checkpoints and ``last_checkpoint`` unchanged.
Temporary files of killed runs (their pid is gone) are removed at the next save into the same folder. The checkpoints
beyond ``max_keep_ckpts`` are removed after the new one is saved, not before (mmengine's order), so a failed save
never leaves the work dir without its last checkpoint.

Importing ``mmdet_custom.register`` (every config's ``custom_imports``) applies both, so ``load_from``,
``--resume``, ``tools/test.py CKPT``, backbone ``init_cfg=dict(type='Pretrained', checkpoint=<local file>)`` and
every ``CheckpointHook`` go through them.
"""
import errno
import glob
import os
import os.path as osp
import pickle
import re
import struct
import tempfile
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

import mmengine.runner
import mmengine.runner.checkpoint as mmengine_checkpoint
import mmengine.runner.runner as mmengine_runner
import numpy as np
import torch
from mmengine.hooks import CheckpointHook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import pid_alive as _pid_alive

__all__ = [
    'UnsafeCheckpointError', 'CorruptCheckpointError', 'CheckpointMismatchError', 'ResumeError', 'allowed_globals',
    'load_checkpoint_file',
    'save_checkpoint_atomic', 'state_dict_mismatch', 'check_checkpoint_matches', 'find_resume_checkpoint',
    'find_newest_checkpoint', 'check_resume_checkpoint'
]


class UnsafeCheckpointError(UserError, pickle.UnpicklingError):
    """Raised when a checkpoint holds a pickled object outside :func:`allowed_globals`; the message names it."""


class CheckpointMismatchError(UserError, ValueError):
    """Raised when a checkpoint's state dict does not fit the model it is loaded into (missing, unexpected or
    shape-mismatched keys), e.g. a checkpoint of another backbone, anchor count or class count."""


class CorruptCheckpointError(UserError, ValueError):
    """Raised when a checkpoint file cannot be read: truncated (an interrupted copy or download) or corrupt."""


class ResumeError(UserError, FileNotFoundError):
    """Raised by ``--resume`` when the work dir holds no checkpoint to resume from."""


# ----------------------------------------------------------------------------------------------------------------
# Loading with weights_only=True
# ----------------------------------------------------------------------------------------------------------------
def allowed_globals() -> List[Any]:
    """Types, beyond torch's own, that a checkpoint written by mmengine's ``CheckpointHook`` may contain.

    ``HistoryBuffer`` holds the logged scalars of the message hub; numpy arrays, dtypes and scalars appear in its
    buffers and in the runtime info (e.g. the best score). Nothing here can execute code when unpickled.
    """
    np_core = getattr(np, '_core', None) or np.core
    allowed = [HistoryBuffer, np.ndarray, np.dtype, np_core.multiarray._reconstruct, np_core.multiarray.scalar]
    # numpy >= 1.25 pickles dtypes through their classes, e.g. numpy.dtypes.Float64DType
    allowed += [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16,
                                            np.int8, np.uint8, np.bool_)]
    return allowed


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """A ``getattr`` that resolves only the statistics methods of :class:`HistoryBuffer`.

    ``HistoryBuffer.__getstate__`` stores its statistics methods (``min``, ``max``, ``mean``, ``current``, ...), which
    pickle writes as ``getattr(HistoryBuffer, 'min')``. Allowing the real ``getattr`` would let a file reach any
    attribute of any allowed object, so the pickle global ``builtins.getattr`` is mapped to this function instead.
    """
    method = getattr(obj, name, None) if obj is HistoryBuffer and not name.startswith('_') else None
    if method is None or not callable(method):
        raise pickle.UnpicklingError(f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint')
    return method


def _empty_bytes(*args: Any) -> bytes:
    """The pickle global ``builtins.bytes``, limited to what pickle protocol 2 uses it for: ``bytes()`` = ``b''``.

    Protocol 2 (``torch.save``'s default) writes an empty ``bytes`` object as the call ``bytes()``; numpy stores an
    empty array's data that way, so a checkpoint whose ``HistoryBuffer`` is still empty (e.g. saved before the first
    logged value, or with validation keys never filled) needs it. Non-empty bytes are written as
    ``_codecs.encode(str, 'latin1')``, which torch allows itself. Any argument (``bytes(10**12)`` would allocate a
    terabyte) is refused.
    """
    if args:
        raise pickle.UnpicklingError(f'bytes{args!r} is not allowed in a checkpoint (only bytes())')
    return b''


torch.serialization.add_safe_globals(allowed_globals() + [
    (_history_buffer_getattr, 'builtins.getattr'), (_history_buffer_getattr, '__builtin__.getattr'),
    (_empty_bytes, 'builtins.bytes'), (_empty_bytes, '__builtin__.bytes')])

_GLOBAL_RE = re.compile(r'Unsupported global: GLOBAL (\S+)')


def _refusal_reason(err: Exception) -> str:
    """What torch's weights-only unpickler refused, without its advice to set ``weights_only=False``."""
    text = str(err)
    match = _GLOBAL_RE.search(text)
    if match:
        return f'the pickled global {match.group(1)}'
    # torch prefixes the unpickler's own reason with "WeightsUnpickler error: " after its general advice
    reason = text.split('WeightsUnpickler error:', 1)[-1].strip().splitlines()
    reason = reason[0] if reason else type(err).__name__
    return f'a pickled object that is not allowed ({reason.split(". ")[0].rstrip(".")})'


def load_checkpoint_file(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a local checkpoint with ``weights_only=True`` and the mmengine/numpy allow-list.

    Args:
        filename (str): path of a ``.pth`` file (``~`` is expanded).
        map_location: as for :func:`torch.load`.

    Returns:
        The unpickled object, usually a dict with ``state_dict``, ``meta`` and optimizer/scheduler states.

    Raises:
        FileNotFoundError: when ``filename`` is not a file.
        UnsafeCheckpointError: when the file holds a pickled object outside the allow-list. The message names the
            file and the refused class or function; the object is never constructed.
        CorruptCheckpointError: when the file is truncated or corrupt (named with its size).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint not found: {filename}')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'truncated' in str(err) or 'EOF' in str(err):
            raise CorruptCheckpointError(_corrupt_message(filename, err)) from None
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename}: it holds {_refusal_reason(err)}, which is not on the '
            f'allow-list of mmdet_custom.checkpoint.allowed_globals(); unpickling it could run arbitrary code. '
            f'Use checkpoints written by mmengine/mmdet or plain torch state dicts.') from None
    except (EOFError, struct.error, IndexError, RuntimeError) as err:
        # torch reports a truncated or damaged file as RuntimeError (zip reader, "unexpected EOF"), EOFError (empty
        # file) or struct.error / IndexError (a legacy pickle cut short)
        raise CorruptCheckpointError(_corrupt_message(filename, err)) from None


def _corrupt_message(filename: str, err: Exception) -> str:
    reason = (str(err).split('. ')[0] or type(err).__name__).strip()
    return (f'cannot read checkpoint {filename} ({osp.getsize(filename)} bytes): it is truncated or corrupt '
            f'({reason}); copy or download it again')


# Local paths have the empty prefix in mmengine's scheme table; replace mmengine's loader for them.
CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file, force=True)


# ----------------------------------------------------------------------------------------------------------------
# Atomic saving
# ----------------------------------------------------------------------------------------------------------------
_TMP_INFIX = '.tmp-'


def remove_stale_temp_files(folder: str) -> List[str]:
    """Remove the temporary checkpoint files (``.<name>.tmp-<pid>-*``) of processes that no longer run.

    Returns:
        list[str]: the removed paths.
    """
    removed = []
    for path in glob.glob(osp.join(glob.escape(folder), '.*' + _TMP_INFIX + '*')):
        pid = osp.basename(path).rsplit(_TMP_INFIX, 1)[1].split('-', 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.remove(path)
                removed.append(path)
            except OSError:
                pass
    return removed


_mmengine_save_checkpoint = mmengine_checkpoint.save_checkpoint


def save_checkpoint_atomic(checkpoint: dict,
                           filename: str,
                           file_client_args: Optional[dict] = None,
                           backend_args: Optional[dict] = None) -> None:
    """mmengine's ``save_checkpoint``, but a local file appears whole or not at all.

    The checkpoint is written with :func:`torch.save` to ``.<name>.tmp-<pid>-<random>`` in the destination folder,
    flushed and fsync-ed, then renamed over ``filename``. Remote destinations (``s3://``, ``pavi://``, a
    ``backend_args`` backend) go to mmengine's own function unchanged.

    Args:
        checkpoint (dict): what to save (``meta``, ``state_dict``, optimizer, ...).
        filename (str): destination path.
        file_client_args, backend_args: as for :func:`mmengine.runner.save_checkpoint`.

    Raises:
        OSError: the write failed (e.g. disk full, errno 28), naming ``filename``; the destination and any older
            checkpoint are unchanged and the temporary file is removed.
    """
    filename = os.fspath(filename)
    if file_client_args is not None or backend_args is not None or '://' in filename or filename.startswith('pavi:'):
        return _mmengine_save_checkpoint(checkpoint, filename, file_client_args=file_client_args,
                                         backend_args=backend_args)
    folder = osp.dirname(osp.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temp_files(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(filename)}{_TMP_INFIX}{os.getpid()}-')
    try:
        try:
            with os.fdopen(fd, 'wb') as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except RuntimeError as e:  # torch's zip writer reports a failed write (e.g. a full disk) without errno
            if 'PytorchStreamWriter' not in str(e):
                raise
            stat = os.statvfs(folder)
            code = errno.ENOSPC if stat.f_bavail * stat.f_frsize < 2**20 else errno.EIO
            raise OSError(code, os.strerror(code), filename) from e
        except OSError as e:
            if e.filename is None and e.errno is not None:
                raise OSError(e.errno, e.strerror or str(e), filename) from e
            raise
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0o600; a checkpoint gets the usual permissions
        os.replace(tmp, filename)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


# Runner.save_checkpoint (and so CheckpointHook) calls the name imported into mmengine.runner.runner.
mmengine_checkpoint.save_checkpoint = save_checkpoint_atomic
mmengine_runner.save_checkpoint = save_checkpoint_atomic
mmengine.runner.save_checkpoint = save_checkpoint_atomic

_mmengine_save_checkpoint_with_step = CheckpointHook._save_checkpoint_with_step


def _save_checkpoint_with_step(self: CheckpointHook, runner: Any, step: int, meta: dict) -> None:
    """``CheckpointHook._save_checkpoint_with_step`` that removes the checkpoints beyond ``max_keep_ckpts`` only
    after the new one was saved.

    mmengine removes the oldest kept checkpoint *before* saving the new one: with ``max_keep_ckpts=1`` a failed save
    (disk full, kill) would leave no checkpoint at all and a ``last_checkpoint`` naming a removed file. Here the
    removals are collected during the save and done once it returned.
    """
    backend = getattr(self, 'file_backend', None)
    if backend is None or not hasattr(backend, 'remove'):
        return _mmengine_save_checkpoint_with_step(self, runner, step, meta)
    deferred: List[str] = []
    backend.remove = deferred.append  # an instance attribute shadows the method for this call only
    try:
        _mmengine_save_checkpoint_with_step(self, runner, step, meta)
    finally:
        del backend.remove
    for path in deferred:
        backend.remove(path)


CheckpointHook._save_checkpoint_with_step = _save_checkpoint_with_step


# ----------------------------------------------------------------------------------------------------------------
# Does a checkpoint fit the model?
# ----------------------------------------------------------------------------------------------------------------
def _state_dict_of(checkpoint: Mapping) -> Mapping[str, Any]:
    """The weights of a loaded checkpoint, as mmengine's ``_load_checkpoint_to_model`` reads them."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    return OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in state_dict.items())


def _weights_mapping(loaded: Any, checkpoint: str) -> Mapping:
    """``loaded`` if it is a dict of weights (or holds one as ``state_dict``), else :class:`CheckpointMismatchError`."""
    weights = loaded.get('state_dict', loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(weights, Mapping) or not all(isinstance(k, str) for k in weights):
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint} holds no state dict (a {type(loaded).__name__}'
            f'{"" if not isinstance(loaded, Mapping) else " without tensors by name"}); pass a checkpoint written by '
            f'mmengine/mmdet or a torch state dict')
    return loaded


def state_dict_mismatch(model: torch.nn.Module,
                        state_dict: Mapping[str, Any]) -> Tuple[List[str], List[str], List[Tuple[str, tuple, tuple]]]:
    """Compare a state dict with a model's own.

    Args:
        model (nn.Module): the model (a DDP/mmengine wrapper is unwrapped through ``.module``).
        state_dict (Mapping[str, Tensor]): the weights to load (``module.`` prefixes already stripped).

    Returns:
        tuple: ``(missing, unexpected, mismatched)``: model keys absent from ``state_dict``, ``state_dict`` keys the
        model does not have, and ``(key, checkpoint shape, model shape)`` of the keys whose shapes differ.
    """
    own = getattr(model, 'module', model).state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = []
    for k, v in own.items():
        theirs = state_dict.get(k)
        if theirs is not None and hasattr(theirs, 'shape') and tuple(theirs.shape) != tuple(v.shape):
            mismatched.append((k, tuple(theirs.shape), tuple(v.shape)))
    return missing, unexpected, mismatched


def check_checkpoint_matches(model: torch.nn.Module, checkpoint: str, strict: bool = True,
                             logger: Any = None, num_keys: int = 3,
                             loaded: Optional[Mapping] = None) -> Dict[str, list]:
    """Refuse (or, with ``strict=False``, warn about) a checkpoint that does not fit ``model``.

    mmengine's ``load_checkpoint`` loads with ``strict=False``: mismatched layers are only logged and stay random, so
    a checkpoint of another model (other anchor count, backbone or class count) would be evaluated as if it fitted.

    Args:
        model (nn.Module): the model built from the config.
        checkpoint (str): path of the checkpoint (read with :func:`load_checkpoint_file`).
        strict (bool): raise on any difference. Defaults to True.
        logger: where the warning goes with ``strict=False`` (default: :mod:`warnings`).
        num_keys (int): keys named per kind of difference.
        loaded (Mapping, optional): the checkpoint already read from ``checkpoint`` (it is then not read again).

    Returns:
        dict: ``missing``, ``unexpected`` and ``mismatched`` keys (empty lists when the checkpoint fits).

    Raises:
        CheckpointMismatchError: with ``strict``, when a key is missing, unexpected or of another shape; the message
            names the checkpoint, the counts and the first keys (with both shapes).
        UnsafeCheckpointError, FileNotFoundError: from :func:`load_checkpoint_file`.
    """
    if loaded is None:
        loaded = load_checkpoint_file(checkpoint, map_location='cpu')
    missing, unexpected, mismatched = state_dict_mismatch(model, _state_dict_of(_weights_mapping(loaded, checkpoint)))
    result = dict(missing=missing, unexpected=unexpected, mismatched=mismatched)
    if not (missing or unexpected or mismatched):
        return result

    def first(keys):
        more = f', ... ({len(keys) - num_keys} more)' if len(keys) > num_keys else ''
        return ', '.join(keys[:num_keys]) + more

    parts = []
    if mismatched:
        parts.append(f'{len(mismatched)} of other shape: ' + first(
            [f'{k} (checkpoint {list(a)}, model {list(b)})' for k, a, b in mismatched]))
    if missing:
        parts.append(f'{len(missing)} missing from the checkpoint: {first(missing)}')
    if unexpected:
        parts.append(f'{len(unexpected)} not in the model: {first(unexpected)}')
    what = f'checkpoint {checkpoint} does not fit the config\'s model ({"; ".join(parts)})'
    if strict:
        raise CheckpointMismatchError(
            f'{what}. It was probably trained with another config (backbone, anchors or num_classes); test it with '
            f'its own config, or pass --strict false to run it anyway with these layers left at their '
            f'initialisation.')
    message = f'{what}; --strict false: these layers keep their initialisation, the metrics do not describe the ' \
              f'trained model'
    if logger is not None:
        logger.warning(message)
    else:
        import warnings
        warnings.warn(message, stacklevel=2)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Resuming
# ----------------------------------------------------------------------------------------------------------------
_TRAIN_CKPT_RE = re.compile(r'^(epoch|iter)_\d+\.pth$')


def find_newest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume auto`` continues from, or None when the work dir holds none (a fresh start).

    The newer (by modification time) of the one named in ``last_checkpoint`` and the newest ``epoch_N.pth`` /
    ``iter_N.pth`` in ``work_dir``: every such file is complete (saves are atomic), and one saved just before a kill
    may not be in ``last_checkpoint`` yet. ``best_*.pth`` and other names are not considered.

    Raises:
        ResumeError: ``last_checkpoint`` exists but names no file, and no ``epoch_N``/``iter_N`` file is left.
    """
    found = [p for p in glob.glob(osp.join(glob.escape(work_dir), '*.pth')) if _TRAIN_CKPT_RE.match(osp.basename(p))]
    recorded = None
    if osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        try:
            recorded = find_resume_checkpoint(work_dir)
        except ResumeError:
            if not found:
                raise
    candidates = found + ([recorded] if recorded else [])
    return max(candidates, key=osp.getmtime) if candidates else None


def find_resume_checkpoint(work_dir: str) -> str:
    """The checkpoint ``--resume`` (without a path) continues from: the one named in ``<work_dir>/last_checkpoint``.

    ``CheckpointHook`` writes the checkpoint's path as it was when saved (absolute or relative to the working
    directory of that run). When that path no longer exists but a file of the same name lies in ``work_dir`` (the
    work dir was moved or copied, or the run started from another directory), that file is used.

    Args:
        work_dir (str): the run's work dir.

    Returns:
        str: an existing checkpoint path.

    Raises:
        ResumeError: no ``last_checkpoint`` in ``work_dir``, an empty one, or one naming a file that exists neither
            where it says nor in ``work_dir``. mmengine would start from iteration 0 without a word.
    """
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        found = sorted(glob.glob(osp.join(glob.escape(work_dir), '*.pth')), key=osp.getmtime)
        hint = f' It holds {len(found)} .pth file(s), e.g. {found[-1]}: resume from one with --resume <checkpoint>.' \
            if found else ''
        raise ResumeError(f'--resume: no checkpoint to resume from in work dir {work_dir} (no last_checkpoint file).'
                          f'{hint} To start from iteration 0, train without --resume.')
    with open(marker) as f:
        recorded = f.read().strip()
    if not recorded:
        found = sorted(glob.glob(osp.join(glob.escape(work_dir), '*.pth')), key=osp.getmtime)
        newest = f' (the newest here is {found[-1]})' if found else ''
        raise ResumeError(f'--resume: {marker} is empty (its write was interrupted?); resume from a checkpoint with '
                          f'--resume <checkpoint>{newest}')
    if osp.isfile(recorded):
        return recorded
    moved = osp.join(work_dir, osp.basename(recorded))
    if osp.isfile(moved):
        return moved
    raise ResumeError(f'--resume: {marker} names {recorded}, which exists neither there nor in the work dir '
                      f'({moved}); resume from a checkpoint with --resume <checkpoint>')


def check_resume_checkpoint(model: torch.nn.Module, checkpoint: str) -> None:
    """Refuse a ``--resume`` checkpoint that mmengine's ``Runner.resume`` could not continue from correctly.

    mmengine reads ``meta.epoch``, ``meta.iter`` and ``message_hub`` without checking they exist (a weights-only file
    ends in ``KeyError: 'epoch'``) and loads the weights with ``strict=False`` but the optimizer state as it is: a
    checkpoint of another config dies inside ``SGD.step`` with a size mismatch after the first iteration.

    Args:
        model (nn.Module): the model built from the config being resumed.
        checkpoint (str): the checkpoint ``--resume`` names (or found in the work dir).

    Raises:
        ResumeError: the file is not a training checkpoint (no ``meta.epoch``/``meta.iter``/``message_hub``).
        CheckpointMismatchError: its weights do not fit the config's model (another config's checkpoint).
        UnsafeCheckpointError, FileNotFoundError: from :func:`load_checkpoint_file`.
    """
    loaded = load_checkpoint_file(checkpoint, map_location='cpu')
    meta = loaded.get('meta') if isinstance(loaded, Mapping) else None
    lacking = [name for name, present in (
        ('meta.epoch', isinstance(meta, Mapping) and 'epoch' in meta),
        ('meta.iter', isinstance(meta, Mapping) and 'iter' in meta),
        ('message_hub', isinstance(loaded, Mapping) and 'message_hub' in loaded)) if not present]
    if lacking:
        raise ResumeError(
            f'--resume: {checkpoint} is not a training checkpoint (no {", ".join(lacking)}; a weights-only file?): '
            f'it cannot continue a run. To start a new run from its weights, set load_from={checkpoint!r} '
            f'(--cfg-options load_from=...) without --resume.')
    try:
        check_checkpoint_matches(model, checkpoint, strict=True, loaded=loaded)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(
            f'--resume: {str(e).split(". It was probably")[0]}. A run resumes only with the config that wrote its '
            f'checkpoints.') from None
