"""Keep chosen classes of a COCO instances json and renumber them 1..K.

Annotations of the kept classes are copied unchanged apart from ``category_id`` (their ``id``, ``segmentation``
-- polygons or the RLE of crowd regions -- ``iscrowd``, ``area`` and ``bbox`` stay as they are); annotations of
other classes are removed. Categories are renumbered 1..K in the order the classes are given, which is the order
of ``metainfo['classes']`` in ``configs/_base_/datasets/coco_subset.py``.
"""
import json
import os
from typing import Dict, Sequence, Union

from mmdet_custom.utils.fileio import dump_json_atomic

#: Default subset: category names as COCO spells them, in their new id order 1..4.
COCO_SUBSET_CLASSES = ('person', 'cat', 'sports ball', 'book')


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

    Raises:
        KeyError: ``images``, ``annotations`` or ``categories`` is missing.
        ValueError: a class name is not among the categories (the available names are listed), or a class
            is given twice.
    """
    for key in ('images', 'annotations', 'categories'):
        if key not in coco:
            raise KeyError(f'{source}: COCO json has no {key!r}')
    classes = list(classes)
    if not classes:
        raise ValueError('classes must not be empty')
    if len(set(classes)) != len(classes):
        raise ValueError(f'classes given more than once: {classes}')
    by_name = {c['name']: c for c in coco['categories']}
    unknown = [c for c in classes if c not in by_name]
    if unknown:
        raise ValueError(f'{source}: unknown class name(s) {unknown}; available: {sorted(by_name)}')

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
        ValueError / KeyError: see :func:`subset_coco` (the input file is named); nothing is written then.
    """
    in_file = os.fspath(in_file)
    with open(in_file) as f:
        coco = json.load(f)
    out = subset_coco(coco, classes, drop_empty=drop_empty, source=in_file)
    dump_json_atomic(out, out_file)
    per_class = {c['name']: 0 for c in out['categories']}
    names = {c['id']: c['name'] for c in out['categories']}
    for ann in out['annotations']:
        per_class[names[ann['category_id']]] += 1
    return dict(images=len(out['images']), annotations=len(out['annotations']), per_class=per_class)
