"""Checkpoint loading that keeps ``torch.load(weights_only=True)`` under torch >= 2.6.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``. Since torch 2.6 that defaults to ``True`` and its own
checkpoints no longer load (``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``). Turning
``weights_only`` off would unpickle arbitrary objects, i.e. run arbitrary code from a downloaded file. Instead this
module allow-lists the few mmengine/numpy types that mmengine/mmdet checkpoints hold, and replaces mmengine's
loader for local files with one that refuses anything else with :class:`UnsafeCheckpointError`.

Importing ``mmdet_custom`` applies it, so ``load_from``, ``--resume``, ``tools/test.py CKPT`` and backbone
``init_cfg=dict(type='Pretrained', checkpoint=<local file>)`` all go through it.
"""
import os.path as osp
import pickle
from typing import Any, List, Optional

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


class UnsafeCheckpointError(pickle.UnpicklingError):
    """Raised when a checkpoint holds a pickled object outside :func:`allowed_globals`."""


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


torch.serialization.add_safe_globals(
    allowed_globals() + [(_history_buffer_getattr, 'builtins.getattr'), (_history_buffer_getattr, '__builtin__.getattr')])


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
            file and the refused global; the object is never constructed.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename}: it holds a pickled object that is not on the allow-list of '
            f'mmdet_custom.checkpoint.allowed_globals(), and loading it could run arbitrary code. '
            f'torch said: {str(err).splitlines()[0]}') from None


# Local paths have the empty prefix in mmengine's scheme table; replace mmengine's loader for them.
CheckpointLoader.register_scheme(prefixes='', loader=load_checkpoint_file, force=True)
