"""Dense-scene training cost: one training step on patches with 100 to thousands of objects.

iSAID is known for dense patches (https://github.com/CAPTAIN-WHU/iSAID_Devkit/issues/27: one 800 x 800 patch with
1,239 instances; https://github.com/open-mmlab/mmdetection/issues/6525: images with more than 3,000 annotations).
:func:`run_dense_benchmark` writes a COCO json of ``N`` objects per patch (polygons like the devkit's json: small
rotated rectangles in parking-lot rows), then, per (config, ``N``, variant), runs *one* training step in a fresh
process: the config's own train dataset class and pipeline load two patches, ``model.train_step`` runs forward,
backward and the optimizer (random weights). A parent thread polls the
child's resident memory and stops it above ``max_gib`` so a run cannot take the machine down.

Variants:

- ``mmdet``: mmdet's ``MaxIoUAssigner`` in the RPN and RoI stages and mmdet's ``LoadAnnotations`` (bitmaps):
  the configs as they were before :class:`~mmdet_custom.models.task_modules.SparseMaxIoUAssigner`;
- ``ours``: the config as shipped (``SparseMaxIoUAssigner``, polygons kept by ``LoadCompactAnnotations``).
"""
import copy
import json
import math
import os
import os.path as osp
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from mmdet.registry import DATASETS
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from torch.profiler import ProfilerActivity

from mmdet_custom.analysis.benchmark import init_weights_quietly, machine_info, resolve_config
from mmdet_custom.analysis.resources import PeakMemory
from mmdet_custom.datasets.utils import innermost_dataset_cfg
from mmdet_custom.models.builder import build_model
from mmdet_custom.utils.config import read_config
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES

__all__ = ['DEFAULT_CONFIGS', 'DEFAULT_OBJECTS', 'VARIANTS', 'write_dense_dataset', 'measure_dense_step',
           'run_dense_benchmark', 'format_markdown']

DEFAULT_CONFIGS = {
    'R50, stock anchors': 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py',
    'full model (6 anchors/location)': 'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py',
}
DEFAULT_OBJECTS = (100, 500, 1239, 3000)
VARIANTS = ('mmdet', 'ours')
_GIB = 2.0**30


def _vehicle(cx: float, cy: float, length: float, width: float, angle: float) -> List[float]:
    """A rotated rectangle as a COCO polygon ``[x0, y0, x1, y1, ...]`` (8 numbers)."""
    c, s = math.cos(angle), math.sin(angle)
    pts = []
    for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        x, y = dx * length / 2, dy * width / 2
        pts += [round(cx + c * x - s * y, 2), round(cy + s * x + c * y, 2)]
    return pts


def write_dense_dataset(root: str, num_objects: int, img_size: int = 800, num_images: int = 2,
                        seed: int = 0) -> Dict[str, str]:
    """Write ``num_images`` patches of ``num_objects`` polygon objects each, in COCO format with iSAID's classes.

    Objects fill a jittered grid (parking-lot rows): side ~ lognormal around 14 px (iSAID's median), capped by the
    grid pitch, aspect ~2:1, any angle; mostly Small_Vehicle and Large_Vehicle, a few of every other class.

    Args:
        root (str): output folder (``images/``, ``annotations.json``).
        num_objects (int): objects per patch, >= 0.
        img_size (int): patch side in pixels. Defaults to 800.
        num_images (int): patches. Defaults to 2.
        seed (int): random seed. Defaults to 0.

    Returns:
        dict: ``ann_file``, ``img_dir`` (absolute paths).
    """
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    cells = max(1, math.ceil(math.sqrt(num_objects)))
    pitch = img_size / cells
    weights = np.full(len(ISAID_CLASSES), 0.01)
    weights[ISAID_CLASSES.index('Small_Vehicle')] = 0.6
    weights[ISAID_CLASSES.index('Large_Vehicle')] = 0.3
    weights /= weights.sum()
    images, annotations = [], []
    for i in range(num_images):
        name = f'dense_{num_objects}_{i}.png'
        img = rng.integers(0, 255, (img_size // 8, img_size // 8, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(root, 'images', name), cv2.resize(img, (img_size, img_size)))
        images.append(dict(id=i, file_name=name, width=img_size, height=img_size))
        slots = rng.permutation(cells * cells)[:num_objects]
        for slot in slots:
            length = float(min(np.exp(rng.normal(math.log(14), 0.4)), 0.9 * pitch * math.sqrt(2)))
            length = max(length, 4.0)
            width = max(length / 2, 3.0)
            cx = (slot % cells + 0.5 + rng.uniform(-0.2, 0.2)) * pitch
            cy = (slot // cells + 0.5 + rng.uniform(-0.2, 0.2)) * pitch
            poly = _vehicle(cx, cy, length, width, float(rng.uniform(0, math.pi)))
            xs, ys = poly[0::2], poly[1::2]
            x0, y0 = max(min(xs), 0), max(min(ys), 0)
            x1, y1 = min(max(xs), img_size), min(max(ys), img_size)
            annotations.append(dict(id=len(annotations), image_id=i, iscrowd=0, area=length * width,
                                    category_id=int(rng.choice(len(ISAID_CLASSES), p=weights)) + 1,
                                    bbox=[x0, y0, x1 - x0, y1 - y0], segmentation=[poly]))
    categories = [dict(id=k + 1, name=name) for k, name in enumerate(ISAID_CLASSES)]
    ann_file = osp.join(root, 'annotations.json')
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    return dict(ann_file=osp.abspath(ann_file), img_dir=osp.abspath(osp.join(root, 'images')))


def _as_mmdet_baseline(cfg) -> None:
    """mmdet's MaxIoUAssigner and bitmap LoadAnnotations in place of the project's (same arguments otherwise)."""
    for stage in ('rpn', 'rcnn'):
        stages = cfg.model.train_cfg[stage]
        for s in (stages if isinstance(stages, list) else [stages]):
            if s.get('assigner', {}).get('type') == 'SparseMaxIoUAssigner':
                s.assigner.type = 'MaxIoUAssigner'
                s.assigner.pop('max_pairs', None)
                s.assigner.pop('group_size', None)
    for step in cfg.train_dataloader.dataset.pipeline:
        if step.get('type') == 'LoadCompactAnnotations':
            step['type'] = 'LoadAnnotations'
            step.pop('poly2mask', None)


def measure_dense_step(config: str, ann_file: str, img_dir: str, variant: str = 'ours', device: str = 'cpu',
                       threads: Optional[int] = None, seed: int = 0, profile: bool = False, steps: int = 1) -> Dict:
    """``steps`` training steps on one batch (the images of ``ann_file``) of ``config``, in this process; the last
    is timed (``steps=2``: a warm step, without the first step's one-off allocations and kernel set-up).

    Returns:
        dict: ``load_s`` (dataset + pipeline of the batch), ``step_s`` (the last ``model.train_step``),
        ``step_s_all`` (every step), ``peak_gib`` (peak
        RSS of the process, or CUDA max allocated on a GPU), ``instances`` (objects of the batch that reached the
        model),
        ``losses`` (name -> value), ``profile`` (top operators by self CPU time and by self CPU memory, with
        ``profile=True``).
    """


    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    cfg = read_config(resolve_config(config))
    if variant == 'mmdet':
        _as_mmdet_baseline(cfg)
    elif variant != 'ours':
        raise ValueError(f'variant must be one of {VARIANTS}, got {variant!r}')
    cuda = device.startswith('cuda')
    memory = PeakMemory(cuda)
    model = build_model(cfg, device=device)
    init_weights_quietly(model)
    model.train()
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    dataset_cfg = copy.deepcopy(innermost_dataset_cfg(cfg.train_dataloader.dataset))
    dataset_cfg.update(data_root='', ann_file=ann_file, data_prefix=dict(img=img_dir + '/'),
                       filter_cfg=dict(filter_empty_gt=False, min_size=0))
    memory.start()
    start = time.perf_counter()
    dataset = DATASETS.build(dataset_cfg)
    batch = pseudo_collate([dataset[i] for i in range(len(dataset))])
    load_s = time.perf_counter() - start
    instances = sum(len(s.gt_instances) for s in batch['data_samples'])
    prof = None
    if profile:
        prof = torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        prof.__enter__()
    step_times = []
    for _ in range(max(1, steps)):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        losses = model.train_step(batch, optim_wrapper)
        if cuda:
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - start)
    result = dict(load_s=load_s, step_s=step_times[-1], step_s_all=step_times, peak_gib=memory.peak_mib() / 1024,
                  mem_kind=memory.kind, steps=len(step_times),
                  instances=instances, threads=torch.get_num_threads(),
                  losses={k: v.item() for k, v in losses.items()})
    if prof is not None:
        prof.__exit__(None, None, None)
        table = prof.key_averages()
        result['profile'] = dict(
            time=[(e.key, e.self_cpu_time_total / 1e3) for e in sorted(table, key=lambda e: -e.self_cpu_time_total)
                  [:10]],
            memory=[(e.key, e.self_cpu_memory_usage / _GIB)
                    for e in sorted(table, key=lambda e: -e.self_cpu_memory_usage)[:10]])
    return result


def _rss_gib(pid: int) -> float:
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024 / _GIB
    except OSError:
        pass
    return 0.0


def _run_capped(cmd: Sequence[str], max_gib: float, timeout: Optional[float]) -> Dict:
    """Run ``cmd``; kill it when its resident memory passes ``max_gib`` or it runs past ``timeout`` seconds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = dict(stopped=None, max_seen=0.0)
    out: List[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    start = time.perf_counter()
    while proc.poll() is None:
        rss = _rss_gib(proc.pid)
        state['max_seen'] = max(state['max_seen'], rss)
        if rss > max_gib:
            state['stopped'] = f'stopped above {max_gib:g} GiB'
        elif timeout and time.perf_counter() - start > timeout:
            state['stopped'] = f'stopped after {timeout:g} s'
        if state['stopped']:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    reader.join(timeout=5)
    return dict(returncode=proc.returncode, output=''.join(out)[-3000:], **state)


def run_dense_benchmark(configs: Dict[str, str], objects: Sequence[int] = DEFAULT_OBJECTS,
                        variants: Sequence[str] = VARIANTS, max_gib: float = 20.0, img_size: int = 800,
                        batch: int = 2, device: str = 'cpu', threads: Optional[int] = None,
                        timeout: Optional[float] = None, profile: bool = False, steps: int = 1,
                        progress=print) -> Dict:
    """Every (config, objects, variant) step in its own process; returns the report for :func:`format_markdown`.

    Raises nothing for a failed or stopped step: its row says why (``stopped``, ``error``).
    """
    report = dict(machine=machine_info(device), img_size=img_size, batch=batch, max_gib=max_gib, steps=steps,
                  date=time.strftime('%Y-%m-%d'), rows=[])
    with tempfile.TemporaryDirectory(prefix='bench_dense_') as tmp:
        for n in objects:
            data = write_dense_dataset(osp.join(tmp, f'n{n}'), n, img_size=img_size, num_images=batch)
            for name, config in configs.items():
                for variant in variants:
                    job = dict(config=config, variant=variant, device=device, threads=threads, profile=profile,
                               steps=steps, **data)
                    job_file, out_file = osp.join(tmp, 'job.json'), osp.join(tmp, 'out.json')
                    with open(job_file, 'w') as f:
                        json.dump(job, f)
                    if osp.exists(out_file):
                        os.remove(out_file)
                    run = _run_capped([sys.executable, '-m', 'mmdet_custom.analysis.dense_bench', '--worker',
                                       job_file, out_file], max_gib, timeout)
                    row = dict(model=name, config=config, objects=n, variant=variant, stopped=run['stopped'],
                               max_rss_seen_gib=run['max_seen'])
                    if run['stopped'] is None and run['returncode'] == 0 and osp.exists(out_file):
                        with open(out_file) as f:
                            row.update(json.load(f))
                    elif run['stopped'] is None:
                        row['error'] = run['output'].strip().splitlines()[-1:] or [f'exit {run["returncode"]}']
                    report['rows'].append(row)
                    progress(_progress(row))
    return report


def _progress(row: Dict) -> str:
    head = f"{row['model']:<34} {row['objects']:>5} objects  {row['variant']:<5}"
    if row.get('stopped'):
        return f"{head}  {row['stopped']} (seen {row['max_rss_seen_gib']:.1f} GiB)"
    if row.get('error'):
        return f"{head}  failed: {row['error']}"
    return f"{head}  peak {row['peak_gib']:.2f} GiB  step {row['step_s']:.1f} s  load {row['load_s']:.1f} s"


def _cell(row: Optional[Dict]) -> str:
    if row is None:
        return ''
    if row.get('stopped'):
        return f"{row['stopped']}"
    if row.get('error'):
        return 'failed'
    return f"{row['peak_gib']:.2f} GiB, {row['load_s'] + row['step_s']:.1f} s"


def format_markdown(report: Dict) -> str:
    """The report as a markdown table: per model and object count, each variant's peak memory and seconds
    (pipeline + step), and ours relative to ours at the smallest object count (the targets' ratios)."""
    rows = report['rows']
    machine = report['machine']
    steps = report.get('steps', 1)
    timed = 'one cold training step' if steps == 1 else f'training step {steps} of {steps} (warm)'
    lines = [f"Seconds: dataset + pipeline of the batch + {timed}; batch {report['batch']}, {report['img_size']} px, "
             f"random weights, "
             f"{machine.get('device_name') or machine.get('cpu', '')} ({machine.get('cores', '?')} cores, "
             f"{machine.get('mem_gib', '?')} GiB), torch {machine.get('torch')}, "
             f"{report['date']}; peak memory = {rows[0].get('mem_kind', 'peak RSS') if rows else ''}; "
             f"runs above {report['max_gib']:g} GiB are stopped.", '',
             '| model | objects / patch | mmdet (MaxIoUAssigner, bitmaps) | ours '
             '| ours: memory, time vs fewest objects |',
             '|---|--:|---|---|---|']
    for model in dict.fromkeys(r['model'] for r in rows):
        ours = [r for r in rows if r['model'] == model and r['variant'] == 'ours' and 'peak_gib' in r]
        base = min(ours, key=lambda r: r['objects']) if ours else None
        for n in sorted({r['objects'] for r in rows if r['model'] == model}):
            get = {r['variant']: r for r in rows if r['model'] == model and r['objects'] == n}
            o = get.get('ours')
            ratio = ''
            if base is not None and o is not None and 'peak_gib' in o:
                t0 = base['load_s'] + base['step_s']
                ratio = f"{o['peak_gib'] / base['peak_gib']:.2f}x, {(o['load_s'] + o['step_s']) / t0:.2f}x"
            lines.append(f'| {model} | {n} | {_cell(get.get("mmdet"))} | {_cell(o)} | {ratio} |')
    return '\n'.join(lines) + '\n'


def _worker_main(argv: Sequence[str]) -> None:
    """Subprocess entry: ``python -m mmdet_custom.analysis.dense_bench --worker JOB.json OUT.json``."""
    with open(argv[0]) as f:
        job = json.load(f)
    result = measure_dense_step(**job)
    with open(argv[1], 'w') as f:
        json.dump(result, f)


if __name__ == '__main__' and len(sys.argv) == 4 and sys.argv[1] == '--worker':
    _worker_main(sys.argv[2:])
