"""Atomic writers shared by the analysis tools: a reader sees the old file or the complete new one, never half.

Each writer goes to a temporary file in the destination folder, then ``os.replace``-s it over the destination;
on any error the temporary file is removed and the destination is left as it was.
"""
import contextlib
import csv
import json
import os
import os.path as osp
import tempfile
from typing import Iterable, Iterator, Sequence

PathLike = os.PathLike


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension) that replaces ``path`` when the block succeeds.

    Missing parent folders are created. The extension is kept so that writers which infer the format from the
    name (``matplotlib.Figure.savefig``, ``cv2.imwrite``) write the right format.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = osp.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + osp.basename(path) + '.', suffix='.tmp' + ext)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj, indent: int = 2) -> None:
    """Write ``obj`` as json to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(obj, f, indent=indent)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a csv with one ``header`` line, then ``rows`` (sequences in header order), atomically."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def new_figure(nrows: int = 1, ncols: int = 1, figsize=(8, 5)):
    """A matplotlib ``Figure`` and its axes built without pyplot (no GUI backend, no global figure state)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, layout='constrained')
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig, path: str, dpi: int = 120) -> None:
    """Save a matplotlib figure to ``path`` atomically (format from the extension)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


def save_image(path: str, image_rgb) -> None:
    """Save an ``(H, W, 3)`` uint8 RGB array to ``path`` (PNG, JPEG... from the extension) atomically.

    Raises:
        OSError: when OpenCV cannot encode the image to that format.
    """
    import cv2
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, image_rgb[..., ::-1]):
            raise OSError(f'could not write image {path}')
