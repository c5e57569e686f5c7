"""The one check of a ``--device`` (every tool, :func:`mmdet_custom.models.builder.build_model`, the install check).

``'cuda'`` without a usable GPU fails here, before a model is built or a file read, with one message that says why
and what to do, instead of torch's ``Found no NVIDIA driver on your system`` traceback from deep inside a forward
pass. The reasons told apart (:func:`cuda_problem`):

- torch is a CPU-only build (``torch.version.cuda`` is None);
- no GPU is visible (no driver, no device, or ``CUDA_VISIBLE_DEVICES`` hides them all);
- the NVIDIA driver is older than torch's CUDA needs (torch's own ``The NVIDIA driver on your system is too old``
  error, with the version it found);
- ``cuda:N`` with fewer than ``N + 1`` GPUs visible.

torch is imported by the functions that need it (this module is imported by the light command lines, which must
start without torch).
"""
import contextlib
import os
import re
from typing import Iterator, Optional

from .errors import UserError

__all__ = ['DeviceError', 'OpsCheckError', 'cuda_problem', 'check_device', 'use_device', 'mmcv_has_cuda_kernels',
           'explain_ops_error', 'check_mmcv_ops']

#: Oldest Linux driver of each CUDA major version (NVIDIA's CUDA release notes, minor version compatibility).
DRIVER_FOR_CUDA = {'11': '450.80.02', '12': '525.60.13', '13': '580.65.06'}


class DeviceError(UserError, RuntimeError):
    """A device that cannot be used here (e.g. ``--device cuda`` on a machine without a GPU).

    Not a ``ValueError``: :func:`check_device` is an argparse ``type=``, and argparse would swallow a
    ``ValueError`` into ``invalid check_device value``; a :class:`DeviceError` reaches
    :func:`~mmdet_custom.utils.cli.run_cli`, which prints its message as one ``error:`` line (exit code 2).
    """


class OpsCheckError(UserError, RuntimeError):
    """mmcv's compiled ops are missing, wrong, or have no kernels for the device (the message names the fix)."""


def _torch_cuda_init_error() -> str:
    """torch's own reason why CUDA cannot start ('' when it can)."""
    import torch
    try:
        torch.cuda.init()
    except Exception as e:  # RuntimeError (no driver, old driver), AssertionError (CPU-only torch)
        return str(e)
    return ''


def cuda_problem() -> Optional[str]:
    """Why CUDA cannot be used in this process, or None when a GPU is usable.

    Returns:
        str | None: one sentence naming the cause (no driver / no GPU visible, a driver too old for torch's CUDA,
        a CPU-only torch) and, where the machine can be fixed, how; None when ``torch.cuda.is_available()``.
    """
    import torch
    if torch.cuda.is_available():
        return None
    torch_build = f'torch {torch.__version__}'
    if torch.version.cuda is None:
        return (f'{torch_build} is a CPU-only build: install a CUDA build of torch (requirements/torch.txt from '
                f'PyPI is one)')
    reason = _torch_cuda_init_error()
    if 'too old' in reason:
        found = re.search(r'found version (\d+)', reason)  # the driver's CUDA version, e.g. 12020 for 12.2
        version = f' (the driver supports CUDA {int(found.group(1)) // 1000}.{int(found.group(1)) % 1000 // 10})' \
            if found else ''
        need = DRIVER_FOR_CUDA.get(torch.version.cuda.split('.')[0])
        return (f'the NVIDIA driver is too old for {torch_build}, built for CUDA {torch.version.cuda}{version}: '
                f'update the driver{f" (CUDA {torch.version.cuda} needs {need} or newer)" if need else ""}, or '
                f'install a torch built for the driver\'s CUDA version')
    hidden = os.environ.get('CUDA_VISIBLE_DEVICES')
    why = (f'CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU' if hidden is not None and not hidden.strip(', ')
           else 'torch.cuda.is_available() is False: no NVIDIA GPU or driver on this machine')
    return f'no CUDA GPU is visible ({why}; {torch_build}, CUDA {torch.version.cuda})'


def check_device(device: Optional[str]) -> str:
    """``device`` checked and resolved: what to pass to ``Module.to``.

    Args:
        device (str, optional): ``'cpu'``, ``'cuda'`` or ``'cuda:N'``; None picks ``'cuda'`` when a GPU is visible,
            else ``'cpu'``.

    Returns:
        str: the device, e.g. ``'cpu'``, ``'cuda'``, ``'cuda:1'``.

    Raises:
        DeviceError: an unknown device string, a CUDA device without a usable GPU (the message says why and what
            to do, see :func:`cuda_problem`), or ``cuda:N`` past the visible GPUs.

    Example:
        >>> check_device('cpu')
        'cpu'
        >>> check_device('gpu')
        Traceback (most recent call last):
        ...
        mmdet_custom.utils.device.DeviceError: unknown device 'gpu': use 'cpu', 'cuda' or 'cuda:N'
    """
    if device is None:
        import torch
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    text = str(device).strip()
    match = re.fullmatch(r'(cpu|cuda)(?::(\d+))?', text)
    if not match or (match.group(1) == 'cpu' and match.group(2) is not None):
        raise DeviceError(f'unknown device {text!r}: use \'cpu\', \'cuda\' or \'cuda:N\'')
    if match.group(1) == 'cpu':
        return text
    problem = cuda_problem()
    if problem is not None:
        raise DeviceError(f'device {text!r} cannot be used: {problem}; or use --device cpu')
    import torch
    index, count = match.group(2), torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise DeviceError(f'device {text!r} cannot be used: {count} GPU(s) visible (cuda:0 to cuda:{count - 1})')
    return text


@contextlib.contextmanager
def use_device(device: Optional[str]) -> Iterator[str]:
    """Run mmengine's ``Runner`` (and anything else that asks ``mmengine.device.get_device()``) on ``device``.

    mmengine has no device setting: its ``Runner`` moves the model to ``get_device()`` (``'cuda'`` whenever a GPU is
    visible) and loads checkpoints there. Inside this context ``get_device()`` answers ``'cpu'`` for
    ``device='cpu'`` (a CPU run on a GPU machine), and for ``'cuda:N'`` the current CUDA device is N, so that
    ``'cuda'`` means that GPU; both are restored on exit.

    Args:
        device (str, optional): as :func:`check_device` (None: mmengine's own choice, unchanged).

    Yields:
        str: the resolved device.

    Raises:
        DeviceError: see :func:`check_device`.
    """
    resolved = check_device(device)
    if device is None:
        yield resolved
        return
    import mmengine.device.utils as mmengine_device
    import torch
    saved_device, saved_index = mmengine_device.DEVICE, None
    mmengine_device.DEVICE = 'cuda' if resolved.startswith('cuda') else 'cpu'
    try:
        if ':' in resolved:
            saved_index = torch.cuda.current_device()
            torch.cuda.set_device(torch.device(resolved))
        yield resolved
    finally:
        mmengine_device.DEVICE = saved_device
        if saved_index is not None:
            torch.cuda.set_device(saved_index)


#: How to get mmcv's CUDA kernels (scripts/install.sh builds and caches the wheel, see docs/scaling-out.md, "GPU").
CUDA_BUILD_FIX = ('build mmcv with its CUDA ops: `MMCV_WITH_CUDA=1 make install` on this machine (needs nvcc: '
                  'CUDA_HOME, default /usr/local/cuda; TORCH_CUDA_ARCH_LIST defaults to the local GPU), or install a '
                  'CUDA wheel built for this GPU from the wheel cache ($MMDET_CUSTOM_CACHE/wheels/*_cu*)')


def mmcv_has_cuda_kernels() -> bool:
    """Whether the installed ``mmcv._ext`` holds CUDA kernels (a CUDA build registers fat binaries), without a GPU.

    Returns:
        bool: True for a wheel built with ``FORCE_CUDA=1``; False for a CPU build (it links only libc10,
        libtorch_cpu and libtorch_python) or when ``mmcv._ext`` is missing.
    """
    import importlib.util
    spec = importlib.util.find_spec('mmcv._ext')
    if spec is None or not spec.origin:
        return False
    with open(spec.origin, 'rb') as f:
        return b'__cudaRegisterFatBinary' in f.read()


def explain_ops_error(device: str, message: str) -> OpsCheckError:
    """The :class:`OpsCheckError` for an mmcv op that raised ``message`` on ``device``, naming the fix.

    Tells apart a CPU-only mmcv on a GPU (mmcv's dispatcher: ``nms_impl: implementation for device cuda:0 not
    found.``) and a wheel built for other GPU architectures (``no kernel image is available for execution on the
    device``).
    """
    first = message.strip().splitlines()[0] if message.strip() else 'RuntimeError'
    if device.startswith('cuda'):
        if 'no kernel image' in first:
            import torch
            cap = '%d.%d' % torch.cuda.get_device_capability(torch.device(device))
            return OpsCheckError(f'mmcv\'s CUDA kernels were built for other GPU architectures than this GPU\'s '
                                 f'({cap}): {first}. Rebuild with TORCH_CUDA_ARCH_LIST={cap}: {CUDA_BUILD_FIX}')
        if 'not found' in first or 'not compiled' in first or not mmcv_has_cuda_kernels():
            return OpsCheckError(f'mmcv has no CUDA kernels (a CPU-only build of mmcv.ops: {first}); '
                                 f'{CUDA_BUILD_FIX}')
    return OpsCheckError(f'mmcv.ops failed on {device}: {first}')


def check_mmcv_ops(device: str = 'cpu') -> str:
    """Run mmcv's compiled ops that the models use on ``device`` and check their results: ``nms``, ``RoIAlign``
    and DCNv2 (``ModulatedDeformConv2dPack``, forward and backward).

    DCNv2 starts with zero offsets and masks of ``sigmoid(0) = 0.5``, so its output must equal
    ``0.5 * conv2d(x, w) + b`` and its input gradient that of the same expression (computed by torch on the CPU).

    Args:
        device (str): 'cpu', 'cuda' or 'cuda:N'. Defaults to 'cpu'.

    Returns:
        str: one line saying what passed.

    Raises:
        DeviceError: ``device`` cannot be used (no GPU, a driver too old for torch's CUDA: see
            :func:`check_device`).
        OpsCheckError: an op is missing (``mmcv.ops`` not compiled), gives a wrong result, or has no kernel for
            the device (a CPU-only mmcv on a GPU: ``implementation for device cuda:0 not found``; a wheel built for
            other GPU architectures: ``no kernel image is available``); the message names the fix.
    """
    device = check_device(device)
    import torch
    import torch.nn.functional as F
    try:
        from mmcv.ops import ModulatedDeformConv2dPack, RoIAlign, nms
    except ImportError as e:
        raise OpsCheckError(f'mmcv.ops cannot be imported ({e}): mmcv was built without its compiled ops; delete '
                            'the cached wheel under $MMDET_CUSTOM_CACHE/wheels and run `make install` again') from e
    try:
        boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]], device=device)
        _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=device), 0.5)
        if keep.tolist() != [0, 2]:
            raise OpsCheckError(f'mmcv nms on {device} kept {keep.tolist()}, expected [0, 2]')
        out = RoIAlign((2, 2), 1.0, 0)(torch.ones(1, 1, 8, 8, device=device),
                                        torch.tensor([[0., 0., 0., 4., 4.]], device=device))
        if out.shape != (1, 1, 2, 2) or not torch.allclose(out.cpu(), torch.ones(1, 1, 2, 2)):
            raise OpsCheckError(f'mmcv RoIAlign on {device} gave {out.flatten().tolist()}, expected ones')
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2, 4, 9, 9, generator=generator)
        dcn = ModulatedDeformConv2dPack(4, 6, 3, padding=1)  # offsets and masks start at zero (init_weights)
        weight, bias = dcn.weight.detach().clone(), dcn.bias.detach().clone()
        dcn = dcn.to(device)
        x_dev = x.clone().to(device).requires_grad_()
        y = dcn(x_dev)
        y.sum().backward()
        x_ref = x.clone().requires_grad_()
        y_ref = 0.5 * F.conv2d(x_ref, weight, padding=1) + bias.view(1, -1, 1, 1)
        y_ref.sum().backward()
    except OpsCheckError:
        raise
    except RuntimeError as e:
        raise explain_ops_error(device, str(e)) from e
    if not torch.allclose(y.detach().cpu(), y_ref.detach(), atol=1e-4, rtol=1e-4):
        raise OpsCheckError(f'mmcv ModulatedDeformConv2dPack on {device} differs from 0.5 * conv2d + bias by '
                            f'{float((y.detach().cpu() - y_ref).abs().max()):.3g}')
    if not torch.allclose(x_dev.grad.cpu(), x_ref.grad, atol=1e-4, rtol=1e-4):
        raise OpsCheckError(f'mmcv ModulatedDeformConv2dPack backward on {device} differs from conv2d\'s by '
                            f'{float((x_dev.grad.cpu() - x_ref.grad).abs().max()):.3g}')
    return f'mmcv ops ok on {device}: nms, RoIAlign, ModulatedDeformConv2dPack forward + backward'
