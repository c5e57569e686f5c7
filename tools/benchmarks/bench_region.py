"""Region-scale scene inference on the CPU: scenes per minute with 1 and 2 processes on the same scene list, and
the time of a rerun after a kill at 50 %.

``python tools/benchmarks/bench_region.py [--scenes 8] [--size 512] [--work-dir work_dirs/bench_region]``

Each run writes into a new ``run-*`` folder under ``--work-dir`` (nothing there is replaced or deleted).

Writes ``--scenes`` synthetic scenes and a random-init ResNet-18 Mask R-CNN checkpoint (the smoke config), then runs
``tools/infer_scene.py`` (``--window 256 --overlap 64 --threads 1 --num-workers 0``) as separate processes:

1. one process over the scene list;
2. two processes at once, ``--shard 0/2`` and ``--shard 1/2`` (1 torch thread each);
3. one process killed (SIGKILL) once half of the scenes are complete, then rerun: the rerun's time against the
   uninterrupted run's.

Times are wall-clock seconds of whole commands (start-up and model build included); ``cores_used`` is the CPU time
of the processes over their wall time (2 processes can only gain when 2 cores are free). The last line is a json of
the figures. Numbers depend on the machine's load: run it on an idle machine, or compare within one run.
"""
import argparse
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import tempfile
import time

from mmdet_custom.analysis.resources import load_average
from mmdet_custom.utils.cli import add_device, run_cli
from mmdet_custom.utils.paths import config_path

TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = str(config_path('mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Region inference: 1 vs 2 processes, rerun after a kill')
    parser.add_argument('--scenes', type=int, default=8, help='number of scenes (default: 8)')
    parser.add_argument('--size', type=int, default=512, help='scene side in pixels (default: 512)')
    parser.add_argument('--work-dir', default='work_dirs/bench_region',
                        help='each run writes into a new run-* folder under it')
    add_device(parser, 'cpu')
    return parser.parse_args(argv)


def _prepare(work: str, scenes: int, size: int):
    import cv2
    import numpy as np
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmdet_custom.utils.isaid_meta import ISAID_CLASSES
    os.makedirs(osp.join(work, 'in'))
    rng = np.random.RandomState(0)
    paths = []
    for k in range(scenes):
        path = osp.join(work, 'in', f'scene{k:03d}.png')
        cv2.imwrite(path, rng.randint(0, 255, (size, size, 3), dtype=np.uint8))
        paths.append(path)
    with open(osp.join(work, 'scenes.txt'), 'w') as f:
        f.write('\n'.join(paths) + '\n')
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(CONFIG).model)
    ckpt = osp.join(work, 'random.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=ISAID_CLASSES))), ckpt)
    return ckpt


def _cmd(ckpt, work, out, *extra, device='cpu'):
    return [sys.executable, osp.join(TOOLS, 'infer_scene.py'), CONFIG, ckpt, osp.join(work, 'scenes.txt'),
            '--out-dir', osp.join(work, out), '--device', device, '--threads', '1', '--num-workers', '0',
            '--window', '256', '--overlap', '64', '--no-progress', '--overlay-max-side', '512', *extra]


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1')


def _cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    times = os.times()
    return times.children_user + times.children_system


def _run(cmds):
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise SystemExit(f'failed ({p.returncode}): {err[-2000:]}')
    return time.perf_counter() - start, [o for o, _ in outs]


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix='run-', dir=osp.abspath(args.work_dir))
    ckpt = _prepare(work, args.scenes, args.size)
    load = load_average()
    cpu = _cpu()
    one, _ = _run([_cmd(ckpt, work, 'one', device=args.device)])
    cpu_one, cpu = _cpu() - cpu, _cpu()
    two, _ = _run([_cmd(ckpt, work, 'two', '--shard', f'{r}/2', device=args.device) for r in (0, 1)])
    cpu_two = _cpu() - cpu
    killed = subprocess.Popen(_cmd(ckpt, work, 'killed', device=args.device), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    start = time.perf_counter()
    scenes_dir = osp.join(work, 'killed', 'scenes')

    def complete():
        return sum(osp.isfile(osp.join(scenes_dir, d, 'scene.json')) for d in
                   (os.listdir(scenes_dir) if osp.isdir(scenes_dir) else ()))
    while complete() < args.scenes // 2 and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    before_kill, done = time.perf_counter() - start, complete()
    rerun, _ = _run([_cmd(ckpt, work, 'killed', device=args.device)])
    same = all(open(osp.join(work, d, 'region', 'results.json')).read() ==
               open(osp.join(work, 'one', 'region', 'results.json')).read() for d in ('two', 'killed'))
    figures = dict(scenes=args.scenes, size=args.size, load_1min=None if load is None else round(load, 2),
                   one_process_s=round(one, 1), one_process_scenes_per_min=round(args.scenes / one * 60, 2),
                   two_processes_s=round(two, 1), two_processes_scenes_per_min=round(args.scenes / two * 60, 2),
                   speedup=round(one / two, 2), one_process_cpu_s=round(cpu_one, 1),
                   two_processes_cpu_s=round(cpu_two, 1),
                   cores_used=dict(one=round(cpu_one / one, 2), two=round(cpu_two / two, 2)),
                   killed_after_s=round(before_kill, 1), complete_at_kill=done,
                   rerun_s=round(rerun, 1), rerun_vs_uninterrupted=round(rerun / one, 2), same_results=same)
    print(f'1 process: {figures["one_process_scenes_per_min"]} scenes/min ({one:.1f} s); 2 processes: '
          f'{figures["two_processes_scenes_per_min"]} scenes/min ({two:.1f} s), {figures["speedup"]}x (cores used: '
          f'{figures["cores_used"]["one"]} and {figures["cores_used"]["two"]}); killed at '
          f'{done}/{args.scenes} scenes, rerun {rerun:.1f} s ({figures["rerun_vs_uninterrupted"]}x the whole run); '
          f'same results: {same}')
    print(json.dumps(figures))


if __name__ == '__main__':
    run_cli(main)
