"""Ground-truth boxes of a config's training set, in the network-input pixels the RPN sees.

The training dataset is built through mmdet's registry (so class names, crowd flags and image filters are
exactly the training ones) with an empty pipeline; the boxes are then scaled as the train pipeline's
``Resize`` scales them (mmcv's ``rescale_size`` / ``imresize`` rounding), clipped to the resized image as
``clip_object_border=True`` does, and each image's input is padded as the model's ``data_preprocessor``
pads it (``pad_size_divisor``): the padded shape sets the anchor grid. ``RandomFlip`` is not modelled: a flipped
box sits at ``w - x``, whose distance to the grid can differ slightly when the grid is not symmetric.
"""
import copy
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from mmdet_custom.utils.errors import UserError


class AnchorSearchError(UserError, ValueError):
    """A config, data set, study or flag the anchor search refuses; the message names the file or flag."""


#: Pipeline transforms that resize to a random scale: their boxes have no single network-input size.
_RANDOM_RESIZES = ('RandomResize', 'RandomChoiceResize', 'RandomChoice', 'RandomCrop', 'RandomCenterCropPad',
                   'Mosaic', 'RandomAffine', 'MixUp', 'CopyPaste', 'FixShapeResize')


@dataclass
class GTBoxes:
    """Ground-truth boxes in network-input pixels.

    Attributes:
        boxes (np.ndarray): (N, 4) float64 xyxy boxes, in network-input pixels.
        labels (np.ndarray): (N,) int64 class indices into ``classes``.
        img_ids (np.ndarray): (N,) int64 image id of each box.
        img_shapes (np.ndarray): (N, 2) int64 padded input shape (h, w) of each box's image.
        classes (tuple[str]): class names.
        source (str): where the boxes come from (the annotation file), for reports.
        num_images (int): images read.
        num_crowd (int): crowd (``ignore_flag``) boxes skipped.
        num_zero_size (int): boxes of zero width or height (after scaling and clipping) skipped.
    """

    boxes: np.ndarray
    labels: np.ndarray
    img_ids: np.ndarray
    img_shapes: np.ndarray
    classes: Tuple[str, ...] = ()
    source: str = ''
    num_images: int = 0
    num_crowd: int = 0
    num_zero_size: int = 0
    resize: Optional['ResizeSpec'] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def areas(self) -> np.ndarray:
        """(N,) box areas in network-input pixels."""
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])


@dataclass(frozen=True)
class ResizeSpec:
    """A train pipeline's fixed-size ``Resize`` (mmcv/mmdet ``Resize`` semantics).

    Attributes:
        scale (tuple[int, int], optional): target (w, h); with ``keep_ratio`` the long / short edge bounds.
        scale_factor (float | tuple[float, float], optional): used when ``scale`` is None.
        keep_ratio (bool): keep the aspect ratio (``mmcv.imrescale``) or resize to ``scale`` exactly.
        clip_object_border (bool): clip boxes to the resized image.
    """

    scale: Optional[Tuple[int, int]] = None
    scale_factor: Optional[Union[float, Tuple[float, float]]] = None
    keep_ratio: bool = False
    clip_object_border: bool = True

    @classmethod
    def from_pipeline(cls, pipeline: Sequence[dict]) -> 'ResizeSpec':
        """The first ``Resize`` of a pipeline; identity (with a warning) when there is none.

        Raises:
            AnchorSearchError: (a ``ValueError``) if the pipeline resizes or crops at random (``RandomResize``,
                ``RandomCrop``, ...) or
                with a transform other than ``Resize`` before its first ``Resize``: the input size of a box is
                then not defined.
        """
        for transform in pipeline or []:
            t_type = transform.get('type', '') if isinstance(transform, dict) else type(transform).__name__
            t_type = t_type if isinstance(t_type, str) else getattr(t_type, '__name__', '')
            t_type = t_type.split('.')[-1]
            if t_type == 'Resize':
                scale = transform.get('scale', None)
                scale = (scale, scale) if isinstance(scale, int) else scale
                scale_factor = transform.get('scale_factor', None)
                if scale is None and scale_factor is None:
                    raise AnchorSearchError('the train pipeline\'s Resize gives neither scale nor scale_factor.')
                return cls(scale=tuple(scale) if scale is not None else None,
                           scale_factor=tuple(scale_factor) if isinstance(scale_factor, (list, tuple))
                           else scale_factor,
                           keep_ratio=bool(transform.get('keep_ratio', False)),
                           clip_object_border=bool(transform.get('clip_object_border', True)))
            if t_type in _RANDOM_RESIZES or 'Resize' in t_type:
                raise AnchorSearchError(
                    f'the train pipeline transforms boxes with {t_type} before any fixed Resize, so boxes have no '
                    f'single network-input size; give the anchor search a config whose train pipeline uses a '
                    f'fixed Resize(scale=..., keep_ratio=...) (e.g. via --cfg-options).')
        warnings.warn('the train pipeline has no Resize: boxes are taken at the image\'s own size.')
        return cls(scale_factor=1.0)

    def output_size(self, width: int, height: int) -> Tuple[int, int, float, float]:
        """Resized (w, h) of an image and the box scale factors (w_scale, h_scale), as mmcv computes them.

        mmcv's own functions, called as ``mmcv.transforms.Resize`` calls them: ``_scale_size`` for a
        ``scale_factor``, ``rescale_size`` (what ``mmcv.imrescale`` uses) for ``keep_ratio``.
        """
        from mmcv.image.geometric import _scale_size, rescale_size  # imported here: mmcv loads torch
        scale = tuple(self.scale) if self.scale is not None else _scale_size((width, height), self.scale_factor)
        if self.keep_ratio:
            new_w, new_h = rescale_size((width, height), tuple(scale))
        else:
            new_w, new_h = int(scale[0]), int(scale[1])
        return new_w, new_h, new_w / width, new_h / height


def gt_boxes_from_data_infos(data_infos: Iterable[dict],
                             classes: Sequence[str],
                             resize: ResizeSpec,
                             pad_size_divisor: int = 1,
                             source: str = '') -> GTBoxes:
    """Collect the boxes of mmdet data infos and map them to network-input pixels.

    Args:
        data_infos (Iterable[dict]): mmdet ``BaseDetDataset`` data infos: ``img_id``, ``width``, ``height`` and
            ``instances`` with ``bbox`` (xyxy, original pixels), ``bbox_label`` and ``ignore_flag``.
        classes (Sequence[str]): class names of ``bbox_label``.
        resize (ResizeSpec): the train pipeline's resize.
        pad_size_divisor (int): the data preprocessor's ``pad_size_divisor`` (1 = no padding).
        source (str): name of the data for messages.

    Returns:
        GTBoxes: the non-crowd boxes of positive width and height. Zero-size boxes are counted, skipped and
        reported with a warning.

    Raises:
        AnchorSearchError: (a ``ValueError``) if an image lacks its width / height, or no box remains.
    """
    boxes, labels, img_ids, shapes = [], [], [], []
    num_images = num_crowd = num_zero = 0
    divisor = max(int(pad_size_divisor or 1), 1)
    for info in data_infos:
        num_images += 1
        if 'width' not in info or 'height' not in info:
            raise AnchorSearchError(f'{source}: image {info.get("img_id", info.get("img_path"))} has no width/height.')
        new_w, new_h, w_scale, h_scale = resize.output_size(int(info['width']), int(info['height']))
        pad_h, pad_w = math.ceil(new_h / divisor) * divisor, math.ceil(new_w / divisor) * divisor
        for inst in info.get('instances', []):
            if inst.get('ignore_flag', 0):
                num_crowd += 1
                continue
            x1, y1, x2, y2 = inst['bbox']
            box = [x1 * w_scale, y1 * h_scale, x2 * w_scale, y2 * h_scale]
            if resize.clip_object_border:
                box = [min(max(box[0], 0.), new_w), min(max(box[1], 0.), new_h),
                       min(max(box[2], 0.), new_w), min(max(box[3], 0.), new_h)]
            if not (box[2] > box[0] and box[3] > box[1]):
                num_zero += 1
                continue
            boxes.append(box)
            labels.append(int(inst.get('bbox_label', -1)))
            img_ids.append(int(info.get('img_id', num_images - 1)))
            shapes.append((pad_h, pad_w))
    if num_zero:
        warnings.warn(f'{source}: skipped {num_zero} box(es) of zero width or height in network-input pixels.')
    if not boxes:
        raise AnchorSearchError(f'{source}: no ground-truth boxes to measure anchors on ({num_images} images, '
                         f'{num_crowd} crowd and {num_zero} zero-size boxes skipped).')
    return GTBoxes(
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        img_ids=np.asarray(img_ids, dtype=np.int64),
        img_shapes=np.asarray(shapes, dtype=np.int64).reshape(-1, 2),
        classes=tuple(classes), source=source, num_images=num_images, num_crowd=num_crowd,
        num_zero_size=num_zero, resize=resize)


def _leaf_dataset_cfgs(dataset_cfg: dict, pipeline: Optional[list] = None) -> List[Tuple[dict, list]]:
    """Unwrap dataset wrappers (Repeat/ClassBalanced/MultiImageMix through
    :func:`~mmdet_custom.datasets.utils.innermost_dataset_cfg`, Concat here): (leaf cfg, its pipeline) pairs.

    Wrappers only repeat or reweight images; anchor statistics use each image once. A leaf without a ``Resize`` of
    its own takes the pipeline of the nearest wrapper that has one (e.g. ``MultiImageMixDataset``'s).
    """
    from mmdet_custom.datasets.utils import innermost_dataset_cfg  # here: mmdet_custom.datasets loads mmdet

    if 'datasets' in dataset_cfg:
        out = []
        for sub in dataset_cfg['datasets']:
            out += _leaf_dataset_cfgs(sub, dataset_cfg.get('pipeline', pipeline))
        return out
    leaf = innermost_dataset_cfg(dataset_cfg)
    wrapper = dataset_cfg
    while wrapper is not leaf:  # the wrappers' own pipelines, outermost first (the nearest one wins)
        pipeline = wrapper.get('pipeline', pipeline)
        wrapper = wrapper['dataset']
    if 'datasets' in leaf:  # a ConcatDataset inside a wrapper
        return _leaf_dataset_cfgs(leaf, pipeline)
    own = leaf.get('pipeline') or []
    return [(leaf, own if any(_is_resize(t) for t in own) or not pipeline else pipeline)]


def _is_resize(transform) -> bool:
    t_type = transform.get('type', '') if isinstance(transform, dict) else ''
    return isinstance(t_type, str) and ('Resize' in t_type or t_type in _RANDOM_RESIZES)


def load_gt_boxes(cfg) -> GTBoxes:
    """Ground-truth boxes of ``cfg.train_dataloader.dataset`` in network-input pixels.

    Args:
        cfg (mmengine.Config): a full mmdet config (``train_dataloader.dataset``, ``model.data_preprocessor``).

    Returns:
        GTBoxes: boxes of all leaf datasets, each image once.

    Raises:
        AnchorSearchError: (a ``ValueError``) if the config has no training dataset, the pipeline resizes randomly,
            the training set holds no image or no box remains.
    """
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    if 'custom_imports' in cfg:
        import_modules_from_strings(**cfg['custom_imports'])
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    from mmdet.registry import DATASETS

    dataset_cfg = cfg.get('train_dataloader', {}).get('dataset')
    if dataset_cfg is None:
        raise AnchorSearchError(f'{cfg.filename}: no train_dataloader.dataset to take ground-truth boxes from.')
    divisor = cfg.get('model', {}).get('data_preprocessor', {}).get('pad_size_divisor', 1) or 1
    parts = []
    for leaf, pipeline in _leaf_dataset_cfgs(dataset_cfg):
        resize = ResizeSpec.from_pipeline(pipeline)
        leaf = copy.deepcopy(leaf)
        leaf['pipeline'] = []
        leaf['lazy_init'] = False
        leaf['serialize_data'] = False  # read once here; mmengine's serialisation also fails on an empty list
        try:
            dataset = DATASETS.build(leaf)
        except json.JSONDecodeError as e:
            raise AnchorSearchError(f'{cfg.filename}: the training annotation file {leaf.get("ann_file")} is not '
                                    f'valid json: {e.msg} at line {e.lineno}, column {e.colno}.') from e
        source = str(getattr(dataset, 'ann_file', '') or leaf.get('ann_file', leaf.get('type')))
        if len(dataset) == 0:
            raise AnchorSearchError(
                f'{source}: the training set of {cfg.filename} holds no image (after its filter_cfg, e.g. '
                f'filter_empty_gt drops images without boxes): there are no boxes to measure anchors on.')
        infos = (dataset.get_data_info(i) for i in range(len(dataset)))
        parts.append(gt_boxes_from_data_infos(infos, dataset.metainfo['classes'], resize, divisor, source))
    if len(parts) == 1:
        return parts[0]
    classes = parts[0].classes
    if any(p.classes != classes for p in parts):
        raise AnchorSearchError(f'{cfg.filename}: the training datasets list different classes.')
    return GTBoxes(
        boxes=np.concatenate([p.boxes for p in parts]), labels=np.concatenate([p.labels for p in parts]),
        img_ids=np.concatenate([p.img_ids for p in parts]),
        img_shapes=np.concatenate([p.img_shapes for p in parts]), classes=classes,
        source=', '.join(p.source for p in parts), num_images=sum(p.num_images for p in parts),
        num_crowd=sum(p.num_crowd for p in parts), num_zero_size=sum(p.num_zero_size for p in parts),
        resize=parts[0].resize)
