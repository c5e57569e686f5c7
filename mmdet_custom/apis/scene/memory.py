"""Handing freed C-heap pages back to the system between windows (used by the model loop and the reading workers)."""


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        import ctypes
        return ctypes.CDLL('libc.so.6').malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``; a no-op elsewhere).

    After the first large buffer is freed, glibc raises its mmap threshold, so later window-sized buffers (a window,
    its tensor, its dense masks) come from the heap, and a free heap page only goes back to the system at the heap's
    top: over hundreds of windows the RSS creeps up by hundreds of MB without any leak (measured: +184 MB on a
    12000 x 12000 scene, +42 MB with the trim after each batch).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
