"""Grad-CAM of single detections of a two-stage detector (Selvaraju et al., Grad-CAM, ICCV 2017, Sec. 3).

For the ``k``-th detection (box ``b``, class ``c``) the target is its classification score recomputed with
gradients: the image goes through ``extract_feat`` (backbone + neck), the RoI head pools the features of the fixed
box ``b`` and its bbox head gives ``cls_score``; the target is the activated score of class ``c`` (softmax, or the
head's own activation when it has ``custom_cls_channels``), i.e. the score the detector reported, before the box
regression and NMS. Grad-CAM weights each channel of the chosen layer's output ``A`` (``(1, C, h, w)``) by the mean
of ``d target / d A`` over ``h x w`` (Eq. 1), sums the weighted channels and applies ReLU (Eq. 2); the map is
upsampled to the network input (bilinear) and scaled to [0, 1] (min-max), then cropped to the image and resized to
its original size.

The ``grad-cam`` package (``pytorch_grad_cam``) gives the scaling and the overlay. Its ``GradCAM`` class would also
fit (:class:`DetectionScores` is the classifier-style model it expects) but repeats the whole forward pass per
target and back-propagates into every parameter; :func:`layer_grad_cams` does one forward pass and differentiates
each score with respect to the layer's output only, which gives the same maps for a fraction of the work.

Works with two-stage detectors whose ``roi_head`` has mmdet's ``StandardRoIHead`` methods ``predict_bbox`` and
``_bbox_forward(x, rois)`` (Mask R-CNN, Faster R-CNN and heads derived from them).
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import cv2
import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from mmdet.registry import DATASETS
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import get_test_pipeline_cfg
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image

from mmdet_custom.datasets.utils import innermost_dataset_cfg
from mmdet_custom.models.builder import build_model
from mmdet_custom.utils.config import is_annotation_loader
from mmdet_custom.utils.errors import UserError

from ._io import save_image
from .inference import load_cfg


class GradCAMError(UserError, ValueError):
    """A target the model cannot explain: unknown class or layer, a layer without a ``(1, C, h, w)`` output, too few
    detections of the class."""


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
        feats = self.detector.extract_feat(inputs)
        rois = bbox2roi([self.bboxes])
        cls_score = self.detector.roi_head._bbox_forward(feats, rois)['cls_score']
        bbox_head = self.detector.roi_head.bbox_head
        if getattr(bbox_head, 'custom_cls_channels', False):
            scores = bbox_head.loss_cls.get_activation(cls_score)
        else:
            scores = F.softmax(cls_score, dim=-1)
        return scores[torch.arange(len(self.labels), device=scores.device), self.labels][None]


def layer_grad_cams(scorer: torch.nn.Module, layer: torch.nn.Module, inputs: torch.Tensor):
    """Grad-CAM of each output of ``scorer(inputs)`` (``(1, K)``) at the output of ``layer`` (last call).

    One forward pass; the layer's output is detached there and made a leaf that requires grad, so each of the ``K``
    backward passes (``torch.autograd.grad``) runs from the score down to that layer only, and layers of frozen
    stages work as well as trainable ones.

    Returns:
        tuple: ``cams`` (``(K, H, W)`` float32 in [0, 1], ``H, W`` of ``inputs``, min-max scaled per map as
        ``pytorch_grad_cam`` does) and ``feature_shape`` (``(h, w)`` of the layer's output).

    Raises:
        GradCAMError: (a ``ValueError``) when the layer's output is not a ``(1, C, h, w)`` tensor or the layer is not
            run.
    """
    store = {}

    def keep_output(module, args, output):
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise GradCAMError(f'Grad-CAM needs a layer whose output is a (1, C, h, w) tensor, the target layer gives '
                               f'{shape}: choose a conv stage (--target-layer backbone.layer4, neck.fpn_convs.0)')
        store['act'] = output.detach().requires_grad_()
        return store['act']

    handle = layer.register_forward_hook(keep_output)
    try:
        with torch.enable_grad():
            scores = scorer(inputs)[0]
            if 'act' not in store:
                raise GradCAMError('the target layer is not run by the backbone, neck or bbox head (--target-layer): '
                                   'choose one of theirs, e.g. backbone.layer4 or neck.fpn_convs.0')
            act, cams = store['act'], []
            for k in range(len(scores)):
                (grad, ) = torch.autograd.grad(scores[k], act, retain_graph=k + 1 < len(scores))
                weights = grad.mean(dim=(2, 3), keepdim=True)  # alpha_k^c of Grad-CAM's Eq. 1
                cams.append(F.relu((weights * act).sum(dim=1))[0].detach())  # Eq. 2
    finally:
        handle.remove()
    cams = torch.stack(cams).cpu().numpy()
    # scaled, resized, scaled again: as pytorch_grad_cam's BaseCAM (per layer, then after aggregating the layers)
    cams = scale_cam_image(scale_cam_image(cams, (inputs.shape[-1], inputs.shape[-2])))
    return cams, tuple(act.shape[-2:])


def _test_pipeline(cfg: Config) -> Compose:
    # an arbitrary image has no annotations to load
    return Compose([t for t in get_test_pipeline_cfg(cfg) if not is_annotation_loader(t)])


def _class_index(classes: Sequence[str], target_class: Union[str, int], source: str = 'the model') -> int:
    if isinstance(target_class, int) or str(target_class).isdigit():
        index = int(target_class)
        if not 0 <= index < len(classes):
            raise GradCAMError(f'--target-class {index} is outside [0, {len(classes)}): {source} has '
                               f'{len(classes)} classes')
        return index
    if target_class not in classes:
        raise GradCAMError(f'--target-class {target_class!r} is not one of the model classes (from {source}): '
                           f'{", ".join(map(str, classes))}')
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
        GradCAMError: (a ``ValueError``) unknown class (naming the checkpoint or config the classes come from) or
            layer, or fewer than ``num_preds`` detections of the class (the message says how many were found).
        FileNotFoundError: ``img`` or ``checkpoint`` does not exist.
    """
    if not osp.isfile(img):
        raise FileNotFoundError(f'image not found: {img}')
    cfg = load_cfg(config, cfg_options)
    name = cfg.filename or 'the config'
    model = build_model(cfg, checkpoint, device)
    source = f'checkpoint {checkpoint} (meta.dataset_meta)'
    if not model.dataset_meta.get('classes'):
        dataset_type = innermost_dataset_cfg(cfg.test_dataloader.dataset).type
        model.dataset_meta = DATASETS.get(dataset_type).METAINFO
        source = f'{name} (test_dataloader.dataset type {dataset_type})'
    classes = model.dataset_meta['classes']
    label = _class_index(classes, target_class, source)
    try:
        layer = model.get_submodule(target_layer)
    except AttributeError:
        tops = ', '.join(n for n, _ in model.named_children())
        raise GradCAMError(f'--target-layer {target_layer!r}: the model of {name} has no such module (dotted name '
                           f'under one of {tops}, e.g. backbone.layer4)') from None

    batch = model.data_preprocessor(pseudo_collate([_test_pipeline(cfg)(dict(img_path=img, img_id=0))]), False)
    inputs, sample = batch['inputs'], batch['data_samples'][0]
    with torch.no_grad():  # boxes only (no masks): the detections to explain, in network-input pixels
        feats = model.extract_feat(inputs)
        proposals = model.rpn_head.predict(feats, batch['data_samples'], rescale=False)
        pred = model.roi_head.predict_bbox(feats, [sample.metainfo], proposals, model.roi_head.test_cfg,
                                           rescale=False)[0]
    keep = (pred.labels == label).nonzero().flatten()
    keep = keep[pred.scores[keep].argsort(descending=True)][:num_preds]
    if len(keep) < num_preds:
        raise GradCAMError(f'{img}: {len(keep)} detections of class {classes[label]!r}, {num_preds} asked for '
                           '(--num-preds; lower model.test_cfg.rcnn.score_thr, raise its max_per_img or choose another '
                           'class)')

    h, w = sample.metainfo['img_shape']
    ori_h, ori_w = sample.metainfo['ori_shape']
    scale = np.array(sample.metainfo['scale_factor'] * 2, dtype=np.float32)  # (w, h) -> (w, h, w, h)
    image = mmcv.imread(img, channel_order='rgb')
    scorer = DetectionScores(model, pred.bboxes[keep], pred.labels[keep])
    cams, feature_shape = layer_grad_cams(scorer, layer, inputs)
    results = []
    for rank, cam in enumerate(cams):
        # the CAM covers the padded network input: crop to the resized image, then back to original pixels
        cam = np.clip(cv2.resize(cam[:h, :w], (ori_w, ori_h), interpolation=cv2.INTER_LINEAR), 0, 1)
        bbox = pred.bboxes[keep[rank]].cpu().numpy() / scale
        overlay = show_cam_on_image(image.astype(np.float32) / 255, cam, use_rgb=True, image_weight=image_weight)
        x0, y0, x1, y1 = np.round(bbox).astype(int)
        cv2.rectangle(overlay, (x0, y0), (x1, y1), (255, 255, 255), 1)
        score = float(pred.scores[keep[rank]])
        cv2.putText(overlay, f'{classes[label]} {score:.2f}', (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        out_file = osp.join(out_dir, f'{osp.splitext(osp.basename(img))[0]}_{classes[label]}_{rank}.png')
        save_image(out_file, overlay)
        results.append(dict(bbox=bbox.tolist(), score=score, label=label, cam=cam.astype(np.float32),
                            feature_shape=feature_shape, out_file=out_file))
    return results
