"""Cutting the raw splits into patches and writing the output folder (see the package docstring for the layouts)."""
import os
import os.path as osp
import shutil
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import shapely
import shapely.affinity
from tqdm import tqdm

from mmdet_custom.utils.fileio import atomic_dir, check_output_outside_inputs, dump_json_atomic

from .classes import check_classes
from .common import (
    DEFAULT_SPLITS,
    DEVKIT_AREA_THRESHOLD,
    DEVKIT_SKIP_IMAGES,
    FILTERED_SPLIT,
    IMAGE_ONLY_SPLITS,
    MASK_MODES,
    ISAIDConversionError,
    PathLike,
    Window,
    pause_point,
)
from .filters import filter_train
from .masks import devkit_annotation, exact_annotation, mask_to_polygons, polygons_of
from .sources import find_json, image_size, list_images, load_json_source, read_image, read_instances
from .windows import keeps_whole, natural_key, patch_file_name, sliding_windows

_MAX_LISTED = 3  # files named per warning


@dataclass
class _Patch:
    image_path: str
    window: Window
    whole: bool
    annotations: List[dict] = field(default_factory=list)

    @property
    def file_name(self) -> str:
        return patch_file_name(self.image_path, self.window, self.whole)


class ConversionSummary(dict):
    """:func:`convert_isaid`'s result: split -> counts (a dict), plus ``skipped_splits`` (split -> reason) for the
    default splits not found under the raw root."""

    def __init__(self, *args, skipped_splits: Optional[Dict[str, str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.skipped_splits = dict(skipped_splits or {})


# ----------------------------------------------------------------------------------------------------------------
# Patches of one image
# ----------------------------------------------------------------------------------------------------------------
def _devkit_class(inst, k: int, region, crop: np.ndarray, devkit_codes: np.ndarray) -> int:
    """0-based class the devkit gives instance ``k`` in one patch: of the colours under it there, the one with the
    smallest ``R + 256 G + 65536 B`` (cityscapesScripts ``Instance.getLabelID`` takes ``np.unique(...)[0]``)."""
    if not inst.mixed[k]:
        return int(inst.majority[k])
    present = np.unique(inst.pixel_class[region][crop])
    return int(present[np.argmin(devkit_codes[present])])


def _patches_from_masks(image_path: str, windows: List[Window], whole: bool, palette, masks: str, rle: bool,
                        area_threshold: int, counts: Counter):
    inst = read_instances(image_path, palette)
    devkit_codes = np.array([r + 256 * g + 65536 * b for r, g, b in palette], dtype=np.int64)
    boxes = inst.boxes
    patches = []
    for window in windows:
        y0, y1, x0, x1 = window
        height, width = y1 - y0, x1 - x0
        patch = _Patch(image_path, window, whole)
        hits = np.flatnonzero((boxes[:, 0] < y1) & (boxes[:, 1] > y0) & (boxes[:, 2] < x1) & (boxes[:, 3] > x0))
        found = []
        for k in hits:
            by0, by1, bx0, bx1 = boxes[k]
            cy0, cy1, cx0, cx1 = max(by0, y0), min(by1, y1), max(bx0, x0), min(bx1, x1)
            region = (slice(cy0, cy1), slice(cx0, cx1))
            crop = inst.labels[region] == k + 1
            if not crop.any():
                continue
            if masks == 'devkit':
                category = _devkit_class(inst, k, region, crop, devkit_codes) + 1
                ann = devkit_annotation(category, crop, (cx0 - x0, cy0 - y0), height, width, rle=rle)
                if ann is None:
                    counts['dropped_invalid_contour'] += 1
                    continue
            elif rle:
                mask = np.zeros((height, width), dtype=np.uint8)
                mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = crop
                ann = exact_annotation(int(inst.majority[k]) + 1, height, width, mask=mask, rle=True)
            else:  # trace the crop only, then shift to patch coordinates (whole pixels: still exact)
                polygons = [(np.reshape(p, (-1, 2)) + (cx0 - x0, cy0 - y0)).ravel().tolist()
                            for p in mask_to_polygons(crop)]
                ann = exact_annotation(int(inst.majority[k]) + 1, height, width, polygons=polygons)
            if ann is None:
                continue
            if ann['area'] <= area_threshold:
                counts['dropped_small'] += 1
                continue
            found.append((ann['category_id'], int(inst.order[k]), ann))
        # the devkit's order: by class (its label list = the classes' order), then by its instance number
        patch.annotations = [ann for _, _, ann in sorted(found, key=lambda item: item[:2])]
        patches.append(patch)
    return patches, int(np.count_nonzero(inst.mixed)), inst.unassigned


def _patches_from_geometries(image_path: str, windows: List[Window], whole: bool, anns, masks: str, rle: bool,
                             area_threshold: int, counts: Counter) -> List[_Patch]:
    bounds = []
    for _, geom, _ in anns:
        if isinstance(geom, np.ndarray):
            ys, xs = np.nonzero(geom)
            bounds.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0))
        else:
            bounds.append(geom.bounds if not geom.is_empty else (0, 0, 0, 0))
    bounds = np.array(bounds, dtype=np.float64).reshape(-1, 4)
    patches = []
    for window in windows:
        y0, y1, x0, x1 = window
        height, width = y1 - y0, x1 - x0
        patch = _Patch(image_path, window, whole)
        hits = np.flatnonzero((bounds[:, 0] < x1) & (bounds[:, 2] > x0) & (bounds[:, 1] < y1) & (bounds[:, 3] > y0))
        for k in hits:
            category_id, geom, iscrowd = anns[k]
            if isinstance(geom, np.ndarray):  # an RLE mask: traced as the PNG masks are
                crop = geom[y0:y1, x0:x1]
                if masks == 'devkit':
                    if not crop.any():
                        continue
                    ann = devkit_annotation(category_id, crop, (0, 0), height, width, rle=rle, iscrowd=iscrowd)
                    if ann is None:
                        counts['dropped_invalid_contour'] += 1
                        continue
                else:
                    ann = exact_annotation(category_id, height, width, mask=crop.astype(np.uint8), rle=rle,
                                           iscrowd=iscrowd)
            else:  # polygons: the json's own shapes, clipped to the window
                clipped = shapely.intersection(geom, shapely.box(x0, y0, x1, y1))
                clipped = shapely.affinity.translate(clipped, -x0, -y0)
                ann = exact_annotation(category_id, height, width, polygons=polygons_of(clipped), rle=rle,
                                       iscrowd=iscrowd)
            if ann is None:
                continue
            if ann['area'] <= area_threshold:
                counts['dropped_small'] += 1
                continue
            patch.annotations.append(ann)
        patches.append(patch)
    return patches


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def _write_patches(patches: List[_Patch], folder: str, desc: str, show_progress: bool) -> None:
    by_image: Dict[str, List[_Patch]] = {}
    for patch in patches:
        by_image.setdefault(patch.image_path, []).append(patch)
    for image_path, group in tqdm(by_image.items(), desc=desc, unit='img', disable=not show_progress):
        if len(group) == 1 and group[0].whole and image_path.lower().endswith('.png'):
            shutil.copyfile(image_path, osp.join(folder, group[0].file_name))  # as the devkit: the file unchanged
            continue
        image = read_image(image_path)
        for patch in group:
            y0, y1, x0, x1 = patch.window
            path = osp.join(folder, patch.file_name)
            if not cv2.imwrite(path, np.ascontiguousarray(image[y0:y1, x0:x1])):
                raise OSError(f'cannot write {path}')


def _coco_dict(patches: List[_Patch], classes: Sequence[str], info: dict) -> dict:
    images, annotations = [], []
    # image ids from 0 in patch order, as the devkit's instancesonly_filtered_<split>.json: results exported against
    # our json then score against the devkit's. Annotation ids start at 1 instead: pycocotools' matching reads an
    # annotation id 0 as "unmatched"
    for image_id, patch in enumerate(patches):
        y0, y1, x0, x1 = patch.window
        images.append(dict(id=image_id, file_name=patch.file_name, height=y1 - y0, width=x1 - x0,
                           source_file=osp.basename(patch.image_path), window=list(patch.window)))
        for ann in patch.annotations:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, **ann))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(classes)]
    return dict(info=info, images=images, annotations=annotations, categories=categories)


def _split_warnings(split: str, summary: dict) -> List[str]:
    warnings = []
    unassigned = summary['unassigned_pixels']
    if unassigned:
        total = sum(u['pixels'] for u in unassigned)
        listed = '; '.join(f'{u["file"]}: {u["pixels"]} px, first at (x={u["first"][0]}, y={u["first"][1]})'
                           for u in unassigned[:_MAX_LISTED])
        more = f'; and {len(unassigned) - _MAX_LISTED} more files' if len(unassigned) > _MAX_LISTED else ''
        warnings.append(f'{split}: {total} coloured pixels in {len(unassigned)} id masks have instance id 0 and '
                        f'belong to no instance (left out, as the devkit does): {listed}{more}')
    if split not in IMAGE_ONLY_SPLITS and summary['instances'] == 0:
        warnings.append(f'{split}: no instance in any of its {summary["patches"]} written patches: a model trained '
                        f'or evaluated on it learns or measures nothing; check the masks and --classes/--palette')
    return warnings


def _convert_split(raw_dir: str, out_dir: str, split: str, classes, palette, patch_size: int, overlap: int,
                   max_boxes, max_empty_fraction, rle: bool, seed: int, source: str, show_progress: bool,
                   masks: str, area_threshold: int, skip_images: Sequence[str]) -> dict:
    img_dir = osp.join(raw_dir, split, 'images')
    json_path = find_json(raw_dir, split) if split not in IMAGE_ONLY_SPLITS and source != 'masks' else None
    if source == 'json' and split not in IMAGE_ONLY_SPLITS and json_path is None:
        raise ISAIDConversionError(f'no iSAID_{split}.json under {raw_dir} (looked in {split}/Annotations, {split}, .)')
    summary = dict(source='images' if split in IMAGE_ONLY_SPLITS else ('json' if json_path else 'masks'),
                   masks=masks)
    patches: List[_Patch] = []
    counts: Counter = Counter(dropped_small=0, dropped_invalid_contour=0)
    mixed, unassigned = 0, []
    if json_path is not None:
        items, skipped = load_json_source(json_path, img_dir, classes, skip_images)
        for image_path, (height, width), anns in tqdm(items, desc=f'{split}: clipping', unit='img',
                                                      disable=not show_progress):
            windows = sliding_windows(height, width, patch_size, overlap)
            patches += _patches_from_geometries(image_path, windows, keeps_whole(height, width, patch_size), anns,
                                                masks, rle, area_threshold, counts)
        num_images = len(items)
    else:
        if palette is None and split not in IMAGE_ONLY_SPLITS:
            raise ISAIDConversionError(f'{len(classes)} custom classes given without a palette: the colour masks of '
                                       f'{split} need one (R, G, B) colour per class')
        names = list_images(img_dir)
        skipped = [n for n in names if osp.splitext(n)[0] in skip_images]
        names = [n for n in names if n not in skipped]
        num_images = len(names)
        for name in tqdm(names, desc=f'{split}: {summary["source"]}', unit='img', disable=not show_progress):
            image_path = osp.join(img_dir, name)
            height, width = image_size(image_path)
            windows = sliding_windows(height, width, patch_size, overlap)
            whole = keeps_whole(height, width, patch_size)
            if split in IMAGE_ONLY_SPLITS:
                patches += [_Patch(image_path, w, whole) for w in windows]
            else:
                image_patches, image_mixed, image_unassigned = _patches_from_masks(
                    image_path, windows, whole, palette, masks, rle, area_threshold, counts)
                patches += image_patches
                mixed += image_mixed
                if image_unassigned:
                    unassigned.append(image_unassigned)
    patches.sort(key=lambda p: natural_key(p.file_name))  # the devkit lists patches in natsort order
    summary.update(images=num_images, skipped_images=list(skipped), patches_total=len(patches))
    dropped_crowded = dropped_empty = 0
    if split == FILTERED_SPLIT:
        patches, dropped_crowded, dropped_empty = filter_train(patches, max_boxes, max_empty_fraction, seed)
    per_class = {name: 0 for name in classes}
    for patch in patches:
        for ann in patch.annotations:
            per_class[classes[ann['category_id'] - 1]] += 1
    summary.update(patches=len(patches), empty_patches=sum(not p.annotations for p in patches),
                   dropped_max_boxes=dropped_crowded, dropped_empty=dropped_empty,
                   dropped_small=counts['dropped_small'], dropped_invalid_contour=counts['dropped_invalid_contour'],
                   instances=sum(per_class.values()), instances_per_class=per_class, mixed_colour_instances=mixed,
                   unassigned_pixels=unassigned)
    summary['warnings'] = _split_warnings(split, summary)

    images_dir = osp.join(out_dir, split, 'images')
    if osp.lexists(images_dir):  # the previous output's copy (hard links) inside the temporary folder
        shutil.rmtree(images_dir)
    os.makedirs(images_dir)
    _write_patches(patches, images_dir, f'{split}: patches', show_progress)
    pause_point(f'{split}:patches_written')
    info = dict(description=f'iSAID {split} patches', patch_size=patch_size, overlap=overlap, masks=masks,
                area_threshold=area_threshold, skip_images=list(skip_images), source=summary['source'], rle=rle,
                seed=seed, max_boxes=max_boxes if split == FILTERED_SPLIT else None,
                max_empty_fraction=max_empty_fraction if split == FILTERED_SPLIT else None)
    dump_json_atomic(_coco_dict(patches, classes, info), osp.join(out_dir, 'annotations', f'instances_{split}.json'))
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
def _check_args(patch_size, overlap, max_boxes, max_empty_fraction, source, masks, area_threshold) -> None:
    if source not in ('auto', 'masks', 'json'):
        raise ISAIDConversionError(f"source must be 'auto', 'masks' or 'json', got {source!r}")
    if masks not in MASK_MODES:
        raise ISAIDConversionError(f'masks must be one of {MASK_MODES}, got {masks!r}')
    try:
        sliding_windows(1, 1, patch_size, overlap)
    except ValueError as e:
        raise ISAIDConversionError(f'--patch-size {patch_size} / --overlap {overlap}: {e}') from e
    if max_boxes is not None and (int(max_boxes) != max_boxes or max_boxes < 1):
        raise ISAIDConversionError(f'max_boxes must be an integer >= 1 or None, got {max_boxes}')
    if max_empty_fraction is not None and not 0 <= max_empty_fraction <= 1:
        raise ISAIDConversionError(f'max_empty_fraction must be in [0, 1] or None, got {max_empty_fraction}')
    if int(area_threshold) != area_threshold or area_threshold < 0:
        raise ISAIDConversionError(f'area_threshold must be an integer >= 0, got {area_threshold}')


def _resolve_splits(raw_dir: str, splits: Optional[Sequence[str]]):
    if splits is not None:
        return [splits] if isinstance(splits, str) else list(splits), {}
    present = [s for s in DEFAULT_SPLITS if osp.isdir(osp.join(raw_dir, s, 'images'))]
    skipped = {s: f'no {s}/images under {raw_dir}' for s in DEFAULT_SPLITS if s not in present}
    if not present:
        raise ISAIDConversionError(f'no split found under {raw_dir}: expected the devkit layout '
                                   f'<split>/images/Pxxxx.png for one of {", ".join(DEFAULT_SPLITS)}')
    return present, skipped


def convert_isaid(raw_dir: PathLike,
                  out_dir: PathLike,
                  splits: Optional[Sequence[str]] = None,
                  patch_size: int = 800,
                  overlap: int = 200,
                  max_boxes: Optional[int] = None,
                  max_empty_fraction: Optional[float] = None,
                  rle: bool = False,
                  classes: Optional[Sequence[str]] = None,
                  palette: Optional[Sequence[Sequence[int]]] = None,
                  seed: int = 0,
                  source: str = 'auto',
                  show_progress: bool = True,
                  *,
                  masks: str = 'devkit',
                  area_threshold: int = DEVKIT_AREA_THRESHOLD,
                  skip_images: Sequence[str] = DEVKIT_SKIP_IMAGES) -> ConversionSummary:
    """Cut the raw iSAID splits into patches and write one COCO json per split, by default exactly as the official
    devkit does (layouts: see :mod:`mmdet_custom.converters.isaid`).

    Defaults reproduce the devkit (``preprocess/split.py`` + ``preprocess/preprocess.py``, Waqas Zamir et al.,
    iSAID, CVPR-W 2019): 800 x 800 windows with overlap 200 (an image with a side <= 800 kept whole), images P1527
    and P1530 skipped, the devkit's polygons, instances of area <= 10 px or with a contour of <= 2 points dropped,
    every patch kept; image ids 0..N-1 in the devkit's (natural) patch order. Categories are always written as ids
    1..K by name in ``classes`` order, annotation ids from 1.

    Args:
        raw_dir (str | PathLike): root of the raw devkit layout (``<raw_dir>/<split>/images``).
        out_dir (str | PathLike): output root, written whole or not at all (see Raises); splits converted
            earlier and not named now are kept.
        splits (Sequence[str], optional): splits to convert, in order; ``test`` is read as images only. None
            converts those of ``train``, ``val``, ``test`` present under ``raw_dir`` (the others are listed in
            the result's ``skipped_splits``). Defaults to None.
        patch_size (int): patch side in pixels; an image with a side <= ``patch_size`` is kept whole.
            Defaults to 800.
        overlap (int): overlap of neighbouring patches in pixels (stride = patch_size - overlap). Defaults to 200.
        max_boxes (int, optional): train only: patches with more instances are dropped; None keeps all (the
            devkit). Defaults to None.
        max_empty_fraction (float, optional): train only: at most this fraction of the kept patches is empty
            (chosen at random with ``seed``); None or 1 keeps all (the devkit). Defaults to None.
        rle (bool): write masks as compressed RLE instead of polygons (``masks='devkit'``: its polygons
            rasterised). Defaults to False.
        classes (Sequence[str], optional): class names, category id = index + 1. Defaults to ``ISAID_CLASSES``.
        palette (Sequence[tuple], optional): (R, G, B) colour of each class in the colour masks. Defaults to
            ``ISAID_PALETTE``; needed with custom classes when the masks are read.
        seed (int): seed of the empty-patch choice. Defaults to 0.
        source (str): ``'auto'`` (the official json when found, else the PNG masks), ``'masks'`` or ``'json'``.
        show_progress (bool): show tqdm progress bars. Defaults to True.
        masks (str): ``'devkit'``: polygons through boundary-pixel centres, area = pixel count, as the devkit
            (the ground truth of published iSAID numbers); ``'exact'``: masks that rasterise back to exactly the
            instance's pixels. Applies to the PNG masks and to RLE masks of a json; json polygons are clipped as
            they are. Defaults to ``'devkit'``.
        area_threshold (int): instances whose area is at most this many pixels are dropped (the devkit: 10;
            0 keeps all). Defaults to 10.
        skip_images (Sequence[str]): image stems left out (the devkit: P1527, P1530; ``()`` keeps all).

    Returns:
        ConversionSummary: per split: ``source``, ``masks``, ``images`` (source images), ``skipped_images``,
        ``patches_total`` (windows), ``patches`` (written), ``empty_patches``, ``dropped_max_boxes``,
        ``dropped_empty``, ``dropped_small`` (area <= ``area_threshold``), ``dropped_invalid_contour`` (the devkit's
        contour check), ``instances``, ``instances_per_class`` (name -> count, over the written patches),
        ``mixed_colour_instances`` (instances whose pixels carry several class colours: the devkit takes the
        colour with the smallest ``R + 256 G + 65536 B`` in each patch, ``'exact'`` the majority),
        ``unassigned_pixels`` (per id mask with coloured pixels of instance id 0: ``file``, ``pixels``, ``first``
        ``[x, y]``) and ``warnings`` (those, and a split with no instance at all); ``skipped_splits``.

    Raises:
        ISAIDConversionError: on bad input data (names the file): a missing image folder or mask PNG, a colour of
            no class (with the pixel), a size mismatch between an image and its masks or json entry, an unreadable
            file, a json category not in ``classes``, an RLE of another size than its image; or bad arguments.
            Nothing is written then: ``out_dir`` stays as it was.
        UserError: ``out_dir`` is, contains or lies inside ``raw_dir``, or is a non-empty folder this project did
            not write.
    """
    raw_dir, out_dir = os.fspath(raw_dir), os.fspath(out_dir)
    _check_args(patch_size, overlap, max_boxes, max_empty_fraction, source, masks, area_threshold)
    if not osp.isdir(raw_dir):
        raise ISAIDConversionError(f'raw iSAID folder not found: {raw_dir}')
    check_output_outside_inputs(out_dir, raw_dir)
    splits, skipped_splits = _resolve_splits(raw_dir, splits)
    classes, palette = check_classes(classes, palette)
    skip_images = tuple(str(s) for s in skip_images)
    result = ConversionSummary(skipped_splits=skipped_splits)
    with atomic_dir(out_dir, keep_existing=True) as tmp:
        for split in splits:
            result[split] = _convert_split(raw_dir, tmp, split, classes, palette, patch_size, overlap, max_boxes,
                                           max_empty_fraction, rle, seed, source, show_progress, masks,
                                           int(area_threshold), skip_images)
        pause_point('before_swap')
    return result


def format_summary(summary: Dict[str, dict]) -> str:
    """A readable table of :func:`convert_isaid`'s summary: patches and filter counts, instances per class, then
    skipped splits and warnings (lines starting with ``warning:``)."""
    lines, warnings = [], []
    for split, s in summary.items():
        dropped = [f'{s["dropped_small"]} of area <= threshold', f'{s["dropped_invalid_contour"]} with an invalid '
                   f'contour']
        if s['dropped_max_boxes'] or s['dropped_empty']:
            dropped += [f'{s["dropped_max_boxes"]} patches with more than max-boxes',
                        f'{s["dropped_empty"]} empty patches']
        skipped = f' ({len(s["skipped_images"])} skipped: {", ".join(s["skipped_images"])})' \
            if s['skipped_images'] else ''
        head = f'{split} (from {s["source"]}' + (')' if s['source'] == 'images' else f', {s["masks"]} masks)')
        line = f'{head}: {s["images"]} images{skipped} -> {s["patches_total"]} patches, {s["patches"]} written'
        if s['source'] == 'images':  # iSAID ships no annotations for its test split: no patch can hold any
            line += f'; the {split} split has no annotations (iSAID ships none)'
        else:
            line += (f' ({s["empty_patches"]} without instances); {s["instances"]} instances; '
                     f'dropped: {", ".join(dropped)}')
            if s['mixed_colour_instances']:
                line += f'; {s["mixed_colour_instances"]} with mixed colours'
        lines.append(line)
        for name, count in s['instances_per_class'].items():
            if count:
                lines.append(f'    {name:<20s} {count}')
        warnings += s.get('warnings', [])
    for split, reason in getattr(summary, 'skipped_splits', {}).items():
        lines.append(f'{split}: skipped ({reason})')
    lines += [f'warning: {w}' for w in warnings]
    return '\n'.join(lines)
