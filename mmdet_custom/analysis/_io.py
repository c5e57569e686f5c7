"""Figure and image writers of the analysis tools, atomic like every writer of the project.

Built on :func:`mmdet_custom.utils.fileio.atomic_path`: the file is written to a temporary file in the destination
folder, then ``os.replace``-d over the destination, so a failure leaves the destination as it was.
"""
import numpy as np

from mmdet_custom.utils.fileio import atomic_path


def new_figure(nrows: int = 1, ncols: int = 1, figsize=(8, 5)):
    """A matplotlib ``Figure`` and its ``(nrows, ncols)`` axes, built without pyplot (no GUI backend, no global
    figure state)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, layout='constrained')
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig, path: str, dpi: int = 120) -> None:
    """Save a matplotlib figure to ``path`` atomically (format from the extension)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)


def save_image(path: str, image_rgb: np.ndarray) -> None:
    """Save an ``(H, W, 3)`` uint8 RGB array to ``path`` (PNG, JPEG... from the extension) atomically.

    Raises:
        OSError: when OpenCV cannot encode the image to that format.
    """
    import cv2
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, np.ascontiguousarray(image_rgb[..., ::-1])):
            raise OSError(f'could not write image {path}')
