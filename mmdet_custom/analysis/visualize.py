"""Ground truth next to prediction: one PNG per image, drawn with mmdet's ``DetLocalVisualizer``.

Each PNG is the original image twice, side by side (``(H, 2 W, 3)``): left the ground-truth boxes and masks, right
the predictions scoring at least ``show_score_thr``, coloured by class with the dataset's palette and labelled
``class: score`` (scores in percent).
"""
import os.path as osp
import uuid
from typing import List, Optional, Sequence, Union

import mmcv
import numpy as np
from mmengine.config import Config

from mmdet_custom.models.builder import build_model

from ._io import save_image
from .inference import build_dataset, load_cfg, predict, select_indices


def make_visualizer(dataset_meta: dict, line_width: float = 1.0, alpha: float = 0.5):
    """A fresh ``DetLocalVisualizer`` (unique instance name, no backends) with the dataset's classes and palette."""
    from mmdet.visualization import DetLocalVisualizer
    vis = DetLocalVisualizer(name=f'gt_vs_pred_{uuid.uuid4().hex}', line_width=line_width, alpha=alpha)
    vis.dataset_meta = dataset_meta
    return vis


def draw_gt_vs_pred(image: np.ndarray, data_sample, visualizer, show_score_thr: float = 0.3) -> np.ndarray:
    """Draw ``data_sample``'s ``gt_instances`` (left) and ``pred_instances`` (right, score >= threshold).

    Args:
        image (np.ndarray): ``(H, W, 3)`` RGB uint8 image in the pixels of the instances.
        data_sample (DetDataSample): with ``gt_instances`` and/or ``pred_instances``.
        visualizer (DetLocalVisualizer): see :func:`make_visualizer`.
        show_score_thr (float): predictions scoring below it are not drawn. Defaults to 0.3.

    Returns:
        np.ndarray: ``(H, 2 W, 3)`` RGB uint8 (``(H, W, 3)`` when the sample has only one of the two).
    """
    visualizer.add_datasample('gt_vs_pred', image, data_sample, draw_gt='gt_instances' in data_sample,
                              draw_pred='pred_instances' in data_sample, show=False, pred_score_thr=show_score_thr)
    return visualizer.get_image()


def save_gt_vs_pred(model, dataset, indices: Sequence[int], out_dir: str, show_score_thr: float = 0.3,
                    line_width: float = 1.0, alpha: float = 0.5) -> List[str]:
    """Predict ``dataset[i]`` for each index with ``model`` and save ``<out_dir>/<image stem>.png`` per image.

    The image is read again from ``img_path`` at its original size; ground truth and predictions are drawn in
    original pixels (see :func:`mmdet_custom.analysis.inference.predict`).

    Returns:
        list[str]: the PNG paths, in the order of ``indices``.
    """
    vis = make_visualizer(dataset.metainfo, line_width, alpha)
    files = []
    for _, sample in predict(model, dataset, indices):
        img_path = sample.metainfo['img_path']
        image = mmcv.imread(img_path, channel_order='rgb')
        out_file = osp.join(out_dir, osp.splitext(osp.basename(img_path))[0] + '.png')
        save_image(out_file, draw_gt_vs_pred(image, sample, vis, show_score_thr))
        files.append(out_file)
    return files


def visualize_predictions(config: Union[str, Config],
                          checkpoint: Optional[str],
                          out_dir: str,
                          num_images: Optional[int] = 5,
                          indices: Optional[Sequence[int]] = None,
                          show_score_thr: float = 0.3,
                          split: str = 'test',
                          cfg_options: Optional[dict] = None,
                          device: Optional[str] = None) -> List[str]:
    """Ground truth vs prediction PNGs of ``num_images`` images (or ``indices``) of the config's ``split``.

    Args:
        config (str | Config): model and dataset config.
        checkpoint (str, optional): weights; None draws the predictions of random weights.
        out_dir (str): output folder (one ``<image stem>.png`` per image, ``(H, 2 W, 3)``).
        num_images (int, optional): the first images of the split (all when None). Defaults to 5.
        indices (Sequence[int], optional): dataset indices to draw instead of the first ``num_images``.
        show_score_thr (float): minimum score of a drawn prediction. Defaults to 0.3.
        split (str): 'train', 'val' or 'test' dataloader of the config. Defaults to 'test'.
        cfg_options (dict, optional): overrides merged into the config.
        device (str, optional): defaults to 'cuda' when available, else 'cpu'.

    Returns:
        list[str]: the PNG paths.

    Raises:
        ValueError: bad ``split``; IndexError: an index outside the dataset.
    """
    cfg = load_cfg(config, cfg_options)
    dataset = build_dataset(cfg, split)
    model = build_model(cfg, checkpoint, device, dataset.metainfo)
    return save_gt_vs_pred(model, dataset, select_indices(dataset, num_images, indices), out_dir, show_score_thr)
