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
import glob
import json
import logging
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmdet.registry import DATASETS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData

from mmdet_custom.analysis.model_stats import build_detector, count_flops
from mmdet_custom.converters.isaid import convert_isaid
from mmdet_custom.models.speedups import apply_inference_speedups
from mmdet_custom.utils.config import read_config
from mmdet_custom.utils.paths import config_path, shared_data_dir

from .bench_report import INFER_PARTS, TRAIN_PARTS, progress_line
from .part_timer import (
    PartTimer,
    infer_parts,
    profile_top_ops,
    train_parts,
    wrap_mmdet_predict,
    wrap_mmdet_train,
    wrap_torchvision,
)
from .resources import PeakMemory, load_average, usable_cores

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


@dataclass
class ModelSpec:
    """One model of the benchmark.

    Args:
        name (str): row label.
        config (str): config file (relative paths are tried against the working folder, then the shipped configs),
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
    """Path of a config file: as given (relative to the working folder), else one of the shipped configs
    (:func:`~mmdet_custom.utils.paths.config_path`: ``configs/cbam/...`` works from any folder); ``mmdet::`` and
    :data:`TORCHVISION` pass unchanged.

    Raises:
        FileNotFoundError: the file exists neither as given nor among the shipped configs.
    """
    if '::' in config or config.startswith('torchvision:'):
        return config
    if osp.isfile(config):
        return osp.abspath(config)
    try:
        return config_path(config)
    except FileNotFoundError:
        raise FileNotFoundError(f'config file not found: {config} (neither in the working folder nor among the '
                                f'shipped configs)') from None


# ----------------------------------------------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------------------------------------------
def machine_info(device: str = 'cpu') -> Dict:
    """CPU model, cores, Python / torch / torchvision / mmdet versions, torch threads and the device's name."""
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
        data = osp.join(shared_data_dir(), 'isaid_devkit')
        if not osp.isdir(data):
            return None, f'random images (no iSAID data at {data})'
    if not osp.isdir(data):
        raise FileNotFoundError(f'--data: folder not found: {data}')
    if osp.isfile(osp.join(data, 'annotations', 'instances_train.json')):
        return data, f'iSAID patches from {data}'
    if glob.glob(osp.join(data, 'train', 'images', '*_instance_id_RGB.png')):
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
    cfg = Config.fromfile(config_path('_base_/datasets/isaid_instance.py'))
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
# One model, in its own process
# ----------------------------------------------------------------------------------------------------------------
def _load_cfg(spec: ModelSpec):
    """The spec's config through :func:`~mmdet_custom.utils.config.read_config`: private ``_names`` dropped, the
    ``cfg_options`` checked (a key the config lacks raises ``ConfigKeyError``; ``+key`` adds one) and merged."""
    config = resolve_config(spec.config)
    if '::' in config:
        config = get_config(config)
    return read_config(config, spec.cfg_options)


def init_weights_quietly(model) -> None:
    """``model.init_weights()`` without mmengine's per-parameter initialisation log."""
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

    # ---- inference
    if spec.speedups and not tv:
        apply_inference_speedups(model)
    if spec.compile and not tv:
        result.update(_compile_extract_feat(model, pseudo_collate([test_samples[0]])))
    timer = PartTimer(cuda)
    if tv:
        wrap_torchvision(model, timer)
    else:
        wrap_mmdet_predict(model, timer)

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
        del timer
        if data_root:
            train_samples = _dataset_samples(data_root, 'train', img_size, num_train, with_ann=True)
        else:
            train_samples = _random_samples(img_size, num_train, seed + 1)
        cfg = _load_cfg(spec)
        torch.manual_seed(seed)
        model = build_detector(cfg)  # a fresh model: the inference one may carry speedups
        init_weights_quietly(model)
        model = model.to(device).train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        timer = PartTimer(cuda)
        wrap_mmdet_train(model, optim_wrapper, timer)

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
                        env=env, capture_output=True, text=True, timeout=timeout)
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
                    log(f'[{rep + 1}/{repeats}] {spec.name}: {progress_line(result)} '
                        f'({time.perf_counter() - t0:.0f} s, load {load_before:.1f})')
                report['runs'][spec.name].append(result)
    report['wall_s'] = time.time() - started
    return report


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == '--worker':
        _worker_main(sys.argv[2:])
    else:
        sys.exit('internal entry point of the model benchmark; run tools/benchmarks/bench_models.py')
