"""Grad-CAM of single detections of a two-stage detector (Selvaraju et al., Grad-CAM, ICCV 2017, Sec. 3).

For the ``k``-th detection (box ``b``, class ``c``) the target is its classification score recomputed with
gradients: the image goes through ``extract_feat`` (backbone + neck), the RoI head pools the features of the fixed
box ``b`` and its bbox head gives ``cls_score``; the target is the activated score of class ``c`` (softmax, or the
head's own activation when it has ``custom_cls_channels``), i.e. the score the detector reported, before the box
regression and NMS. Grad-CAM weights each channel of the chosen layer's output ``A`` (``(1, C, h, w)``) by the mean
of ``d target / d A`` over ``h x w``, sums the weighted channels, applies ReLU, upsamples to the network input
(bilinear) and scales to [0, 1] (min-max). This module uses the ``grad-cam`` package (``pytorch_grad_cam``) for
the hooks and that arithmetic; :class:`DetectionScores` adapts an mmdet detector to its classifier-style interface.

Works with detectors whose ``roi_head`` has mmdet's ``StandardRoIHead._bbox_forward(x, rois)`` (Mask R-CNN,
Faster R-CNN and heads derived from them).
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import cv2
import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate

from ._io import save_image
from .inference import build_detector, load_cfg


class DetectionScores(torch.nn.Module):
    """The classification scores of fixed boxes as a function of the input image: ``(1, 3, H, W) -> (1, K)``.

    Args:
        detector (nn.Module): a two-stage mmdet detector (``extract_feat``, ``roi_head._bbox_forward``).
        bboxes (Tensor): ``(K, 4)`` boxes, xyxy, in pixels of the network input (``img_shape``).
        labels (Tensor): ``(K, )`` class index of each box, in ``[0, num_classes)``.
    """

    def __init__(self, detector: torch.nn.Module, bboxes: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.detector = detector
        self.register_buffer('bboxes', bboxes.detach().float())
        self.register_buffer('labels', labels.detach().long())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        from mmdet.structures.bbox import bbox2roi
        feats = self.detector.extract_feat(inputs)
        rois = bbox2roi([self.bboxes])
        cls_score = self.detector.roi_head._bbox_forward(feats, rois)['cls_score']
        bbox_head = self.detector.roi_head.bbox_head
        if getattr(bbox_head, 'custom_cls_channels', False):
            scores = bbox_head.loss_cls.get_activation(cls_score)
        else:
            scores = F.softmax(cls_score, dim=-1)
        return scores[torch.arange(len(self.labels), device=scores.device), self.labels][None]


class DetectionTarget:
    """``pytorch_grad_cam`` target: the ``k``-th output of :class:`DetectionScores` (one image's ``(K, )``)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.k]


def _test_pipeline(cfg: Config) -> Compose:
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    # an arbitrary image has no annotations to load
    return Compose([t for t in dataset.pipeline if t['type'] != 'LoadAnnotations'])


def _class_index(classes: Sequence[str], target_class: Union[str, int]) -> int:
    if isinstance(target_class, int) or str(target_class).isdigit():
        index = int(target_class)
        if not 0 <= index < len(classes):
            raise ValueError(f'class index {index} outside [0, {len(classes)})')
        return index
    if target_class not in classes:
        raise ValueError(f'class {target_class!r} is not one of the model classes {list(classes)}')
    return list(classes).index(target_class)


def grad_cam(img: str,
             config: Union[str, Config],
             checkpoint: Optional[str],
             target_class: Union[str, int],
             out_dir: str,
             target_layer: str = 'backbone.layer4',
             num_preds: int = 3,
             cfg_options: Optional[dict] = None,
             device: Optional[str] = None,
             image_weight: float = 0.5) -> List[Dict]:
    """Grad-CAM maps of the ``num_preds`` highest-scoring detections of ``target_class`` in ``img``.

    Args:
        img (str): image file.
        config (str | Config): detector config; its test pipeline (without ``LoadAnnotations``) prepares ``img``.
        checkpoint (str, optional): weights; None keeps random weights (for testing the tool).
        target_class (str | int): class name (as in the dataset's ``classes``) or index.
        out_dir (str): one PNG per detection, ``<img stem>_<class>_<rank>.png``: the CAM (jet colour map) blended
            with the original image (``image_weight`` of the image), the box drawn in white.
        target_layer (str): dotted name of the module whose output is explained, e.g. ``backbone.layer4`` or
            ``neck.fpn_convs.0``. Defaults to ``backbone.layer4``.
        num_preds (int): detections explained, highest score first. Defaults to 3.
        cfg_options (dict, optional): overrides merged into the config (e.g. a lower
            ``model.test_cfg.rcnn.score_thr`` to find more detections).
        device (str, optional): defaults to 'cuda' when available, else 'cpu'.
        image_weight (float): weight of the image in the overlay, in [0, 1]. Defaults to 0.5.

    Returns:
        list[dict]: per detection, highest score first: ``bbox`` (xyxy, original pixels), ``score``, ``label``,
        ``cam`` (``(H, W)`` float32 in [0, 1] at the original image size), ``feature_shape`` (``(h, w)`` of the
        layer's output) and ``out_file``.

    Raises:
        ValueError: unknown class or layer, or fewer than ``num_preds`` detections of the class (the message says
            how many were found).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    cfg = load_cfg(config, cfg_options)
    model = build_detector(cfg, checkpoint, device)
    if not model.dataset_meta.get('classes'):
        from mmdet.registry import DATASETS
        model.dataset_meta = DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO
    classes = model.dataset_meta['classes']
    label = _class_index(classes, target_class)
    try:
        layer = model.get_submodule(target_layer)
    except AttributeError:
        raise ValueError(f'the model has no layer {target_layer!r}') from None

    batch = model.data_preprocessor(pseudo_collate([_test_pipeline(cfg)(dict(img_path=img, img_id=0))]), False)
    inputs, sample = batch['inputs'], batch['data_samples'][0]
    with torch.no_grad():
        pred = model.predict(inputs, batch['data_samples'], rescale=False)[0].pred_instances
    keep = (pred.labels == label).nonzero().flatten()
    keep = keep[pred.scores[keep].argsort(descending=True)][:num_preds]
    if len(keep) < num_preds:
        raise ValueError(f'{img}: {len(keep)} detections of class {classes[label]!r}, {num_preds} asked for '
                         '(lower model.test_cfg.rcnn.score_thr or choose another class)')

    h, w = sample.metainfo['img_shape']
    ori_h, ori_w = sample.metainfo['ori_shape']
    scale = np.array(sample.metainfo['scale_factor'] * 2, dtype=np.float32)  # (w, h) -> (w, h, w, h)
    image = mmcv.imread(img, channel_order='rgb')
    scorer = DetectionScores(model, pred.bboxes[keep], pred.labels[keep])
    results = []
    with GradCAM(model=scorer, target_layers=[layer]) as cam_fn:
        cam_fn.compute_input_gradient = True  # gradients reach layers of frozen stages too
        for rank in range(len(keep)):
            cam = cam_fn(input_tensor=inputs, targets=[DetectionTarget(rank)])[0]
            feature_shape = tuple(cam_fn.activations_and_grads.activations[0].shape[-2:])
            # the CAM covers the padded network input: crop to the resized image, then back to original pixels
            cam = np.clip(cv2.resize(cam[:h, :w], (ori_w, ori_h), interpolation=cv2.INTER_LINEAR), 0, 1)
            bbox = pred.bboxes[keep[rank]].cpu().numpy() / scale
            overlay = show_cam_on_image(image.astype(np.float32) / 255, cam, use_rgb=True, image_weight=image_weight)
            x0, y0, x1, y1 = np.round(bbox).astype(int)
            cv2.rectangle(overlay, (x0, y0), (x1, y1), (255, 255, 255), 1)
            score = float(pred.scores[keep[rank]])
            cv2.putText(overlay, f'{classes[label]} {score:.2f}', (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (255, 255, 255), 1, cv2.LINE_AA)
            out_file = osp.join(out_dir, f'{osp.splitext(osp.basename(img))[0]}_{classes[label]}_{rank}.png')
            save_image(out_file, overlay)
            results.append(dict(bbox=bbox.tolist(), score=score, label=label, cam=cam.astype(np.float32),
                                feature_shape=feature_shape, out_file=out_file))
    return results
