"""The machine and a process's memory, as the benchmarks measure them: usable cores, load average, CPU model,
resident set size (RSS) now and at its peak, and the peak of a phase (CUDA or RSS).

Peak RSS is Linux's ``VmHWM`` (``/proc/self/status``), reset with ``/proc/self/clear_refs`` (``5``) so that a peak
read after a phase is that phase's, not that of loading the model or libraries before it. Where the kernel refuses
the reset (or there is no ``/proc``), the peak is the process's since it started (``getrusage``), and
:func:`reset_peak_rss` says so by returning False. All figures are MiB (2**20 bytes).

Imports nothing beyond the standard library (torch only inside :class:`PeakMemory` for a CUDA phase), so that the
torch-free benchmarks (:mod:`mmdet_custom.analysis.eval_bench`) use it too.
"""
import os
import platform
import resource
import sys
from typing import Optional

_MIB = 2.0**20


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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')),
                        platform.machine())
    except OSError:
        return platform.processor() or platform.machine()


def _status_kib(field: str) -> Optional[int]:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB; None without ``/proc``."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """This process's resident set size now, MiB (its peak since start where ``/proc`` is missing)."""
    kib = _status_kib('VmRSS')
    return kib / 1024 if kib is not None else peak_rss_mib()


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter of this process (``VmHWM``; Linux ``clear_refs`` 5).

    Returns:
        bool: False where the reset is refused or unsupported: later peaks are the process's since it started.
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss_mib(children: bool = False) -> float:
    """Peak RSS in MiB: this process's ``VmHWM`` since :func:`reset_peak_rss` (since start without ``/proc``), or,
    with ``children=True``, the largest lifetime peak of its ended and waited-for child processes."""
    if not children:
        kib = _status_kib('VmHWM')
        if kib is not None:
            return kib / 1024
    peak = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF).ru_maxrss
    return peak / _MIB if sys.platform == 'darwin' else peak / 1024  # bytes on macOS, KiB on Linux


class PeakMemory:
    """Peak memory of a phase: CUDA max allocated, else the process's peak RSS since :meth:`start`.

    Args:
        cuda (bool): measure ``torch.cuda.max_memory_allocated`` instead of the RSS.

    Attributes:
        kind (str): what :meth:`peak_mib` reports; ``'peak RSS (cumulative: reset refused)'`` after a refused
            reset.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.kind = 'cuda max_memory_allocated' if cuda else 'peak RSS'

    def start(self) -> None:
        if self.cuda:
            import torch  # only a CUDA phase needs torch: the RSS functions serve torch-free benchmarks too
            torch.cuda.reset_peak_memory_stats()
        elif not reset_peak_rss():
            self.kind = 'peak RSS (cumulative: reset refused)'

    def peak_mib(self) -> float:
        """The phase's peak in MiB."""
        if self.cuda:
            import torch
            return torch.cuda.max_memory_allocated() / _MIB
        return peak_rss_mib()
