"""Atomic file and folder writers used by every converter and tool: a reader sees the old output or the complete
new one; and json reading whose errors name the file.

Each writer goes to a temporary file in the destination folder, then ``os.replace``-s it over the destination; on
any error the temporary file is removed and the destination is left as it was.
"""
import contextlib
import csv
import errno
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Iterable, Iterator, List, Optional, Sequence, Union

from .errors import UserError

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path`` (same extension) that replaces ``path`` when the block succeeds.

    Missing parent folders are created. The extension is kept so that writers which infer the format from the name
    (``matplotlib.Figure.savefig``, ``cv2.imwrite``) write the right format. The file gets the usual permissions
    (``0o666`` less the umask), not ``mkstemp``'s owner-only ``0o600``. Temporary files that killed runs left
    beside ``path`` (``.<name>.<pid>-*.tmp<ext>``, pid no longer running) are removed first.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = osp.splitext(path)[1]
    prefix = f'.{osp.basename(path)}.'
    _clean_stale_files(folder, prefix)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'{prefix}{os.getpid()}-', suffix='.tmp' + ext)
    os.close(fd)
    try:
        with _naming(tmp, path):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def _naming(tmp: str, final: str) -> Iterator[None]:
    """Name ``final`` in an ``OSError`` raised while writing ``tmp`` (its temporary stand-in).

    A write that fails after ``open`` (errno 28, disk full, from ``f.write`` or ``close``) carries no file name, and
    one inside the temporary file or folder names a path the user never chose; both are re-raised naming ``final``
    (the file under it, for a folder), with the same errno.
    """
    try:
        yield
    except OSError as e:
        name = e.filename
        if isinstance(e, UserError) or e.errno is None:  # a message of its own, or no errno to keep
            raise
        if name is None:
            name = final
        elif isinstance(name, str) and (name == tmp or name.startswith(tmp + os.sep)):
            name = final + name[len(tmp):]
        else:
            raise
        raise OSError(e.errno, e.strerror or str(e), name) from e


def _clean_stale_files(folder: str, prefix: str) -> None:
    """Remove temporary files ``<prefix><pid>-*.tmp*`` that killed runs left in ``folder`` (their pid is dead)."""
    for entry in os.listdir(folder):
        if not entry.startswith(prefix) or '.tmp' not in entry:
            continue
        pid = entry[len(prefix):].split('-', 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(osp.join(folder, entry))


def dump_json_atomic(obj, path: PathLike, indent: Optional[int] = None) -> None:
    """Write ``obj`` as json to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(obj, f, indent=indent)


def write_csv_atomic(path: PathLike, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a csv with one ``header`` line, then ``rows`` (sequences in header order), atomically."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def check_writable(path: PathLike, flag: str, is_dir: bool = False) -> None:
    """Refuse, before any work, an output file (or folder, ``is_dir=True``) that cannot be written; nothing is left
    behind.

    An existing file must be writable; the file's folder must exist and take a new file (a probe file is created and
    removed at once), or its nearest existing ancestor must be a writable folder (the writer creates the rest).

    Args:
        path (str | PathLike): the file or folder to be written.
        flag (str): the command-line flag that gave it, for the message (e.g. ``'--out'``).
        is_dir (bool): ``path`` is a folder. Defaults to False.

    Raises:
        UserError: naming ``flag`` and ``path`` and why: a folder where a file is expected (or a file where a folder
            is), an existing file that is not writable, an ancestor that is a file, a folder that takes no file.
    """
    path = os.fspath(path)
    full = osp.abspath(path)
    if osp.isdir(full) and not is_dir:
        raise UserError(f'{flag} {path} is a folder; give a file name')
    if is_dir and osp.exists(full) and not osp.isdir(full):
        raise UserError(f'{flag} {path} is a file, not a folder')
    if not is_dir and osp.exists(full) and not os.access(full, os.W_OK):
        raise UserError(f'{flag} {path} cannot be written (permission denied); choose another place. Nothing was run.')
    folder = full if is_dir else osp.dirname(full)
    existing = folder
    while not osp.exists(existing):
        existing = osp.dirname(existing)
    if not osp.isdir(existing):
        raise UserError(f'{flag} {path} cannot be written: {existing} is a file, not a folder; choose another place. '
                        f'Nothing was run.')
    try:
        if existing == folder:
            with tempfile.TemporaryFile(dir=folder):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, 'no permission to create a folder in it', existing)
    except OSError as e:
        raise UserError(f'{flag} {path} cannot be written ({e.strerror or e}: {e.filename or folder}); choose '
                        f'another place. Nothing was run.') from e


# ----------------------------------------------------------------------------------------------------------------
# Reading json with errors that name the file
# ----------------------------------------------------------------------------------------------------------------
def load_json(path: PathLike, what: str = 'json file'):
    """Read a json file; a missing, unreadable or malformed file raises :class:`UserError` naming it.

    Args:
        path (str | PathLike): the file.
        what (str): what the file is, for the message (e.g. ``'--name-to-ids map'``).

    Raises:
        UserError: the file is missing, not a file, unreadable, or not valid json (with line and column).
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise UserError(f'{what} not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f'{what} {path} is not valid json: {e.msg} at line {e.lineno}, column {e.colno}') from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'cannot read {what} {path}: {e}') from e


# ----------------------------------------------------------------------------------------------------------------
# Output folders that appear whole or not at all
# ----------------------------------------------------------------------------------------------------------------
#: File that marks a folder as written by one of this project's tools (so a rerun may replace it).
OUTPUT_MARKER = '.mmdet_custom_output'


def check_output_outside_inputs(out_dir: PathLike, *inputs: PathLike, out_flag: str = 'output folder') -> None:
    """Refuse an output folder that is, contains or lies inside an input (resolved paths, symlinks followed).

    Raises:
        UserError: naming both paths, when they overlap.
    """
    out = osp.realpath(os.fspath(out_dir))
    for item in inputs:
        src = osp.realpath(os.fspath(item))
        if out == src or out.startswith(src.rstrip(os.sep) + os.sep) or src.startswith(out.rstrip(os.sep) + os.sep):
            raise UserError(f'{out_flag} {os.fspath(out_dir)} overlaps the input {os.fspath(item)} (resolved: {out} '
                            f'and {src}): writing there could replace or delete the input. Choose a folder outside '
                            f'the input.')


def pid_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically with Linux ``renameat2(RENAME_EXCHANGE)``; False where it is unavailable."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    ok = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    return ok


def _clean_stale_siblings(final: str) -> None:
    """Remove temporary siblings of ``final`` left by killed runs (their pid is dead); restore a lost final folder."""
    parent, name = osp.split(final)
    if not osp.isdir(parent):
        return
    for entry in os.listdir(parent):
        for kind in ('tmp', 'old'):
            prefix = f'.{name}.{kind}-'
            if not entry.startswith(prefix):
                continue
            pid = entry[len(prefix):].split('-', 1)[0]
            if not pid.isdigit() or pid_alive(int(pid)):
                continue
            path = osp.join(parent, entry)
            if kind == 'old' and not osp.exists(final):  # killed between the two renames of the fallback swap
                os.replace(path, final)
            else:
                shutil.rmtree(path, ignore_errors=True)


_MARKER_HEADER = ('written by mmdet_custom; a rerun of the tool may replace this folder whole\n'
                  'files written (anything else here is the user\'s, and the folder is then not replaced):\n')
_NAMED = 5  # user files named in a refusal


def _entries(folder: str) -> List[str]:
    """Every file and folder under ``folder`` (folders with a trailing ``/``), relative, sorted; not the marker."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = osp.relpath(root, folder)
        prefix = '' if rel == '.' else rel.replace(os.sep, '/') + '/'
        found += [prefix + d + '/' for d in dirs] + [prefix + f for f in files if prefix or f != OUTPUT_MARKER]
    return sorted(found)


def user_files(path: PathLike) -> List[str]:
    """The files and folders in an output folder of this project that no run of the tool wrote (the user's).

    The :data:`OUTPUT_MARKER` lists what the tool wrote; anything else found is the user's. A marker written before
    the listing existed lists nothing, and then nothing can be told apart (empty result).

    Returns:
        list[str]: relative paths (folders with a trailing ``/``), sorted; empty when ``path`` has no marker.
    """
    marker = osp.join(os.fspath(path), OUTPUT_MARKER)
    if not osp.isfile(marker):
        return []
    with open(marker, encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()
    header = _MARKER_HEADER.splitlines()
    if lines[:len(header)] != header:
        return []
    written = set(lines[len(header):])
    return [e for e in _entries(os.fspath(path)) if e not in written]


@contextlib.contextmanager
def atomic_dir(path: PathLike, keep_existing: bool = False) -> Iterator[str]:
    """Yield a temporary folder beside ``path`` that replaces ``path`` whole when the block succeeds.

    A reader (or a run killed at any moment) sees the old folder or the complete new one, never a mix. The new
    folder gets :data:`OUTPUT_MARKER`, so a later run may replace it; an existing non-empty folder without the
    marker (something this project did not write) is refused rather than replaced, and so is a marked folder that
    holds files or folders the marker does not list (the user's, added after the run: :func:`user_files`).
    Temporary folders of killed runs (``.<name>.tmp-<pid>-*``) are removed the next time.

    Args:
        path (str | PathLike): the output folder.
        keep_existing (bool): start the temporary folder as a copy of the existing output (hard links, so it costs
            no space), for tools that update part of their output (e.g. one split of several). Defaults to False.

    Raises:
        UserError: ``path`` exists and is not a folder, or is a non-empty folder this project did not write, or
            holds files that its tool did not write (named); checked on entry, before the block runs.
    """
    final = osp.abspath(os.fspath(path))
    if osp.exists(final) and not osp.isdir(final):
        raise UserError(f'output folder {final} exists and is not a folder')
    if osp.isdir(final) and os.listdir(final) and not osp.exists(osp.join(final, OUTPUT_MARKER)):
        raise UserError(f'output folder {final} already holds files that this tool did not write (no '
                        f'{OUTPUT_MARKER}); choose a new or empty folder, nothing was changed')
    foreign = user_files(final)
    if foreign:
        more = f' and {len(foreign) - _NAMED} more' if len(foreign) > _NAMED else ''
        raise UserError(f'output folder {final} holds files that no run of this tool wrote: '
                        f'{", ".join(foreign[:_NAMED])}{more}; replacing the folder would delete them. Move them out '
                        f'or choose another folder; nothing was changed')
    parent, name = osp.split(final)
    os.makedirs(parent, exist_ok=True)
    _clean_stale_siblings(final)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{name}.tmp-{os.getpid()}-')
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        if keep_existing and osp.isdir(final):
            shutil.copytree(final, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
        with _naming(tmp, final):
            yield tmp
            listing = _entries(tmp)
            with open(osp.join(tmp, OUTPUT_MARKER), 'w') as f:
                f.write(_MARKER_HEADER + ''.join(f'{entry}\n' for entry in listing))
        if not osp.exists(final):
            os.replace(tmp, final)
        elif _exchange(tmp, final):
            shutil.rmtree(tmp)  # now the old output
        else:
            old = tempfile.mkdtemp(dir=parent, prefix=f'.{name}.old-{os.getpid()}-')
            os.replace(final, osp.join(old, name))
            os.replace(tmp, final)
            shutil.rmtree(old)
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
