"""Atomic file writers used by every converter and tool: a reader sees the old file or the complete new one.

Each writer goes to a temporary file in the destination folder, then ``os.replace``-s it over the destination; on
any error the temporary file is removed and the destination is left as it was.
"""
import contextlib
import csv
import json
import os
import os.path as osp
import tempfile
from typing import Iterable, Iterator, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension) that replaces ``path`` when the block succeeds.

    Missing parent folders are created. The extension is kept so that writers which infer the format from the name
    (``matplotlib.Figure.savefig``, ``cv2.imwrite``) write the right format. The file gets the usual permissions
    (``0o666`` less the umask), not ``mkstemp``'s owner-only ``0o600``.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = osp.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + osp.basename(path) + '.', suffix='.tmp' + ext)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def dump_json_atomic(obj, path: PathLike, indent: Optional[int] = None) -> None:
    """Write ``obj`` as json to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(obj, f, indent=indent)


def write_csv_atomic(path: PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a csv with one ``header`` line, then ``rows`` (sequences in header order), atomically."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
