"""The scenes of a region run: input lists expanded to files, and their deterministic split across ranks.

An input item is a scene file, a folder (its rasters, not recursive), a glob pattern (``'tiles/**/*.tif'``, quoted
so that the shell does not expand it), or a text file ``*.txt`` / ``*.lst`` with one scene path per line (blank
lines and lines starting with ``#`` skipped; relative paths are relative to the list file's folder).

A folder or a glob skips iSAID's annotation masks (``*_instance_color_RGB.png``, ``*_instance_id_RGB.png``): the
devkit keeps them beside the images in ``<split>/images/``, and predicting on a label image is never what was
meant. Named one by one (or in a list), such a file is taken as given.
"""
import glob
import os
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mmdet_custom.converters.isaid.sources import COLOR_SUFFIX, ID_SUFFIX
from mmdet_custom.converters.isaid.windows import natural_key
from mmdet_custom.utils.errors import UserError

#: File extensions taken from a folder or a glob (lower case).
RASTER_EXTENSIONS = ('.tif', '.tiff', '.png', '.jpg', '.jpeg', '.jp2', '.vrt', '.img', '.bmp', '.webp')
#: Extensions of a text file listing scenes.
LIST_EXTENSIONS = ('.txt', '.lst')
_GLOB_CHARS = '*?['


#: Name endings of iSAID's annotation masks, which a folder or a glob skips.
MASK_SUFFIXES = (COLOR_SUFFIX, ID_SUFFIX)


def _rasters(paths: Sequence[str], skipped: Optional[List[str]] = None) -> List[str]:
    found = [p for p in paths if osp.isfile(p) and osp.splitext(p)[1].lower() in RASTER_EXTENSIONS]
    masks = [p for p in found if p.endswith(MASK_SUFFIXES)]
    if skipped is not None:
        skipped.extend(masks)
    found = [p for p in found if not p.endswith(MASK_SUFFIXES)]
    return sorted(found, key=lambda p: natural_key(osp.basename(p)) + natural_key(p))


def _read_list(path: str) -> List[str]:
    folder = osp.dirname(osp.abspath(path))
    out = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            scene = line if osp.isabs(line) else osp.join(folder, line)
            if not osp.isfile(scene):
                raise FileNotFoundError(f'{path}, line {number}: scene not found: {line}')
            out.append(scene)
    return out


def expand_scene_inputs(items: Sequence[str], skipped: Optional[List[str]] = None) -> List[str]:
    """The scene files named by ``items`` (see the module text), in order: a folder's or a glob's files in natural
    order of their names, a list file's in its line order; a file reached twice (same real path) is kept once, at
    its first place.

    Args:
        items (Sequence[str]): files, folders, glob patterns, list files.
        skipped (list, optional): receives the iSAID annotation masks a folder or a glob skipped.

    Returns:
        list[str]: scene paths.

    Raises:
        FileNotFoundError: a missing file, a missing folder, a list line naming a missing scene (file and line).
        UserError: a folder or a glob with no raster (:data:`RASTER_EXTENSIONS`) in it, or no scene at all.
    """
    out: List[str] = []
    for item in items:
        item = os.fspath(item)
        if osp.isdir(item):
            found = _rasters([osp.join(item, name) for name in os.listdir(item)], skipped)
            if not found:
                raise UserError(f'the folder {item} holds no raster ({", ".join(RASTER_EXTENSIONS)}) other than '
                                'iSAID annotation masks')
        elif any(c in item for c in _GLOB_CHARS) and not osp.exists(item):
            found = _rasters(glob.glob(item, recursive=True), skipped)
            if not found:
                raise UserError(f'the pattern {item} matches no raster file ({", ".join(RASTER_EXTENSIONS)}) other '
                                'than iSAID annotation masks')
        elif osp.splitext(item)[1].lower() in LIST_EXTENSIONS:
            if not osp.isfile(item):
                raise FileNotFoundError(f'scene list not found: {item}')
            found = _read_list(item)
        else:
            if not osp.isfile(item):
                raise FileNotFoundError(f'scene not found: {item}')
            found = [item]
        out.extend(found)
    seen, unique = set(), []
    for path in out:
        real = osp.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    if not unique:
        raise UserError('no input scene given')
    return unique


def parse_shard(text: str) -> Tuple[int, int]:
    """``'I/N'`` -> ``(I, N)`` with ``0 <= I < N``.

    Raises:
        UserError: anything else, quoting ``--shard``.
    """
    try:
        rank, world = (int(v) for v in str(text).split('/'))
    except ValueError:
        raise UserError(f'--shard takes I/N (this process\'s shard I of N, from 0), got {text!r}') from None
    if not 0 <= rank < world:
        raise UserError(f'--shard I/N needs 0 <= I < N, got {text!r}')
    return rank, world


def resolve_shard(shard: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Tuple[int, int]:
    """This process's ``(rank, world_size)``: ``--shard I/N`` when given, else torchrun's ``RANK`` and
    ``WORLD_SIZE`` (no process group is needed), else ``(0, 1)``.

    Raises:
        UserError: a malformed ``--shard`` or environment.
    """
    if shard is not None:
        return parse_shard(shard)
    environ = os.environ if environ is None else environ
    if 'WORLD_SIZE' in environ:
        return parse_shard(f'{environ.get("RANK", "0")}/{environ["WORLD_SIZE"]}')
    return 0, 1


def assign_scenes(costs: Sequence[int], world_size: int) -> List[int]:
    """The rank of each scene: the longest-processing-time rule, deterministic for the same list on every rank.

    Scenes are taken by decreasing cost (number of windows; ties by list order) and each goes to the rank with the
    least cost so far (ties: the lowest rank): ranks end within one scene's cost of each other.

    Args:
        costs (Sequence[int]): the cost of each scene, in list order.
        world_size (int): number of ranks.

    Returns:
        list[int]: rank of each scene, in list order.

    Example:
        >>> assign_scenes([4, 1, 1, 6, 2, 2], 2)
        [1, 1, 1, 0, 1, 0]
    """
    load: Dict[int, int] = {r: 0 for r in range(world_size)}
    ranks = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(load, key=lambda r: (load[r], r))
        ranks[index] = rank
        load[rank] += costs[index]
    return ranks
