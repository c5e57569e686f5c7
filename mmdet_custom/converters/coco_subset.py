"""Keep chosen classes of a COCO instances json and renumber them 1..K.

Annotations of the kept classes are copied unchanged apart from ``category_id`` (their ``id``, ``segmentation``
-- polygons or the RLE of crowd regions -- ``iscrowd``, ``area`` and ``bbox`` stay as they are); annotations of
other classes are removed. Categories are renumbered 1..K in the order the classes are given, which is the order
of ``metainfo['classes']`` in ``configs/_base_/datasets/coco_subset.py``.

The input is validated first (:func:`check_coco`): a json that would give a silently wrong subset -- no images, a
category name or id listed twice, an annotation pointing to a missing image or category -- is refused with a
:class:`CocoSubsetError` naming the file and field, and nothing is written.
"""
import os
import os.path as osp
import warnings
from collections import Counter
from typing import Dict, Sequence, Union

from mmdet_custom.utils.coco_fields import bbox_problem, number_problem, segmentation_problem
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import dump_json_atomic, load_json

#: Default subset: category names as COCO spells them, in their new id order 1..4.
COCO_SUBSET_CLASSES = ('person', 'cat', 'sports ball', 'book')


class CocoSubsetError(UserError, ValueError):
    """A COCO json or class list the subset tool refuses; the message names the file and field."""


def _first(items, n: int = 5) -> str:
    items = list(items)
    return ', '.join(str(x) for x in items[:n]) + (f', ... ({len(items)} in all)' if len(items) > n else '')


def check_coco(coco: dict, source: str = '<coco>') -> None:
    """Refuse a COCO instances dict that a subset would turn silently wrong.

    Checks: ``images``, ``annotations`` and ``categories`` are lists; ``images`` is not empty and its ``id`` values
    are unique; every category has an ``id`` and a ``name``, both unique; every annotation has ``image_id`` and
    ``category_id`` naming a listed image and category, and annotation ``id`` values are unique; every annotation
    has a ``bbox`` of four finite numbers of non-negative size, a ``segmentation`` (finite polygons, or an RLE whose
    counts cover its image) and a finite ``area`` (a NaN would be written as the invalid json token ``NaN``).

    Raises:
        CocoSubsetError: (a ``ValueError``) naming ``source``, the field and the first offending entries.
    """
    if not isinstance(coco, dict):
        raise CocoSubsetError(f'{source}: expected a COCO json object, got {type(coco).__name__}')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(coco.get(key), list):
            raise CocoSubsetError(f'{source}: field "{key}" missing or not a list (not a COCO instances json?)')
    if not coco['images']:
        raise CocoSubsetError(f'{source}: "images" is empty; a subset of it would train and evaluate on nothing')
    bad = [i for i, im in enumerate(coco['images']) if not isinstance(im, dict) or 'id' not in im]
    if bad:
        raise CocoSubsetError(f'{source}: images[{bad[0]}] has no "id" ({len(bad)} such images)')
    dup = [k for k, n in Counter(im['id'] for im in coco['images']).items() if n > 1]
    if dup:
        raise CocoSubsetError(f'{source}: "images" lists the id(s) {_first(dup)} more than once')

    bad = [i for i, c in enumerate(coco['categories']) if not isinstance(c, dict) or 'id' not in c or 'name' not in c]
    if bad:
        raise CocoSubsetError(f'{source}: categories[{bad[0]}] has no "id" or "name"')
    dup = [k for k, n in Counter(c['id'] for c in coco['categories']).items() if n > 1]
    if dup:
        raise CocoSubsetError(f'{source}: "categories" lists the id(s) {_first(dup)} more than once')
    dup = [k for k, n in Counter(c['name'] for c in coco['categories']).items() if n > 1]
    if dup:
        ids = {name: [c['id'] for c in coco['categories'] if c['name'] == name] for name in dup}
        raise CocoSubsetError(
            f'{source}: "categories" lists the name(s) {_first(f"{n!r} (ids {ids[n]})" for n in dup)} more than '
            f'once; a class name must name one category id. Merge the ids into one category (and its annotations) '
            f'or rename one, then rerun.')

    image_ids = {im['id'] for im in coco['images']}
    cat_ids = {c['id'] for c in coco['categories']}
    missing_field, no_image, no_cat = [], [], []
    for i, ann in enumerate(coco['annotations']):
        if not isinstance(ann, dict) or 'image_id' not in ann or 'category_id' not in ann:
            missing_field.append(i)
        elif ann['image_id'] not in image_ids:
            no_image.append(f'{ann.get("id", f"#{i}")} (image_id {ann["image_id"]})')
        elif ann['category_id'] not in cat_ids:
            no_cat.append(f'{ann.get("id", f"#{i}")} (category_id {ann["category_id"]})')
    if missing_field:
        raise CocoSubsetError(f'{source}: annotations[{missing_field[0]}] has no "image_id" or "category_id" '
                              f'({len(missing_field)} such annotations)')
    if no_image:
        raise CocoSubsetError(f'{source}: annotation(s) {_first(no_image)} point to an image_id that "images" does '
                              f'not list; fix or remove them')
    if no_cat:
        raise CocoSubsetError(f'{source}: annotation(s) {_first(no_cat)} point to a category_id that '
                              f'"categories" does not list; fix or remove them')
    sizes = {im['id']: (im.get('height'), im.get('width')) for im in coco['images']}
    for i, ann in enumerate(coco['annotations']):
        where = f'annotations[{i}] (id {ann.get("id", "none")})'
        for key in ('bbox', 'segmentation'):
            if key not in ann:
                raise CocoSubsetError(f'{source}: {where} has no "{key}": every annotation needs a box and a mask '
                                      f'(polygons, or an RLE for crowd regions)')
        height, width = sizes[ann['image_id']]
        problem = bbox_problem(ann['bbox'])
        field = 'bbox'
        if problem is None:
            field = 'segmentation'
            problem = (segmentation_problem(ann['segmentation'], height, width)
                       if isinstance(height, int) and isinstance(width, int)
                       else segmentation_problem(ann['segmentation']))
        if problem is None and 'area' in ann:
            field = 'area'
            problem = number_problem(ann['area'])
        if problem:
            raise CocoSubsetError(f'{source}: {where} "{field}": {problem}; fix or remove the annotation')
    ann_ids = [a['id'] for a in coco['annotations'] if 'id' in a]
    dup = [k for k, n in Counter(ann_ids).items() if n > 1]
    if dup:
        raise CocoSubsetError(f'{source}: "annotations" lists the id(s) {_first(dup)} more than once')


def subset_coco(coco: dict, classes: Sequence[str] = COCO_SUBSET_CLASSES, drop_empty: bool = False,
                source: str = '<coco>') -> dict:
    """Return a new COCO dict restricted to ``classes``, their ids remapped to 1..K in that order.

    Args:
        coco (dict): COCO instances dict with ``images``, ``annotations`` and ``categories``; not modified
            (the result shares its unchanged nested values, e.g. segmentations, with it).
        classes (Sequence[str]): category names to keep, in their new id order. Defaults to
            :data:`COCO_SUBSET_CLASSES`.
        drop_empty (bool): drop images with no annotation of a kept class (a crowd annotation counts as one,
            as in mmdet's ``filter_empty_gt``). Defaults to False: all images are kept.
        source (str): name of the input used in error messages.

    Returns:
        dict: ``info``/``licenses`` and any other top-level keys copied, ``images`` (all or the non-empty
        ones, in input order), ``annotations`` of kept classes (input order, ``category_id`` remapped) and
        ``categories`` ``[{'id': k, 'name': classes[k - 1], 'supercategory': ...}, ...]``.

    Warns:
        UserWarning: a kept class has no annotation, or the subset holds none at all.

    Raises:
        CocoSubsetError: (a ``ValueError``) the json fails :func:`check_coco`, a class name is not among the
            categories (the available names are listed), a class is given twice or no class is given.
    """
    check_coco(coco, source)
    # image and annotation ids stay the source's (only categories are renumbered): an image of the subset is the
    # source's image of the same id, so per-image results and lists carry over between the two
    classes = list(classes)
    if not classes:
        raise CocoSubsetError('classes (--classes) must not be empty')
    if len(set(classes)) != len(classes):
        raise CocoSubsetError(f'classes (--classes) given more than once: {classes}')
    by_name = {c['name']: c for c in coco['categories']}
    unknown = [c for c in classes if c not in by_name]
    if unknown:
        raise CocoSubsetError(f'{source}: unknown class name(s) {unknown}; available: {sorted(by_name)}')

    old_to_new = {by_name[name]['id']: new_id for new_id, name in enumerate(classes, start=1)}
    categories = []
    for new_id, name in enumerate(classes, start=1):
        cat = {k: v for k, v in by_name[name].items() if k != 'id'}
        categories.append(dict(id=new_id, **cat))

    annotations = []
    for ann in coco['annotations']:
        new_id = old_to_new.get(ann['category_id'])
        if new_id is not None:
            annotations.append(dict(ann, category_id=new_id))  # shallow: the input is never mutated
    images = coco['images']
    if drop_empty:
        with_ann = {ann['image_id'] for ann in annotations}
        images = [im for im in images if im['id'] in with_ann]

    counts = Counter(ann['category_id'] for ann in annotations)
    if not annotations:
        warnings.warn(f'{source}: no annotation of {classes} in {len(coco["images"])} images: the subset is empty')
    elif len(counts) < len(classes):
        empty = [name for k, name in enumerate(classes, start=1) if not counts[k]]
        warnings.warn(f'{source}: no annotation of {empty}; the subset keeps the class with no example')

    out = {k: v for k, v in coco.items() if k not in ('images', 'annotations', 'categories')}
    out.update(images=list(images), annotations=annotations, categories=categories)
    return out


def convert_coco_subset(in_file: Union[str, os.PathLike],
                        out_file: Union[str, os.PathLike],
                        classes: Sequence[str] = COCO_SUBSET_CLASSES,
                        drop_empty: bool = False) -> Dict[str, object]:
    """Read a COCO instances json, apply :func:`subset_coco` and write the result atomically to ``out_file``.

    Returns:
        dict: ``images`` and ``annotations`` written, and ``per_class`` annotation counts by class name.

    Raises:
        UserError: ``in_file`` is missing or not valid json (line and column named), or ``out_file`` is
            ``in_file``; nothing is written then.
        CocoSubsetError: see :func:`subset_coco` (the input file is named); nothing is written then.
    """
    in_file, out_file = os.fspath(in_file), os.fspath(out_file)
    if osp.realpath(in_file) == osp.realpath(out_file):
        raise UserError(f'output json {out_file} is the input json {in_file}: it would replace the input; '
                        f'choose another output file')
    coco = load_json(in_file, 'COCO instances json')
    out = subset_coco(coco, classes, drop_empty=drop_empty, source=in_file)
    if osp.isdir(out_file):
        raise UserError(f'output json {out_file} is a folder; give a file name such as {osp.join(out_file, "x.json")}')
    dump_json_atomic(out, out_file)
    per_class = {c['name']: 0 for c in out['categories']}
    names = {c['id']: c['name'] for c in out['categories']}
    for ann in out['annotations']:
        per_class[names[ann['category_id']]] += 1
    return dict(images=len(out['images']), annotations=len(out['annotations']), per_class=per_class)
