"""Command-line pieces shared by ``tools/*.py``: mmdet's flag names and help texts, and one way errors reach users.

Every tool's ``if __name__ == '__main__'`` block is ``run_cli(main)``: a :class:`~mmdet_custom.utils.errors.UserError`
or a usual input mistake (missing file, unreadable folder) prints one line ``error: <message>`` on stderr and exits
with code 2, without a traceback; ``--debug`` (or ``MMDET_CUSTOM_DEBUG=1``) shows the traceback instead. Anything
else is a bug and keeps its traceback.

This module imports neither torch nor mmengine at import time (light tools such as the converters use it).
"""
import argparse
import errno
import os
import sys
from typing import Callable, Optional, Sequence

from .device import check_device
from .errors import UserError

#: Exception types reported as a user mistake (message only, exit code 2).
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
#: Exit code of a user mistake (argparse uses the same for bad flags).
USER_ERROR_EXIT = 2
#: Errors of the file system, not of the program, reported like a user mistake: a read-only file system, a full disk
#: or quota, an I/O error (a failing disk, a truncated network file), a name too long, a symlink loop, a file too big.
USER_ERRNOS = frozenset(getattr(errno, name) for name in (
    'EROFS', 'ENOSPC', 'EDQUOT', 'EIO', 'ENAMETOOLONG', 'ELOOP', 'EFBIG', 'EACCES', 'EPERM', 'ENOENT', 'ENOTDIR',
    'EISDIR', 'EEXIST', 'ENOTEMPTY', 'EXDEV', 'ESTALE') if hasattr(errno, name))


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` reaches users as one ``error:`` line: a :data:`USER_ERRORS` type, or an ``OSError`` whose
    errno is in :data:`USER_ERRNOS` (e.g. errno 30, read-only file system; 28, disk full)."""
    return isinstance(error, USER_ERRORS) or isinstance(error, OSError) and error.errno in USER_ERRNOS


def error_message(error: BaseException) -> str:
    """The one-line text of a user error: its message, with the file it concerns when the message lacks it."""
    message = str(error) or type(error).__name__
    if isinstance(error, OSError) and not isinstance(error, UserError):
        filename = error.filename
        if error.strerror and filename is not None:
            message = f'{error.strerror} (errno {error.errno}): {filename}'
        elif filename is not None and str(filename) not in message:
            message = f'{message}: {filename}'
    return message


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    """Add mmdet's ``--cfg-options key=value ...`` (merged into the config with ``Config.merge_from_dict``)."""
    from mmengine.config import DictAction
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will be merged into '
        'config file.')


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """Add ``--data-root DIR``: every dataset's ``data_root`` and every evaluator's ``ann_file``, set consistently
    (:func:`mmdet_custom.datasets.utils.set_data_root`)."""
    parser.add_argument(
        '--data-root', metavar='DIR', default=None,
        help='the data folder (the converter\'s output, e.g. data/isaid/): sets the data_root of the train, val and '
        'test datasets and the val/test evaluators\' ann_file to their dataset\'s json (instead of five '
        '--cfg-options); applied after --cfg-options')


def add_device(parser: argparse.ArgumentParser, default: Optional[str] = None) -> None:
    """Add ``--device`` ('cpu', 'cuda', 'cuda:N'), checked while parsing (:func:`~.device.check_device`).

    ``--device cuda`` without a usable GPU ends the tool at once with one ``error:`` line that says why (no GPU
    visible, a driver too old for torch's CUDA, a CPU-only torch) and what to do, exit code 2.

    Args:
        parser (argparse.ArgumentParser): the tool's parser.
        default (str, optional): the device without the flag; None: 'cuda' when a GPU is visible, else 'cpu'
            (resolved where the tool builds its model).
    """
    when = 'cuda when a GPU is visible, else cpu' if default is None else default
    parser.add_argument('--device', default=default, type=check_device,
                        help=f"'cpu', 'cuda' or 'cuda:N' (default: {when}); a CUDA device without a usable GPU is "
                        'refused at once, with the reason')


def add_launcher(parser: argparse.ArgumentParser) -> None:
    """Add mmdet's ``--launcher`` and ``--local-rank`` (the latter is passed by ``torch.distributed.launch``)."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_with_launcher(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv`` and export ``LOCAL_RANK`` from ``--local-rank`` unless the launcher already set it."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def run_cli(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None) -> None:
    """Run a tool's ``main(argv)`` the way every tool reports errors, then exit.

    Args:
        main (callable): the tool's ``main``, taking the argument list (without the program name).
        argv (Sequence[str], optional): arguments; ``sys.argv[1:]`` when None. A ``--debug`` among them is removed
            before ``main`` sees it and turns tracebacks back on (as does the environment variable
            ``MMDET_CUSTOM_DEBUG=1``).

    Raises:
        SystemExit: always: code 0 after success, 2 after a user mistake or a file-system error (one ``error:``
            line on stderr naming the file; :func:`is_user_error`),
            130 after Ctrl-C. Other exceptions propagate with their traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get('MMDET_CUSTOM_DEBUG', '') not in ('', '0')
    if '--debug' in argv:
        argv.remove('--debug')
        debug = True
    try:
        main(argv)
    except (UserError, OSError) as e:
        if debug or not is_user_error(e):
            raise
        print(f'error: {error_message(e)}', file=sys.stderr)
        if not isinstance(e, UserError):
            print('(run with --debug for the traceback)', file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        if debug:
            raise
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
