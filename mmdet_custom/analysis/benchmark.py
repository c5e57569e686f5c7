"""Detectors side by side: training and inference speed, memory, parameters and FLOPs, from one interleaved run.

What is measured, for every model (:class:`ModelSpec`), each figure also as a ratio to the first (reference) model:

==========================  ====================================================================================
figure                      how
==========================  ====================================================================================
train img/s                 ``model.train_step`` (data preprocessor, forward with losses, backward, optimizer step
                            of the config's ``optim_wrapper``) on a batch of ``train_batch`` (default 2) images;
                            split into backbone+neck, rpn (``loss_and_predict``), roi_heads (``loss``), backward,
                            optimizer and other (data preprocessor, loss parsing)
infer ms/img @N dets        ``model.test_step`` at batch 1 with ``test_cfg.rcnn.max_per_img = N`` (N = 100, 1000);
                            split into backbone+neck (``extract_feat``), rpn (``rpn_head.predict``: head + proposals),
                            roi_heads (``roi_head.predict`` less its ``predict_by_feat`` calls: RoIAlign + box and
                            mask heads) and post (the rest: box decoding + NMS, mask pasting at image size, data
                            preprocessor, packing). torchvision: ``backbone``, ``rpn``, ``roi_heads`` (its box NMS
                            included), post = ``transform`` + mask pasting.
peak memory                 CPU: the process's peak resident set size (``VmHWM``) during the phase, reset before
                            each phase (``/proc/self/clear_refs``; where that is refused the peak since the process
                            started, flagged ``cumulative``); CUDA: ``torch.cuda.max_memory_allocated``
params                      all parameters (trainable or frozen)
GFLOPs                      :func:`mmdet_custom.analysis.model_stats.count_flops` (mmengine ``FlopAnalyzer``, one
                            multiply-add = one FLOP) at the benchmark's input size: dense part per image + box head
                            x ``test_cfg.rpn.max_per_img`` proposals + mask head x N detections
==========================  ====================================================================================

Every model is measured in a fresh subprocess (so that its peak memory is its own) with random weights (nothing is
downloaded; speed does not depend on the weights, only on the number of detections kept, which is reported). The
processes run interleaved: repeat 1 of every model, then repeat 2 of every model, ..., so that a change of the
machine's load during the run hits all models alike. Each process runs ``warmup`` untimed steps, then ``steps``
timed steps of each phase. A figure is the median over the repeats; its spread is ``(max - min) / median`` over
the repeats. The 1-minute load average is sampled before and after every process: where it exceeds the number of
usable cores the report warns that timings include contention.

Images: real iSAID patches (the devkit layout, converted once with the devkit's windowing, or an already converted
folder with ``annotations/instances_{train,val}.json``), resized to ``img_size`` with their annotations; without
data, random images with random box/mask annotations.
"""
import copy
import json
import math
import os
import os.path as osp
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SHARED_DATA = os.environ.get('MMDET_CUSTOM_SHARED_DATA', osp.join(osp.dirname(REPO_ROOT), 'shared', 'data'))
#: The config spelling of torchvision's reference model.
TORCHVISION = 'torchvision:maskrcnn_resnet50_fpn'
FULL_MODEL = 'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'
#: The lighter variants of the full model (they change its outputs): row label -> config.
LIGHT_MODELS = {
    'light: FPN 128 ch': 'configs/light/mask-rcnn_effb0-cbam_attn-fpn128_anchors_1x_isaid.py',
    'light: mask head 2 convs': 'configs/light/mask-rcnn_effb0-cbam_attn-fpn_mask2conv_anchors_1x_isaid.py',
    'light: 3 anchors/location': 'configs/light/mask-rcnn_effb0-cbam_attn-fpn_anchors3_1x_isaid.py',
    'light: all + frozen C2': 'configs/light/mask-rcnn_effb0-cbam-frozen1_attn-fpn128_mask2conv_anchors3_1x_isaid.py',
}
#: Inference parts, in table order (training adds backward and optimizer).
INFER_PARTS = ('backbone+neck', 'rpn', 'roi_heads', 'post')
TRAIN_PARTS = ('backbone+neck', 'rpn', 'roi_heads', 'backward', 'optimizer', 'other')
_MIB = 2.0**20


@dataclass
class ModelSpec:
    """One model of the benchmark.

    Args:
        name (str): row label.
        config (str): config file (relative paths are tried against the working folder, then the repository),
            ``mmdet::<path>`` (a config shipped with mmdet), or :data:`TORCHVISION`.
        cfg_options (dict): overrides merged into the config (dotted keys, as ``--cfg-options``).
        speedups (bool): apply :func:`mmdet_custom.models.speedups.apply_inference_speedups` before the inference
            phases.
        train (bool): run the training phase (torchvision's model and speedup rows are inference only).
        compile (bool): ``torch.compile`` the backbone + neck (``model.extract_feat``, inductor, static shapes)
            for the inference phases; the first (warm-up) call compiles and is reported as ``compile_s``, and the
            compiled features are compared with the eager ones on the first image (``compile_max_abs_diff``).
    """
    name: str
    config: str
    cfg_options: Dict = field(default_factory=dict)
    speedups: bool = False
    train: bool = True
    compile: bool = False


def default_specs() -> List[ModelSpec]:
    """The default set (``make bench``): stock R50 (reference), the full model, the full model with the inference
    speedups, EfficientNet-B0 with a plain FPN and no attention, R50 + CBAM (backbone and FPN), torchvision, and
    the lighter variants of :data:`LIGHT_MODELS`."""
    return [
        ModelSpec('R50 (stock mmdet)', 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'),
        ModelSpec('full model', FULL_MODEL),
        ModelSpec('full model + inference speedups', FULL_MODEL, speedups=True, train=False),
        ModelSpec('EffNet-B0 FPN, no attention', 'configs/cbam/mask-rcnn_effb0-cbam_fpn_anchors_1x_isaid.py',
                  {'model.backbone.use_cbam': False}),
        ModelSpec('R50 + CBAM', 'configs/cbam/mask-rcnn_r50-cbam_attn-fpn_anchors_1x_isaid.py'),
        ModelSpec('torchvision maskrcnn_resnet50_fpn', TORCHVISION, train=False),
    ] + [ModelSpec(name, config) for name, config in LIGHT_MODELS.items()]


def parse_spec(text: str) -> ModelSpec:
    """A :class:`ModelSpec` from the command line form ``[NAME=]CONFIG[+fast][+compile]``.

    ``torchvision`` stands for :data:`TORCHVISION`; ``+fast`` applies the inference speedups and ``+compile``
    ``torch.compile`` on the backbone + neck (both inference only).
    """
    name, _, config = text.rpartition('=')
    flags = []
    while config.endswith(('+fast', '+compile')):
        config, _, flag = config.rpartition('+')
        flags.insert(0, flag)
    if config == 'torchvision':
        config = TORCHVISION
    if not name:
        name = osp.splitext(osp.basename(config.split('::')[-1]))[0] + ''.join(f' +{f}' for f in flags)
    return ModelSpec(name, config, speedups='fast' in flags, compile='compile' in flags,
                     train=not flags and config != TORCHVISION)


def resolve_config(config: str) -> str:
    """Path of a config file (``mmdet::`` and :data:`TORCHVISION` pass unchanged).

    Raises:
        FileNotFoundError: the file exists neither as given nor under the repository root.
    """
    if '::' in config or config.startswith('torchvision:'):
        return config
    for candidate in (config, osp.join(REPO_ROOT, config)):
        if osp.isfile(candidate):
            return osp.abspath(candidate)
    raise FileNotFoundError(f'config file not found: {config}')


# ----------------------------------------------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------------------------------------------
def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_info(device: str = 'cpu') -> Dict:
    """CPU model, cores, Python / torch / torchvision / mmdet versions, torch threads and the device's name."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    except OSError:
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), usable_cores=usable_cores(), python=platform.python_version(),
                torch=torch.__version__, torch_threads=torch.get_num_threads(), device=device)
    for module in ('torchvision', 'mmdet', 'mmcv', 'timm'):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    if device.startswith('cuda') and torch.cuda.is_available():
        info['device_name'] = torch.cuda.get_device_name(torch.device(device))
    try:
        with open('/proc/meminfo') as f:
            info['mem_gib'] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
def prepare_data(data: Optional[str], work_dir: str) -> Tuple[Optional[str], str]:
    """The converted iSAID patch folder to read, and a description of it.

    Args:
        data (str, optional): a converted folder (``annotations/instances_train.json`` inside), a raw devkit folder
            (``train/images/*_instance_id_RGB.png``: converted into ``work_dir`` with the devkit's windowing), or
            ``'random'`` / None-and-no-shared-data for random images.
        work_dir (str): scratch folder for the conversion.

    Returns:
        tuple[str | None, str]: the folder (None: random images) and a one-line description.

    Raises:
        FileNotFoundError: ``data`` names a folder that does not exist or holds neither layout.
    """
    if data == 'random':
        return None, 'random images with random box/mask annotations'
    if data is None:
        data = osp.join(SHARED_DATA, 'isaid_devkit')
        if not osp.isdir(data):
            return None, f'random images (no iSAID data at {data})'
    if not osp.isdir(data):
        raise FileNotFoundError(f'--data: folder not found: {data}')
    if osp.isfile(osp.join(data, 'annotations', 'instances_train.json')):
        return data, f'iSAID patches from {data}'
    import glob
    if glob.glob(osp.join(data, 'train', 'images', '*_instance_id_RGB.png')):
        from mmdet_custom.converters.isaid import convert_isaid
        out = osp.join(work_dir, 'isaid_patches')
        splits = tuple(s for s in ('train', 'val') if osp.isdir(osp.join(data, s, 'images')))
        convert_isaid(data, out, splits=splits, show_progress=False)
        if 'val' not in splits:
            os.symlink(osp.join(out, 'train'), osp.join(out, 'val'))
            os.symlink('instances_train.json', osp.join(out, 'annotations', 'instances_val.json'))
        return out, f'iSAID patches converted from {data} (devkit windowing)'
    raise FileNotFoundError(f'--data: {data} holds neither annotations/instances_train.json (converted patches) '
                            f'nor train/images/*_instance_id_RGB.png (the raw iSAID devkit layout)')


def _dataset_samples(root: str, split: str, img_size: int, count: int, with_ann: bool) -> list:
    """Up to ``count`` packed samples of the iSAID fragment's dataset at ``img_size`` (no random flip)."""
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', '_base_', 'datasets', 'isaid_instance.py'))
    loader = cfg.train_dataloader if split == 'train' else cfg.test_dataloader
    dataset_cfg = copy.deepcopy(loader.dataset)
    pipeline = [dict(type='LoadImageFromFile')]
    if with_ann:  # before Resize, which resizes boxes and masks with the image
        pipeline.append(dict(type='LoadAnnotations', with_bbox=True, with_mask=True))
    pipeline.append(dict(type='Resize', scale=(img_size, img_size), keep_ratio=True))
    pipeline.append(dict(type='PackDetInputs') if with_ann else dict(
        type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')))
    dataset_cfg.update(data_root=root.rstrip('/') + '/', ann_file=f'annotations/instances_{split}.json',
                       data_prefix=dict(img=f'{split}/images/'), pipeline=pipeline, test_mode=not with_ann)
    if with_ann:
        dataset_cfg.filter_cfg = dict(filter_empty_gt=True, min_size=0)
    dataset = DATASETS.build(dataset_cfg)
    if len(dataset) == 0:
        raise ValueError(f'{root}: the {split} split has no images' + (' with annotations' if with_ann else ''))
    return [dataset[i % len(dataset)] for i in range(count)]


def _random_samples(img_size: int, count: int, seed: int = 0, num_gts: int = 30, num_classes: int = 15) -> list:
    """``count`` packed samples: random images with ``num_gts`` random boxes (rectangular masks) each."""
    import numpy as np
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        wh = np.clip(np.exp(rng.normal(np.log(max(img_size / 40, 4)), 0.7, (num_gts, 2))), 2, img_size / 2)
        xy = rng.uniform(0, img_size - wh)
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        masks = np.zeros((num_gts, img_size, img_size), np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            masks[k, y0:y1 + 1, x0:x1 + 1] = 1
        sample = DetDataSample(metainfo=dict(img_id=i, img_path=f'random_{i}.png', ori_shape=(img_size, img_size),
                                             img_shape=(img_size, img_size), scale_factor=(1.0, 1.0)))
        gt = InstanceData()
        gt.bboxes = torch.from_numpy(boxes)
        gt.labels = torch.from_numpy(rng.integers(0, num_classes, num_gts))
        gt.masks = BitmapMasks(masks, img_size, img_size)
        sample.gt_instances = gt
        image = torch.from_numpy(rng.integers(0, 256, (3, img_size, img_size), dtype=np.uint8))
        samples.append(dict(inputs=image, data_samples=sample))
    return samples


# ----------------------------------------------------------------------------------------------------------------
# Timing the model's parts
# ----------------------------------------------------------------------------------------------------------------
class PartTimer:
    """Wall time spent in chosen methods of a model, by label (inclusive times; nested calls add to both labels).

    :meth:`wrap` replaces a bound method on its instance by a wrapper that synchronises CUDA (when ``cuda``),
    times the call, and opens a ``torch.profiler.record_function(label)`` range (for :func:`profile_top_ops`).
    """

    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self.times: Dict[str, float] = {}
        self.labels: List[str] = []

    def sync(self) -> None:
        if self.cuda:
            import torch
            torch.cuda.synchronize()

    def wrap(self, obj, method: str, label: str) -> None:
        import torch
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            with torch.profiler.record_function(label):
                out = inner(*args, **kwargs)
            self.sync()
            self.times[label] = self.times.get(label, 0.0) + time.perf_counter() - start
            return out

        setattr(obj, method, timed)
        if label not in self.labels:
            self.labels.append(label)

    def reset(self) -> None:
        self.times = {}


def _wrap_mmdet_predict(model, timer: PartTimer) -> None:
    timer.wrap(model, 'extract_feat', 'backbone+neck')
    timer.wrap(model.rpn_head, 'predict', 'rpn')
    timer.wrap(model.roi_head, 'predict', 'roi_heads')
    timer.wrap(model.roi_head.bbox_head, 'predict_by_feat', 'post')
    if getattr(model.roi_head, 'with_mask', False):
        timer.wrap(model.roi_head.mask_head, 'predict_by_feat', 'post')


def _wrap_mmdet_train(model, optim_wrapper, timer: PartTimer) -> None:
    timer.wrap(model, 'extract_feat', 'backbone+neck')
    timer.wrap(model.rpn_head, 'loss_and_predict', 'rpn')
    timer.wrap(model.roi_head, 'loss', 'roi_heads')
    timer.wrap(optim_wrapper, 'backward', 'backward')
    timer.wrap(optim_wrapper, 'step', 'optimizer')


def _wrap_torchvision(model, timer: PartTimer) -> None:
    # modules: their forward is wrapped; the transform (resize, normalise, mask pasting) falls in post
    timer.wrap(model.backbone, 'forward', 'backbone+neck')
    timer.wrap(model.rpn, 'forward', 'rpn')
    timer.wrap(model.roi_heads, 'forward', 'roi_heads')
    timer.wrap(model.roi_heads, 'postprocess_detections', 'post')


def infer_parts(times: Dict[str, float], total: float) -> Dict[str, float]:
    """Exclusive seconds per inference part from the inclusive wrapper times: the ``post`` wrappers sit inside
    roi_heads (box decoding + NMS, mask pasting); post = total - backbone+neck - rpn - roi_heads less post, i.e.
    also the data preprocessor and result packing."""
    inner_post = times.get('post', 0.0)
    roi = max(times.get('roi_heads', 0.0) - inner_post, 0.0)
    parts = {'backbone+neck': times.get('backbone+neck', 0.0), 'rpn': times.get('rpn', 0.0), 'roi_heads': roi}
    parts['post'] = max(total - sum(parts.values()), 0.0)
    return parts


def train_parts(times: Dict[str, float], total: float) -> Dict[str, float]:
    """Seconds per training part; ``other`` = total - the timed parts (data preprocessor, loss parsing, ...)."""
    parts = {p: times.get(p, 0.0) for p in TRAIN_PARTS[:-1]}
    parts['other'] = max(total - sum(parts.values()), 0.0)
    return parts


def profile_top_ops(prof, labels: Sequence[str], top: int = 5,
                    outside: str = 'post') -> Dict[str, List[Tuple[str, float]]]:
    """Top operators by self time under each labelled range of a ``torch.profiler.profile`` run.

    Each operator event is charged to the nearest enclosing range whose name is in ``labels``, else to
    ``outside`` (inference: ``'post'``, i.e. data preprocessing, result packing, torchvision's transform).

    Returns:
        dict[str, list[tuple[str, float]]]: label -> up to ``top`` (operator, self milliseconds), largest first.
    """
    labels = set(labels)
    totals: Dict[str, Dict[str, float]] = {}
    for event in prof.events():
        if event.name in labels:
            continue
        parent, part = event.cpu_parent, outside
        while parent is not None:
            if parent.name in labels:
                part = parent.name
                break
            parent = parent.cpu_parent
        self_us = event.self_cpu_time_total + getattr(event, 'self_device_time_total', 0.0)
        ops = totals.setdefault(part, {})
        ops[event.name] = ops.get(event.name, 0.0) + self_us / 1000.0
    return {part: sorted(ops.items(), key=lambda kv: -kv[1])[:top] for part, ops in totals.items()}


# ----------------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------------
def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024


class PeakMemory:
    """Peak memory of a phase: CUDA max allocated, else the process's peak RSS since :meth:`start`."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.kind = 'cuda max_memory_allocated' if cuda else 'peak RSS'

    def start(self) -> None:
        import torch
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        elif not _reset_peak_rss():
            self.kind = 'peak RSS (cumulative: reset refused)'

    def peak_mib(self) -> float:
        import torch
        if self.cuda:
            return torch.cuda.max_memory_allocated() / _MIB
        return _peak_rss_bytes() / _MIB


# ----------------------------------------------------------------------------------------------------------------
# One model, in its own process
# ----------------------------------------------------------------------------------------------------------------
def _load_cfg(spec: ModelSpec):
    """The spec's config through :func:`~mmdet_custom.utils.config.read_config`: private ``_names`` dropped, the
    ``cfg_options`` checked (a key the config lacks raises ``ConfigKeyError``; ``+key`` adds one) and merged."""
    from mmdet_custom.utils.config import read_config
    config = resolve_config(spec.config)
    if '::' in config:
        from mmengine.hub import get_config
        config = get_config(config)
    return read_config(config, spec.cfg_options)


def init_weights_quietly(model) -> None:
    """``model.init_weights()`` without mmengine's per-parameter initialisation log."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)


def _build_torchvision(num_classes: int, img_size: int, dets: int):
    import torchvision
    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes + 1, min_size=img_size, max_size=img_size,
        box_detections_per_img=dets)


def _flops_torchvision(model, img_size: int) -> Tuple[float, float, float]:
    """(dense GFLOPs per image, box-head MFLOPs per RoI, mask-head MFLOPs per RoI) of torchvision's Mask R-CNN."""
    import torch
    from mmengine.analysis import FlopAnalyzer

    def count(module, *inputs):
        analyzer = FlopAnalyzer(module, inputs)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        return analyzer.total()

    class Dense(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.backbone, self.head = m.backbone, m.rpn.head

        def forward(self, x):
            feats = list(self.backbone(x).values())
            logits, deltas = self.head(feats)
            return tuple(feats + logits + deltas)

    with torch.no_grad():
        dense = count(Dense(model).eval(), torch.zeros(1, 3, img_size, img_size))
        box = count(torch.nn.Sequential(model.roi_heads.box_head, model.roi_heads.box_predictor).eval(),
                    torch.zeros(1, 256, 7, 7))
        mask = count(torch.nn.Sequential(model.roi_heads.mask_head, model.roi_heads.mask_predictor).eval(),
                     torch.zeros(1, 256, 14, 14))
    return dense / 1e9, box / 1e6, mask / 1e6


def _num_proposals(model) -> int:
    test_cfg = getattr(model, 'test_cfg', None) or {}
    rpn = test_cfg.get('rpn', {}) if hasattr(test_cfg, 'get') else {}
    return int(rpn.get('max_per_img', 1000))


def measure_model(spec: ModelSpec, img_size: int = 800, device: str = 'cpu', data_root: Optional[str] = None,
                  steps: int = 1, warmup: int = 1, dets: Sequence[int] = (100, 1000), train_batch: int = 2,
                  threads: Optional[int] = None, flops: bool = True, profile: bool = False, seed: int = 0) -> Dict:
    """Measure one model once, in this process (see the module doc for what is timed). Run by the benchmark in a
    fresh subprocess per model and repeat.

    Returns:
        dict: ``params``, ``gflops`` (dense, per image), ``gflops_at`` (dets -> GFLOPs), ``infer`` (dets -> dict of
        ``s_per_img``, ``parts`` (seconds), ``detections`` (mean kept per image), ``peak_mib``), ``train`` (None or
        ``s_per_iter``, ``img_per_s``, ``parts``, ``peak_mib``), ``mem_kind``, ``profile`` (part -> top ops) and
        ``threads``.
    """
    import torch
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cuda = device.startswith('cuda')
    if cuda:
        torch.cuda.set_device(torch.device(device))
    memory = PeakMemory(cuda)
    num_test = max(steps + warmup, 1)
    num_train = max((steps + warmup) * train_batch, train_batch)
    tv = spec.config.startswith('torchvision:')
    result: Dict = dict(name=spec.name, threads=torch.get_num_threads(), infer={}, train=None, profile={})

    if tv:
        num_classes = 15
        model = _build_torchvision(num_classes, img_size, max(dets)).eval().to(device)
    else:
        from mmdet_custom.analysis.model_stats import build_detector
        cfg = _load_cfg(spec)
        model = build_detector(cfg)  # random init, registers mmdet's and the project's modules
        init_weights_quietly(model)  # the heads' own init (e.g. fc_cls ~ N(0, 0.01)): realistic score spread
        model = model.eval().to(device)
    result['params'] = sum(p.numel() for p in model.parameters())

    if flops:
        if tv:
            dense, box, mask = _flops_torchvision(model, img_size)
            proposals = model.rpn._post_nms_top_n['testing']
        else:
            from mmdet_custom.analysis.model_stats import count_flops
            per_image, per_roi = count_flops(copy.deepcopy(model).cpu(), (img_size, img_size))
            dense = sum(per_image.values()) / 1e9
            box = (per_roi.get('bbox_head', 0) + per_roi.get('bbox_predictor', 0)) / 1e6
            mask = per_roi.get('mask_head', 0) / 1e6
            proposals = _num_proposals(model)
        result['gflops'] = dense
        result['gflops_at'] = {str(n): dense + (box * proposals + mask * n) / 1e3 for n in dets}

    # ---- data
    if tv:
        if data_root:
            samples = _dataset_samples(data_root, 'val', img_size, num_test, with_ann=False)
        else:
            samples = _random_samples(img_size, num_test, seed)
        images = [(s['inputs'][[2, 1, 0]].float() / 255.).to(device) for s in samples]  # BGR uint8 -> RGB [0, 1]
    else:
        if data_root:
            test_samples = _dataset_samples(data_root, 'val', img_size, num_test, with_ann=False)
        else:
            test_samples = _random_samples(img_size, num_test, seed)
        from mmengine.dataset import pseudo_collate

    # ---- inference
    if spec.speedups and not tv:
        from mmdet_custom.models.speedups import apply_inference_speedups
        apply_inference_speedups(model)
    if spec.compile and not tv:
        result.update(_compile_extract_feat(model, pseudo_collate([test_samples[0]])))
    timer = PartTimer(cuda)
    if tv:
        _wrap_torchvision(model, timer)
    else:
        _wrap_mmdet_predict(model, timer)

    def infer_step(i):
        if tv:
            return [len(o['boxes']) for o in model([images[i % len(images)]])]
        out = model.test_step(pseudo_collate([test_samples[i % len(test_samples)]]))
        return [len(o.pred_instances) for o in out]

    for n in dets:
        if tv:
            model.roi_heads.detections_per_img = n
        else:
            model.roi_head.test_cfg.max_per_img = n
        memory.start()
        with torch.no_grad():
            for i in range(warmup):
                infer_step(i)
            totals, cpu, parts, kept = [], [], [], []
            for i in range(warmup, warmup + steps):
                timer.reset()
                timer.sync()
                start, cpu_start = time.perf_counter(), time.process_time()
                kept += infer_step(i)
                timer.sync()
                totals.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu_start)
                parts.append(infer_parts(timer.times, totals[-1]))
        result['infer'][str(n)] = dict(
            s_per_img=sum(totals) / len(totals), cpu_s_per_img=sum(cpu) / len(cpu),
            detections=sum(kept) / max(len(kept), 1),
            parts={p: sum(d[p] for d in parts) / len(parts) for p in INFER_PARTS}, peak_mib=memory.peak_mib())
        if profile and n == max(dets):
            with torch.no_grad(), torch.profiler.profile() as prof:
                infer_step(0)
            result['profile'][f'infer @{n}'] = profile_top_ops(prof, timer.labels)

    # ---- training
    if spec.train and not tv:
        from mmengine.optim import build_optim_wrapper
        del timer
        if data_root:
            train_samples = _dataset_samples(data_root, 'train', img_size, num_train, with_ann=True)
        else:
            train_samples = _random_samples(img_size, num_train, seed + 1)
        cfg = _load_cfg(spec)
        from mmdet_custom.analysis.model_stats import build_detector
        torch.manual_seed(seed)
        model = build_detector(cfg)  # a fresh model: the inference one may carry speedups
        init_weights_quietly(model)
        model = model.to(device).train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        timer = PartTimer(cuda)
        _wrap_mmdet_train(model, optim_wrapper, timer)

        def train_step(i):
            batch = [train_samples[(i * train_batch + k) % len(train_samples)] for k in range(train_batch)]
            model.train_step(pseudo_collate(batch), optim_wrapper)

        memory.start()
        for i in range(warmup):
            train_step(i)
        totals, cpu, parts = [], [], []
        for i in range(warmup, warmup + steps):
            timer.reset()
            timer.sync()
            start, cpu_start = time.perf_counter(), time.process_time()
            train_step(i)
            timer.sync()
            totals.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
            parts.append(train_parts(timer.times, totals[-1]))
        s_per_iter = sum(totals) / len(totals)
        result['train'] = dict(s_per_iter=s_per_iter, img_per_s=train_batch / s_per_iter,
                               cpu_s_per_iter=sum(cpu) / len(cpu),
                               parts={p: sum(d[p] for d in parts) / len(parts) for p in TRAIN_PARTS},
                               peak_mib=memory.peak_mib())
        if profile:
            with torch.profiler.profile() as prof:
                train_step(0)
            result['profile']['train'] = profile_top_ops(prof, timer.labels, outside='other')
    result['mem_kind'] = memory.kind
    return result


def _compile_extract_feat(model, batch) -> Dict:
    """Replace ``model.extract_feat`` (backbone + neck) by its ``torch.compile`` (inductor) version; compile it on
    ``batch`` and return ``compile_s`` (the first call) and ``compile_max_abs_diff`` (compiled vs eager features,
    max over levels)."""
    import torch
    eager = model.extract_feat
    with torch.no_grad():
        inputs = model.data_preprocessor(batch, False)['inputs']
        expected = eager(inputs)
        compiled = torch.compile(eager, dynamic=False)
        start = time.perf_counter()
        got = compiled(inputs)
        compile_s = time.perf_counter() - start
    model.extract_feat = compiled
    diff = max(float((a - b).abs().max()) for a, b in zip(expected, got))
    return dict(compile_s=compile_s, compile_max_abs_diff=diff,
                compile_max_abs=max(float(a.abs().max()) for a in expected))


def _worker_main(argv: Sequence[str]) -> None:
    """Subprocess entry: ``python -m mmdet_custom.analysis.benchmark --worker IN.json OUT.json``."""
    with open(argv[0]) as f:
        job = json.load(f)
    job['spec'] = ModelSpec(**job['spec'])
    job['dets'] = tuple(job['dets'])
    result = measure_model(**job)
    with open(argv[1], 'w') as f:
        json.dump(result, f)


# ----------------------------------------------------------------------------------------------------------------
# The interleaved run
# ----------------------------------------------------------------------------------------------------------------
def run_benchmark(specs: Sequence[ModelSpec],
                  img_size: int = 800,
                  repeats: int = 3,
                  steps: int = 1,
                  warmup: int = 1,
                  device: str = 'cpu',
                  data: Optional[str] = None,
                  threads: Optional[int] = None,
                  dets: Sequence[int] = (100, 1000),
                  train_batch: int = 2,
                  profile: bool = False,
                  timeout: Optional[float] = None,
                  log: Callable[[str], None] = print) -> Dict:
    """Measure every model ``repeats`` times, interleaved, each measurement in a fresh subprocess.

    Args:
        specs (Sequence[ModelSpec]): the models; the first is the reference of the ratios.
        img_size (int): square input side in pixels (images are resized to it). Defaults to 800.
        repeats (int): processes per model (the spread is taken over them). Defaults to 3.
        steps (int): timed steps per phase and process. Defaults to 1.
        warmup (int): untimed steps before each phase. Defaults to 1.
        device (str): 'cpu' or 'cuda[:i]'. Defaults to 'cpu'.
        data (str, optional): see :func:`prepare_data`.
        threads (int, optional): torch intra-op threads of each process (and ``OMP_NUM_THREADS``); None: torch's
            default.
        dets (Sequence[int]): detection budgets of the inference phases. Defaults to (100, 1000).
        train_batch (int): images per training step. Defaults to 2.
        profile (bool): also profile one inference step (largest budget) and one training step per model (first
            repeat) and report the top operators per part.
        timeout (float, optional): seconds allowed to one process.
        log (callable): progress messages.

    Returns:
        dict: ``machine`` (:func:`machine_info`), ``settings``, ``data``, ``specs``, ``runs`` (model name -> list of
        :func:`measure_model` results, one per repeat; a failed process gives ``{'error': ...}``), ``loads``
        (1-minute load averages sampled around every process), ``wall_s``.

    Raises:
        ValueError: no models, repeated names, or non-positive sizes/counts.
    """
    if not specs:
        raise ValueError('no models to benchmark')
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f'model names must be unique, got {names}')
    if img_size < 32 or repeats < 1 or steps < 1 or warmup < 0 or train_batch < 1 or not dets:
        raise ValueError('need img_size >= 32, repeats >= 1, steps >= 1, warmup >= 0, train_batch >= 1 and '
                         'at least one detection budget')
    for spec in specs:
        resolve_config(spec.config)  # a missing config fails now, not after an hour of measuring the others
    started = time.time()
    report = dict(machine=machine_info(device), specs=[asdict(s) for s in specs], runs={n: [] for n in names},
                  loads=[], settings=dict(img_size=img_size, repeats=repeats, steps=steps, warmup=warmup,
                                          device=device, threads=threads, dets=list(dets), train_batch=train_batch,
                                          profile=profile),
                  started=time.strftime('%Y-%m-%d %H:%M:%S'))
    env = dict(os.environ)
    if threads:
        env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(threads)
        report['machine']['torch_threads'] = threads
    env['PYTHONPATH'] = REPO_ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    with tempfile.TemporaryDirectory(prefix='bench_models_') as work:
        data_root, report['data'] = prepare_data(data, work)
        log(f'data: {report["data"]}')
        for rep in range(repeats):
            for spec in specs:
                job = dict(spec=asdict(spec), img_size=img_size, device=device, data_root=data_root, steps=steps,
                           warmup=warmup, dets=list(dets), train_batch=train_batch, threads=threads,
                           flops=rep == 0, profile=profile and rep == 0)
                in_file, out_file = osp.join(work, 'job.json'), osp.join(work, 'result.json')
                with open(in_file, 'w') as f:
                    json.dump(job, f)
                if osp.exists(out_file):
                    os.remove(out_file)
                load_before = load_average()
                t0 = time.perf_counter()
                try:
                    proc = subprocess.run(
                        [sys.executable, '-m', 'mmdet_custom.analysis.benchmark', '--worker', in_file, out_file],
                        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
                    failed = proc.returncode != 0 or not osp.isfile(out_file)
                    error = (proc.stderr.strip().splitlines() or ['no output'])[-1] if failed else None
                except subprocess.TimeoutExpired:
                    failed, error = True, f'timed out after {timeout} s'
                load_after = load_average()
                report['loads'] += [x for x in (load_before, load_after) if x is not None]
                if failed:
                    result = dict(error=error)
                    log(f'[{rep + 1}/{repeats}] {spec.name}: FAILED ({error})')
                else:
                    with open(out_file) as f:
                        result = json.load(f)
                    result['load'] = [load_before, load_after]
                    log(f'[{rep + 1}/{repeats}] {spec.name}: {_progress(result)} '
                        f'({time.perf_counter() - t0:.0f} s, load {load_before:.1f})')
                report['runs'][spec.name].append(result)
    report['wall_s'] = time.time() - started
    return report


def _progress(result: Dict) -> str:
    bits = [f'infer @{n} {v["s_per_img"] * 1000:.0f} ms' for n, v in result['infer'].items()]
    if 'compile_s' in result:
        bits.append(f'compile {result["compile_s"]:.0f} s (max |diff| {result["compile_max_abs_diff"]:.1e})')
    if result.get('train'):
        bits.append(f'train {result["train"]["img_per_s"]:.3f} img/s')
    return ', '.join(bits)


# ----------------------------------------------------------------------------------------------------------------
# Summary and tables
# ----------------------------------------------------------------------------------------------------------------
def _median(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _spread(values: Sequence[float]) -> Optional[float]:
    """``(max - min) / median`` of ``values`` (None for fewer than 2 values)."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else None


def columns(settings: Dict) -> List[Tuple[str, str]]:
    """Summary columns ``(key, header)`` for the run's settings (one inference column per detection budget)."""
    dets = settings['dets']
    cols = [('params_m', 'params (M)'), (f'gflops_{dets[0]}', f'GFLOPs @{dets[0]} dets'),
            ('train_img_s', f'train img/s (batch {settings["train_batch"]})')]
    cols += [(f'infer_ms_{n}', f'infer ms/img @{n} dets') for n in dets]
    cols += [('train_peak_mib', 'train peak MiB'), ('infer_peak_mib', 'infer peak MiB')]
    return cols


def cpu_columns(settings: Dict) -> List[Tuple[str, str]]:
    """CPU-time columns (``time.process_time`` of the measuring process, all its threads): the work done, much
    less sensitive than wall time to other processes competing for the cores."""
    return [('train_cpu_s', f'train CPU s/iter (batch {settings["train_batch"]})')] + [
        (f'infer_cpu_ms_{n}', f'infer CPU ms/img @{n} dets') for n in settings['dets']]


def summarize(report: Dict) -> List[Dict]:
    """One row per model: medians over the repeats, spreads, ratios to the first model, inference/training parts.

    Each row holds ``name``, ``values`` (column key -> median or None), ``ratios`` (column key -> value / reference
    value, None where either is missing), ``spreads`` (timed columns -> spread over repeats), ``infer_parts``
    (dets -> part -> median ms), ``train_parts`` (part -> median s), ``detections`` (dets -> median kept per image),
    ``repeats_ok`` and ``errors``.
    """
    dets = [str(n) for n in report['settings']['dets']]
    rows = []
    for spec in report['specs']:
        runs = report['runs'][spec['name']]
        ok = [r for r in runs if 'error' not in r]
        first = ok[0] if ok else {}
        values: Dict[str, Optional[float]] = {'params_m': first['params'] / 1e6 if first else None}
        for n in dets:
            values[f'gflops_{n}'] = (first.get('gflops_at') or {}).get(n)
        values['gflops_dense'] = first.get('gflops')
        per_rep: Dict[str, List[float]] = {}
        for n in dets:
            per_rep[f'infer_ms_{n}'] = [r['infer'][n]['s_per_img'] * 1000 for r in ok if n in r['infer']]
        per_rep['infer_peak_mib'] = [max(v['peak_mib'] for v in r['infer'].values()) for r in ok if r['infer']]
        for n in dets:
            per_rep[f'infer_cpu_ms_{n}'] = [r['infer'][n]['cpu_s_per_img'] * 1000 for r in ok if n in r['infer']]
        per_rep['train_img_s'] = [r['train']['img_per_s'] for r in ok if r.get('train')]
        per_rep['train_cpu_s'] = [r['train']['cpu_s_per_iter'] for r in ok if r.get('train')]
        per_rep['train_peak_mib'] = [r['train']['peak_mib'] for r in ok if r.get('train')]
        for key, vals in per_rep.items():
            values[key] = _median(vals)
        row = dict(name=spec['name'], config=spec['config'], values=values,
                   spreads={k: _spread(v) for k, v in per_rep.items() if not k.endswith('peak_mib')},
                   infer_parts={n: {p: _median([r['infer'][n]['parts'][p] * 1000 for r in ok if n in r['infer']])
                                    for p in INFER_PARTS} for n in dets},
                   detections={n: _median([r['infer'][n]['detections'] for r in ok if n in r['infer']])
                               for n in dets},
                   train_parts={p: _median([r['train']['parts'][p] for r in ok if r.get('train')])
                                for p in TRAIN_PARTS},
                   repeats_ok=len(ok), errors=[r['error'] for r in runs if 'error' in r],
                   compile_s=_median([r['compile_s'] for r in ok if 'compile_s' in r]),
                   compile_max_abs_diff=max([r['compile_max_abs_diff'] for r in ok if 'compile_s' in r],
                                            default=None),
                   profile=first.get('profile') or {}, mem_kind=first.get('mem_kind'))
        rows.append(row)
    ref = rows[0]['values'] if rows else {}
    for row in rows:
        row['ratios'] = {k: (v / ref[k] if v is not None and ref.get(k) else None) for k, v in row['values'].items()}
    return rows


def load_summary(report: Dict) -> Dict:
    """Load averages of the run: ``min``, ``median``, ``max``, ``cores`` and ``busy`` (max load > usable cores)."""
    loads = [x for x in report.get('loads', []) if x is not None]
    cores = report['machine'].get('usable_cores') or report['machine'].get('cores') or 1
    if not loads:
        return dict(min=None, median=None, max=None, cores=cores, busy=None)
    return dict(min=min(loads), median=statistics.median(loads), max=max(loads), cores=cores,
                busy=max(loads) > cores)


def busy_warning(report: Dict) -> Optional[str]:
    """A warning sentence when the machine was busy during the run (else None)."""
    load = load_summary(report)
    if not load['busy']:
        return None
    return (f'BUSY MACHINE: the 1-minute load average reached {load["max"]:.1f} (median {load["median"]:.1f}) on '
            f'{load["cores"]} usable cores: other processes competed for the CPU, absolute times are inflated and '
            f'noisy; the ratios (interleaved runs) are the more reliable figures.')


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None:
        return '-'
    if value == 0:
        return '0'
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(digits - 1 - magnitude, 0)
    return f'{value:,.{decimals}f}'


def _cell(row: Dict, key: str, reference: bool) -> str:
    value = row['values'].get(key)
    if value is None:
        return '-'
    if reference:
        return _fmt(value)
    ratio = row['ratios'].get(key)
    return f'{_fmt(value)} ({_fmt(ratio, 2)}x)' if ratio is not None else _fmt(value)


def table_rows(report: Dict, cols: Optional[List[Tuple[str, str]]] = None) -> List[List[str]]:
    """A summary table as a header row and one row per model (the reference absolute, the others with their
    ratio to it in parentheses). ``cols``: :func:`columns` (default) or :func:`cpu_columns`."""
    rows = summarize(report)
    main = cols is None
    cols = columns(report['settings']) if main else cols
    top = str(max(report['settings']['dets']))
    body = [['model'] + [h for _, h in cols] + ([f'dets kept @{top}'] if main else [])]
    for i, row in enumerate(rows):
        cells = [row['name'] + (' (reference)' if i == 0 else '')]
        cells += [_cell(row, key, i == 0) for key, _ in cols]
        if main:
            kept = row['detections'].get(top)
            cells.append(_fmt(kept) if kept is not None else '-')
        if row['errors'] and not row['repeats_ok']:
            cells[1:] = ['failed'] * (len(cells) - 1)
        body.append(cells)
    return body


def format_table(report: Dict) -> str:
    """The summary table for a terminal (terminaltables), with the load line and the busy warning."""
    from terminaltables import AsciiTable
    lines = []
    for title, cols in ((' models vs the first (ratio in parentheses) ', None),
                        (' CPU time of the measuring process (less sensitive to load) ',
                         cpu_columns(report['settings']))):
        table = AsciiTable(table_rows(report, cols), title=title)
        for col in range(1, len(table.table_data[0])):
            table.justify_columns[col] = 'right'
        lines.append(table.table)
    load = load_summary(report)
    if load['max'] is not None:
        lines.append(f'load average {load["min"]:.1f}-{load["max"]:.1f} (median {load["median"]:.1f}) on '
                     f'{load["cores"]} usable cores')
    warning = busy_warning(report)
    if warning:
        lines.append('WARNING: ' + warning)
    return '\n'.join(lines)


def _md_table(rows: List[List[str]]) -> List[str]:
    out = ['| ' + ' | '.join(rows[0]) + ' |', '|' + '|'.join(['---'] + ['--:'] * (len(rows[0]) - 1)) + '|']
    out += ['| ' + ' | '.join(r) + ' |' for r in rows[1:]]
    return out


def format_markdown(report: Dict) -> str:
    """The whole report as markdown: machine, settings, load, the summary table, time by part, spreads, profile."""
    m, s = report['machine'], report['settings']
    rows = summarize(report)
    load = load_summary(report)
    dev = m['device'] + (f' ({m["device_name"]})' if m.get('device_name') else '')
    out = [f'# Model benchmark ({report["started"]})', '',
           f'- machine: {m["cpu"]}, {m["cores"]} cores ({m["usable_cores"]} usable), '
           f'{m.get("mem_gib", "?")} GiB; device {dev}; torch {m["torch"]} ({m["torch_threads"] or "default"} '
           f'threads), torchvision {m.get("torchvision")}, mmdet {m.get("mmdet")}, mmcv {m.get("mmcv")}, '
           f'timm {m.get("timm")}, Python {m["python"]}',
           f'- settings: {s["img_size"]}x{s["img_size"]} input, training batch {s["train_batch"]}, inference '
           f'batch 1, {s["repeats"]} repeat(s) interleaved x {s["steps"]} timed step(s) after {s["warmup"]} '
           f'warm-up step(s), random weights; data: {report["data"]}; wall time {report["wall_s"]:.0f} s',
           f'- memory: {rows[0]["mem_kind"] if rows else "-"}' + (
               '' if m['device'].startswith('cuda') else ' (whole process: Python, libraries, model and data)')]
    if load['max'] is not None:
        out.append(f'- load average (1 min, sampled around every process): {load["min"]:.1f}-{load["max"]:.1f}, '
                   f'median {load["median"]:.1f}, on {load["cores"]} usable cores')
    warning = busy_warning(report)
    if warning:
        out += ['', f'> **{warning}**']
    out += ['', '## Summary (reference absolute; the others: value (ratio to the reference))', '']
    out += _md_table(table_rows(report))
    out += ['', 'Ratios: value / reference value of the same column (train img/s: > 1 is faster; times and '
            f'memory: < 1 is better). GFLOPs: dense part + box head x proposals + mask head x {s["dets"][0]} '
            'detections.']
    out += ['', '## CPU time (process CPU seconds of the measuring process; less sensitive to load than wall time)',
            '']
    out += _md_table(table_rows(report, cpu_columns(s)))
    for n in [str(d) for d in s['dets']]:
        out += ['', f'## Inference by part, ms/image at {n} detections (median)', '']
        table = [['model'] + list(INFER_PARTS) + ['total', 'dets kept']]
        for row in rows:
            parts = row['infer_parts'][n]
            table.append([row['name']] + [_fmt(parts[p]) for p in INFER_PARTS] +
                         [_fmt(row['values'].get(f'infer_ms_{n}')), _fmt(row['detections'][n])])
        out += _md_table(table)
    out += ['', '## Training by part, seconds/iteration (median)', '']
    table = [['model'] + list(TRAIN_PARTS) + ['total']]
    for row in rows:
        if row['values'].get('train_img_s'):
            total = s['train_batch'] / row['values']['train_img_s']
            table.append([row['name']] + [_fmt(row['train_parts'][p]) for p in TRAIN_PARTS] + [_fmt(total)])
    out += _md_table(table)
    out += ['', '## Spread over repeats ((max - min) / median; "-" with one repeat)', '']
    keys = ['train_img_s', 'train_cpu_s'] + [f'infer_{k}ms_{n}' for n in s['dets'] for k in ('', 'cpu_')]
    table = [['model'] + keys + ['repeats ok']]
    for row in rows:
        table.append([row['name']] + [('-' if row['spreads'].get(k) is None else f'{100 * row["spreads"][k]:.0f} %')
                                      for k in keys] + [str(row['repeats_ok'])])
    out += _md_table(table)
    compiled = [row for row in rows if row.get('compile_s') is not None]
    if compiled:
        out += ['', '## torch.compile (backbone + neck, inductor)', '']
        out += [f'- {row["name"]}: compiling (first call) {row["compile_s"]:.1f} s; compiled vs eager features '
                f'max |difference| {row["compile_max_abs_diff"]:.1e}' for row in compiled]
    errors = [(row['name'], e) for row in rows for e in row['errors']]
    if errors:
        out += ['', '## Failed measurements', ''] + [f'- {name}: {e}' for name, e in errors]
    if any(row['profile'] for row in rows):
        out += ['', '## Profile: top operators by self time per part (ms, one step)', '']
        for row in rows:
            for phase, parts in row['profile'].items():
                out.append(f'- **{row["name"]}**, {phase}:')
                for part, ops in sorted(parts.items()):
                    out.append(f'  - {part}: ' + ', '.join(f'{op} {ms:.1f}' for op, ms in ops))
    return '\n'.join(out) + '\n'


def format_profile(report: Dict) -> str:
    """The profile as plain text (top operators per model, phase and part)."""
    lines = []
    for row in summarize(report):
        for phase, parts in row['profile'].items():
            lines.append(f'{row["name"]} - {phase}')
            for part, ops in sorted(parts.items()):
                lines.append(f'  {part:>14}: ' + ', '.join(f'{op} {ms:.1f} ms' for op, ms in ops))
    return '\n'.join(lines)


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == '--worker':
        _worker_main(sys.argv[2:])
    else:
        sys.exit('internal entry point of the model benchmark; run tools/benchmarks/bench_models.py')


# ----------------------------------------------------------------------------------------------------------------
# Evaluation backends (tools/benchmarks/bench_eval.py)
# ----------------------------------------------------------------------------------------------------------------
def synthetic_coco_results(gt: Dict, per_image: int = 1000, copies: int = 8, seed: int = 0) -> List[Dict]:
    """COCO results with exactly ``per_image`` detections on every image of ``gt``, a detector's worst case.

    Per image: ``copies`` jittered copies of each ground-truth instance (polygons scaled by U(0.8, 1.2) per axis
    about the box centre and shifted by N(0, sigma) x its box size, sigma cycling over 0.02 / 0.05 / 0.1 / 0.2;
    10% of them relabelled to a random category), then random rotated rectangles (sides log-uniform in 2..600 px,
    so every iSAID size band gets detections) of random categories until ``per_image``. Scores are U(0, 1). Masks
    are compressed RLEs (``counts`` as str) on the image's size; each ``bbox`` is its mask's extent (xywh, px).

    Args:
        gt (dict): a COCO instances json (polygon segmentations), e.g. the devkit's ``instancesonly_filtered_val``.
        per_image (int): detections per image. Defaults to 1000 (the iSAID protocol's budget).
        copies (int): jittered copies per ground-truth instance (fewer when they would exceed ``per_image``).
        seed (int): NumPy seed; the same inputs give the same list.

    Returns:
        list[dict]: ``{image_id, category_id, score, bbox, segmentation}`` entries, image by image.
    """
    import numpy as np
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(seed)
    cat_ids = [c['id'] for c in gt['categories']]
    by_image: Dict[int, list] = {}
    for ann in gt['annotations']:
        if isinstance(ann.get('segmentation'), list) and ann['segmentation']:
            by_image.setdefault(ann['image_id'], []).append(ann)
    sigmas = (0.02, 0.05, 0.1, 0.2)
    results = []
    for img in gt['images']:
        height, width = img['height'], img['width']
        anns = by_image.get(img['id'], [])
        polygons = []
        for k in range(min(copies * len(anns), per_image)):
            ann = anns[k % len(anns)]
            x, y, w, h = ann['bbox']
            centre = np.array([x + w / 2, y + h / 2])
            scale = rng.uniform(0.8, 1.2, 2)
            shift = rng.normal(0, sigmas[(k // len(anns)) % len(sigmas)], 2) * [w, h]
            polys = [((np.asarray(p, float).reshape(-1, 2) - centre) * scale + centre + shift).ravel().tolist()
                     for p in ann['segmentation']]
            cat = ann['category_id'] if rng.random() >= 0.1 else int(rng.choice(cat_ids))
            polygons.append((polys, cat))
        while len(polygons) < per_image:
            w, h = np.exp(rng.uniform(np.log(2), np.log(600), 2))
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            angle = rng.uniform(0, np.pi)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2 @ rot.T + [cx, cy]
            polygons.append(([corners.ravel().tolist()], int(rng.choice(cat_ids))))
        for polys, cat in polygons:
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
            bbox = mask_utils.toBbox(rle).tolist()
            rle['counts'] = rle['counts'].decode()
            results.append(dict(image_id=img['id'], category_id=cat, score=float(rng.random()), bbox=bbox,
                                segmentation=rle))
    return results


def time_eval_backends(gt_file: str, results: Sequence[Dict], backends: Sequence[str] = ('pycocotools',
                                                                                         'faster-coco-eval'),
                       iou_types: Sequence[str] = ('segm', 'bbox'), protocol: str = 'isaid', repeats: int = 3,
                       classes: Optional[Sequence[str]] = None) -> Dict:
    """Time :func:`~mmdet_custom.evaluation.functional.evaluate_coco_reports` per backend and IoU type, interleaved.

    A run is one ``evaluate_coco_reports(coco_gt, results, [iou_type], protocol, backend=...)`` call: loading the
    results (``loadRes``), ``evaluate``, ``accumulate`` and reading the 12 summary numbers, i.e. what
    ``MaxDetsCocoMetric`` spends per IoU type after writing its results file. The ground truth is loaded fresh
    before each run, untimed (both backends write into its annotations). One untimed warm-up run per backend on 100
    results, then repeats interleave the backends. Wall time
    and process CPU time (all threads: faster-coco-eval computes mask IoUs on a thread pool) are recorded.

    Args:
        gt_file (str): ground-truth COCO json.
        results (Sequence[dict]): COCO results (e.g. :func:`synthetic_coco_results`).
        backends (Sequence[str]): backends to compare; the first is the reference of the ratios.
        iou_types (Sequence[str]): ``'segm'`` and/or ``'bbox'``.
        protocol (str): ``'isaid'`` (default) or ``'coco'``.
        repeats (int): runs per backend and IoU type.
        classes (Sequence[str], optional): class names (categories matched by name). Default: the json's.

    Returns:
        dict: ``rows`` (one per backend and IoU type: ``backend``, ``iou_type``, ``wall_s`` and ``cpu_s``
        (median over repeats), ``spread`` ((max - min) / median of wall time), ``ratio`` (the reference backend's
        median wall time over this one's: the speed-up), ``cpu_ratio``), ``differences`` (IoU type -> the largest
        absolute difference of any backend's 12 summary numbers and per-class APs from the reference's),
        ``identical`` (IoU type -> that difference <= 1e-12: the same numbers up to float rounding), ``stats``
        (backend -> IoU type -> summary numbers), ``detections``, ``images``, ``loads`` (1-minute load averages
        before and after) and ``machine`` (CPU model, cores, versions).
    """
    import importlib.metadata

    from mmdet_custom.evaluation.functional import evaluate_coco_reports, load_coco_gt
    iou_types = list(iou_types)
    times = {(b, t): [] for b in backends for t in iou_types}
    cpu = {(b, t): [] for b in backends for t in iou_types}
    reports = {}
    loads = [load_average()]
    for backend in backends:  # warm-up, untimed: imports, first-call allocations
        evaluate_coco_reports(load_coco_gt(gt_file, iou_types, what=gt_file), results[:100], iou_types[:1],
                              protocol, classes, gt_name=gt_file,
                              **({} if backend == 'pycocotools' else dict(backend=backend)))
    for _ in range(repeats):
        for iou_type in iou_types:
            for backend in backends:
                coco_gt = load_coco_gt(gt_file, iou_types, what=gt_file)
                kwargs = {} if backend == 'pycocotools' else dict(backend=backend)  # pycocotools: the default
                t0, c0 = time.perf_counter(), time.process_time()
                report = evaluate_coco_reports(coco_gt, results, [iou_type], protocol, classes, gt_name=gt_file,
                                               **kwargs)[0]
                times[backend, iou_type].append(time.perf_counter() - t0)
                cpu[backend, iou_type].append(time.process_time() - c0)
                reports[backend, iou_type] = report
    loads.append(load_average())
    ref = backends[0]
    rows = []
    for iou_type in iou_types:
        for backend in backends:
            wall, cpu_s = _median(times[backend, iou_type]), _median(cpu[backend, iou_type])
            rows.append(dict(backend=backend, iou_type=iou_type, wall_s=wall, cpu_s=cpu_s,
                             spread=_spread(times[backend, iou_type]),
                             ratio=_median(times[ref, iou_type]) / wall if wall else None,
                             cpu_ratio=_median(cpu[ref, iou_type]) / cpu_s if cpu_s else None))

    def difference(a, b) -> float:
        """Largest |a - b| over the summary numbers and per-class APs (inf: other names, or NaN against a number)."""
        pairs = [(a.stats[k], b.stats.get(k, math.inf)) for k in a.stats]
        if [n for n, _ in a.per_class] != [n for n, _ in b.per_class] or list(a.stats) != list(b.stats):
            return math.inf
        pairs += [(x, y) for (_, va), (_, vb) in zip(a.per_class, b.per_class) for x, y in zip(va, vb)]
        return max([0.0] + [0.0 if x != x and y != y else abs(x - y) if x == x and y == y else math.inf
                            for x, y in pairs])

    differences = {t: max(difference(reports[ref, t], reports[b, t]) for b in backends) for t in iou_types}
    versions = {}
    for package in ('pycocotools', 'faster-coco-eval'):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    machine = dict(cpu=_cpu_model(), cores=os.cpu_count(), usable_cores=usable_cores(),
                   python=platform.python_version(), **versions)
    return dict(rows=rows, identical={t: d <= 1e-12 for t, d in differences.items()}, differences=differences,
                loads=loads, machine=machine, protocol=protocol,
                repeats=repeats, detections=len(results), images=len({r['image_id'] for r in results}),
                stats={b: {t: dict(reports[b, t].stats) for t in iou_types} for b in backends})


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')),
                        platform.machine())
    except OSError:
        return platform.processor() or platform.machine()


def format_eval_table(result: Dict) -> str:
    """The backend timings as a plain table (seconds, speed-up vs the first backend), the equality verdict per IoU
    type, and the machine and load."""
    from mmdet_custom.utils.tables import plain_table
    rows = [['iou_type', 'backend', 'wall s', 'spread', 'speed-up', 'CPU s', 'CPU speed-up']]
    for r in result['rows']:
        rows.append([r['iou_type'], r['backend'], _fmt(r['wall_s']),
                     '-' if r['spread'] is None else f'{r["spread"]:.0%}', f'{_fmt(r["ratio"], 2)}x',
                     _fmt(r['cpu_s']), f'{_fmt(r["cpu_ratio"], 2)}x'])
    machine, loads = result['machine'], [x for x in result['loads'] if x is not None]
    lines = [f'{result["detections"]} detections on {result["images"]} images, {result["protocol"]} protocol, '
             f'median of {result["repeats"]} interleaved runs per backend (evaluate_coco_reports: loadRes + '
             f'evaluate + accumulate + summary)', plain_table(rows, right_columns=[2, 3, 4, 5, 6])]
    for iou_type, same in result['identical'].items():
        diff = result['differences'][iou_type]
        lines.append(f'{iou_type}: the 12 summary numbers and per-class APs of every backend are '
                     + ('IDENTICAL to the first' if same else 'NOT identical (see --out-json stats)')
                     + (' (exactly equal)' if diff == 0 else f' (largest difference {diff:.1e})'))
    load = f'load {min(loads):.1f}-{max(loads):.1f}' if loads else 'load unknown'
    lines.append(f'machine: {machine["cpu"]}, {machine["usable_cores"]}/{machine["cores"]} usable cores, {load}; '
                 f'pycocotools {machine.get("pycocotools")}, faster-coco-eval {machine.get("faster-coco-eval")}')
    return '\n'.join(lines)
