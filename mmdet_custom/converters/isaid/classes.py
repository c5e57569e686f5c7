"""Class names and mask colours of the converter: iSAID's by default, or a user's from the command line."""
import json
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmdet_custom.utils.fileio import load_json
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES, ISAID_PALETTE

from .common import ISAIDConversionError

Color = Tuple[int, int, int]


def _from_file(path: str, key: str):
    if path.endswith('.json'):
        obj = load_json(path, f'{key} file')
    else:
        from mmengine.config import Config  # only for config files; the converter needs no mmengine otherwise
        obj = Config.fromfile(path).to_dict()
    if isinstance(obj, dict):
        for holder in (obj, obj.get('metainfo') or {}):
            if key in holder:
                return holder[key]
        raise ISAIDConversionError(f'{path}: no `{key}` (neither top-level nor in `metainfo`)')
    return obj


def parse_classes(spec: str) -> Tuple[str, ...]:
    """Class names from a command-line value.

    Args:
        spec (str): a comma-separated list (``'ship,plane'``), or a ``.json`` file holding a list or a dict with
            ``classes`` (top-level or in ``metainfo``), or an mmengine config file (``.py``/``.yaml``) with
            ``classes`` or ``metainfo = dict(classes=...)``.

    Returns:
        tuple[str]: the class names in category-id order (id = index + 1).

    Raises:
        ISAIDConversionError: a file without ``classes``; UserError: malformed json (names the file).
    """
    value = _from_file(spec, 'classes') if osp.isfile(spec) else [s.strip() for s in spec.split(',') if s.strip()]
    return tuple(str(v) for v in value)


def parse_palette(spec: str) -> List[Color]:
    """Class colours (R, G, B) of the ``*_instance_color_RGB.png`` masks from a command-line value.

    Args:
        spec (str): inline ``'0,0,63;0,63,63'`` or json ``'[[0,0,63],[0,63,63]]'``, or a file as in
            :func:`parse_classes` holding ``palette``.

    Returns:
        list[tuple[int, int, int]]: one colour per class, in class order.

    Raises:
        ISAIDConversionError: a value that is not a list of integer triples.
    """
    try:
        if osp.isfile(spec):
            value = _from_file(spec, 'palette')
        elif spec.strip().startswith('['):
            value = json.loads(spec)
        else:
            value = [[int(c) for c in item.split(',')] for item in spec.replace(' ', ';').split(';') if item.strip()]
        return [tuple(int(c) for c in color) for color in value]
    except (TypeError, ValueError) as e:
        if isinstance(e, ISAIDConversionError):
            raise
        raise ISAIDConversionError(f'--palette {spec!r}: expected "R,G,B;R,G,B", "[[R,G,B],...]" or a file with '
                                   f'`palette` ({e})') from e


def parse_class_spec(classes: Optional[str] = None,
                     palette: Optional[str] = None) -> Tuple[Optional[Tuple[str, ...]], Optional[List[Color]]]:
    """Classes and palette from command-line values (see :func:`parse_classes` and :func:`parse_palette`).

    When ``palette`` is not given and ``classes`` is a file that also holds a palette (e.g. a config with
    ``metainfo = dict(classes=..., palette=...)``), the palette is read from it.

    Returns:
        tuple: ``(classes, palette)``, each None where not given.
    """
    names = parse_classes(classes) if classes else None
    colors = parse_palette(palette) if palette else None
    if colors is None and classes and osp.isfile(classes):
        try:
            colors = parse_palette(classes)
        except ISAIDConversionError:  # the file holds classes only
            colors = None
    return names, colors


def check_classes(classes: Optional[Sequence[str]],
                  palette: Optional[Sequence[Sequence[int]]]) -> Tuple[Tuple[str, ...], Optional[List[Color]]]:
    """Validated ``(classes, palette)``; iSAID's when both are None. Raises ISAIDConversionError when invalid."""
    if classes is None and palette is None:
        return tuple(ISAID_CLASSES), [tuple(c) for c in ISAID_PALETTE]
    classes = tuple(ISAID_CLASSES) if classes is None else tuple(str(c) for c in classes)
    if not classes or len(set(classes)) != len(classes):
        raise ISAIDConversionError(f'classes must be non-empty and unique, got {classes}')
    if palette is None:  # fine for json input and test splits; the colour masks need one
        return classes, None
    palette = [tuple(int(c) for c in color) for color in palette]
    if len(palette) != len(classes):
        raise ISAIDConversionError(f'palette has {len(palette)} colours for {len(classes)} classes')
    for color in palette:
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise ISAIDConversionError(f'palette colours must be (R, G, B) in 0..255, got {color}')
        if color == (0, 0, 0):
            raise ISAIDConversionError('palette colour (0, 0, 0) is the background colour of the masks')
    if len(set(palette)) != len(palette):
        raise ISAIDConversionError(f'palette colours must be unique, got {palette}')
    return classes, palette
