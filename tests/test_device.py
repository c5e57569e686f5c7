"""Device checks without a GPU: ``--device cuda`` is one clear error in every tool (mmdet_custom.utils.device), the
mmcv ops check and its advice, scripts/install.sh's CPU / CUDA decision and wheel key (refused before any download),
and ``make gpu-check`` stopping at once. Torch's view of the GPU is faked where a test needs one, so these hold on a
GPU machine too."""
import importlib.util
import os
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO_ROOT

from mmdet_custom.utils.cli import run_cli
from mmdet_custom.utils.device import (
    DeviceError,
    OpsCheckError,
    check_device,
    check_mmcv_ops,
    cuda_problem,
    explain_ops_error,
    use_device,
)

#: every tool with a --device flag, found by text (a new one is checked without being listed here)
DEVICE_TOOLS = sorted(p for p in (REPO_ROOT / 'tools').rglob('*.py') if '--device' in p.read_text())
NO_DRIVER = ('Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver '
             'from http://www.nvidia.com/Download/index.aspx')


def _raise(error):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.fixture
def no_gpu(monkeypatch):
    """torch sees no GPU, and its CUDA start-up fails as on a machine without a driver."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'init', _raise(RuntimeError(NO_DRIVER)))
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)


def test_cpu_passes_and_unknown_names_are_refused(no_gpu):
    assert check_device('cpu') == 'cpu' and check_device(None) == 'cpu'
    for bad in ('gpu', 'cpu:1', 'cuda:x', 'CUDA', 'cuda:'):
        with pytest.raises(DeviceError, match="unknown device .*use 'cpu', 'cuda' or 'cuda:N'"):
            check_device(bad)


def test_cuda_without_a_gpu_says_why_in_our_words(no_gpu, monkeypatch):
    with pytest.raises(DeviceError) as info:
        check_device('cuda')
    message = str(info.value)
    assert message.startswith("device 'cuda' cannot be used: no CUDA GPU is visible (torch.cuda.is_available() is "
                              'False: no NVIDIA GPU or driver on this machine; torch ')
    assert message.endswith('; or use --device cpu') and 'Found no NVIDIA driver' not in message
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in cuda_problem()


def test_driver_too_old_and_cpu_only_torch_name_the_fix(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'init', _raise(RuntimeError(
        'The NVIDIA driver on your system is too old (found version 12020). Please update your GPU driver by '
        'downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx')))
    problem = cuda_problem()
    assert problem.startswith(f'the NVIDIA driver is too old for torch {torch.__version__}, built for CUDA 13.0 '
                              '(the driver supports CUDA 12.2): update the driver (CUDA 13.0 needs 580.65.06 or '
                              'newer)')
    monkeypatch.setattr(torch.version, 'cuda', None)
    assert 'is a CPU-only build: install a CUDA build of torch' in cuda_problem()


def test_gpu_index_past_the_visible_ones(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert check_device('cuda') == 'cuda' and check_device('cuda:0') == 'cuda:0' and check_device(None) == 'cuda'
    with pytest.raises(DeviceError, match=r"device 'cuda:1' cannot be used: 1 GPU\(s\) visible \(cuda:0 to cuda:0\)"):
        check_device('cuda:1')


@pytest.mark.parametrize('tool', DEVICE_TOOLS, ids=[str(p.relative_to(REPO_ROOT / 'tools')) for p in DEVICE_TOOLS])
def test_every_tool_refuses_cuda_without_a_gpu_in_one_line(tool, no_gpu, capsys):
    """Each tool's ``--device`` goes through ``add_device`` and ends at parse time: one ``error:`` line, exit 2,
    before a model, config or file is touched (the other arguments are not even given)."""
    assert 'add_device(parser' in tool.read_text(), f'{tool}: --device must come from mmdet_custom.utils.cli.add_device'
    spec = importlib.util.spec_from_file_location(f'_tool_{tool.stem}', tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as info:
        run_cli(module.main, ['--device', 'cuda'])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.splitlines() == [err.strip()] and err.startswith("error: device 'cuda' cannot be used: no CUDA GPU")


def test_use_device_sets_mmengines_device_and_restores_it(monkeypatch):
    import mmengine.device.utils as mmengine_device
    monkeypatch.setattr(mmengine_device, 'DEVICE', 'cuda')  # as on a GPU machine
    with use_device('cpu') as device:
        assert device == 'cpu' and mmengine_device.get_device() == 'cpu'
    assert mmengine_device.get_device() == 'cuda'
    with use_device(None):
        assert mmengine_device.get_device() == 'cuda'


def test_mmcv_ops_check_on_cpu_and_its_advice_for_cuda(monkeypatch):
    assert check_mmcv_ops('cpu').startswith('mmcv ops ok on cpu: nms, RoIAlign, ModulatedDeformConv2dPack')
    error = explain_ops_error('cuda', 'nms_impl: implementation for device cuda:0 not found.\n')
    assert isinstance(error, OpsCheckError) and 'mmcv has no CUDA kernels' in str(error)
    assert '`MMCV_WITH_CUDA=1 make install`' in str(error)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (9, 0))
    error = explain_ops_error('cuda:0', 'CUDA error: no kernel image is available for execution on the device')
    assert 'than this GPU\'s (9.0)' in str(error) and 'TORCH_CUDA_ARCH_LIST=9.0' in str(error)
    assert str(explain_ops_error('cpu', 'boom')) == 'mmcv.ops failed on cpu: boom'


# ----------------------------------------------------------------------------------------------------------------
# scripts/install.sh and scripts/gpu_check.sh (bash only: milliseconds)
# ----------------------------------------------------------------------------------------------------------------
def _install(tmp_path, **env):
    full = dict(os.environ, VENV=str(tmp_path / 'venv'), MMDET_CUSTOM_CACHE=str(tmp_path / 'cache'),
                PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='', **env)
    for key in [k for k, v in full.items() if v is None]:
        del full[key]
    start = time.perf_counter()
    proc = subprocess.run(['bash', str(REPO_ROOT / 'scripts' / 'install.sh')], capture_output=True, text=True,
                          env=full, timeout=60)
    return proc, time.perf_counter() - start


def _fake_cuda(tmp_path, release='13.0'):
    home = tmp_path / f'cuda-{release}'
    (home / 'bin').mkdir(parents=True)
    (home / 'bin' / 'nvcc').write_text(f'#!/bin/sh\necho "Cuda compilation tools, release {release}, V{release}.88"\n')
    (home / 'bin' / 'nvcc').chmod(0o755)
    return str(home)


def test_install_with_cuda_but_no_nvcc_stops_before_anything(tmp_path):
    proc, seconds = _install(tmp_path, MMCV_WITH_CUDA='1', CUDA_HOME=str(tmp_path / 'no-cuda'))
    assert proc.returncode == 2 and seconds < 5
    assert proc.stderr.startswith(f'[install] error: MMCV_WITH_CUDA=1, but there is no nvcc at {tmp_path}/no-cuda/'
                                  'bin/nvcc') and 'MMCV_WITH_CUDA=0' in proc.stderr
    assert not (tmp_path / 'venv').exists() and not (tmp_path / 'cache').exists()  # nothing created or downloaded


def test_install_plan_keys_the_wheel_cache(tmp_path):
    torch_version = (REPO_ROOT / 'requirements' / 'torch.txt').read_text().split('torch==')[1].split()[0]
    py = f'py{sys.version_info[0]}{sys.version_info[1]}'
    cpu_key = f'mmcv-2.1.0_torch-{torch_version}_{py}'
    proc, _ = _install(tmp_path, MMDET_CUSTOM_INSTALL_PLAN='1', MMCV_WITH_CUDA=None)
    assert proc.returncode == 0, proc.stderr
    assert f'mmcv wheel cache: {tmp_path}/cache/wheels/{cpu_key}\n' in proc.stdout  # the CPU key as before
    assert 'mmcv ops: CPU only' in proc.stdout
    proc, _ = _install(tmp_path, MMDET_CUSTOM_INSTALL_PLAN='1', MMCV_WITH_CUDA='1', CUDA_HOME=_fake_cuda(tmp_path),
                       TORCH_CUDA_ARCH_LIST='9.0 8.0+PTX')
    assert proc.returncode == 0, proc.stderr
    assert f'wheels/{cpu_key}_cu130_sm80ptx-90\n' in proc.stdout and 'architectures 9.0;8.0+PTX' in proc.stdout
    assert not (tmp_path / 'venv').exists()


@pytest.mark.parametrize('env,message', [
    (dict(MMCV_WITH_CUDA='yes'), "MMCV_WITH_CUDA must be 1 (build mmcv's CUDA ops), 0 (CPU ops only) or unset"),
    (dict(MMCV_WITH_CUDA='1', TORCH_CUDA_ARCH_LIST='sm_90'), "TORCH_CUDA_ARCH_LIST='sm_90' is not a list"),
    (dict(MMCV_WITH_CUDA='1'), 'no GPU to read the architecture from: set TORCH_CUDA_ARCH_LIST'),
])
def test_install_refuses_bad_cuda_settings(tmp_path, env, message):
    proc, seconds = _install(tmp_path, CUDA_HOME=_fake_cuda(tmp_path), **env)
    assert proc.returncode == 2 and seconds < 5 and message in proc.stderr, proc.stderr
    assert not (tmp_path / 'venv').exists()


@pytest.mark.parametrize('how', ['script', 'make'])
def test_gpu_check_without_a_gpu_stops_at_once(tmp_path, how):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', GPU_CHECK_DIR=str(tmp_path / 'report'))
    cmd = ['bash', 'scripts/gpu_check.sh'] if how == 'script' else ['make', '--no-print-directory', 'gpu-check']
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and time.perf_counter() - start < 5
    assert '[gpu-check] error: no GPU visible (CUDA_VISIBLE_DEVICES=\'\' hides every GPU)' in proc.stderr
    assert not (tmp_path / 'report').exists()


def test_gpu_check_runs_its_steps_in_order_and_stops_at_the_budget(tmp_path):
    """With a faked GPU (nvidia-smi), make and interpreter: every step is recorded in report.json / report.md with
    its status; a failing step does not stop the next; once the budget is spent the remaining steps are skipped."""
    import json
    bin_dir, venv = tmp_path / 'bin', tmp_path / 'venv'
    (venv / 'bin').mkdir(parents=True)
    bin_dir.mkdir()
    scripts = {
        bin_dir / 'nvidia-smi': 'case "$*" in -L) echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)";;\n'
                                '*query-gpu*) echo "NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB";; esac\n',
        bin_dir / 'make': 'echo "make $*"; sleep "${FAKE_MAKE_SLEEP:-0}"\n',
        venv / 'bin' / 'python': 'echo "python $*"; case "$*" in *bench_dense*) exit 3;; *sahi*) exit 1;; esac\n',
    }
    for path, body in scripts.items():
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', VENV=str(venv))
    env.pop('CUDA_VISIBLE_DEVICES', None)

    def run(out, **extra):
        proc = subprocess.run(['bash', 'scripts/gpu_check.sh'], cwd=REPO_ROOT, capture_output=True, text=True,
                              env=dict(env, GPU_CHECK_DIR=str(out), **extra), timeout=60)
        return proc, json.loads((out / 'report.json').read_text())

    proc, report = run(tmp_path / 'full')
    assert proc.returncode == 1  # bench-dense failed
    assert [(s['step'], s['status']) for s in report['steps']] == [
        ('install', 'passed'), ('cuda-tests', 'passed'), ('bench-models', 'passed'), ('bench-dense', 'failed'),
        ('bench-scene', 'skipped'), ('dist-train', 'skipped')]
    assert report['gpus'] == 1 and report['gpu'].startswith('NVIDIA H100') and not report['passed']
    notes = {s['step']: s['note'] for s in report['steps']}
    assert notes['bench-dense'] == 'exit code 3 (see the log)' and 'sahi is not installed' in notes['bench-scene']
    assert 'python -m pytest tests/test_cuda.py -m cuda' in (tmp_path / 'full' / 'cuda-tests.log').read_text()
    assert '--device cuda' in (tmp_path / 'full' / 'bench-models.log').read_text()
    assert '| bench-dense | failed |' in (tmp_path / 'full' / 'report.md').read_text()

    proc, report = run(tmp_path / 'budget', GPU_CHECK_BUDGET='30', FAKE_MAKE_SLEEP='1')
    assert proc.returncode == 0
    assert [s['status'] for s in report['steps']] == ['passed'] + ['skipped'] * 5
    assert report['steps'][1]['note'] == 'budget spent (30s)'
