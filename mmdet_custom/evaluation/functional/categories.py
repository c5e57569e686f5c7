"""Categories of a COCO json matched to a dataset's classes *by name* (torch-free).

mmdet's ``CocoDataset`` and ``CocoMetric`` take ``cat_ids = coco.get_cat_ids(cat_names=classes)``, which pycocotools
returns in the order the json lists its categories, and then number the labels ``0, 1, ...`` in that order. A json
whose categories are not listed in the classes' order gets every label permuted without a word: the official iSAID
devkit lists only the classes present, in order of first appearance, with iSAID's fixed ids (e.g. Large_Vehicle 8,
Small_Vehicle 9, storage_tank 2), and its released train and val jsons give the same class different ids. Here the
one mapping used by the dataset (labels), the metric (``category_id`` of each prediction) and the per-class table is
``label i -> the category whose name is classes[i]``, whatever the json's ids and order.
"""
from typing import Dict, List, Optional, Sequence

from mmdet_custom.utils.errors import UserError


class CategoryMismatchError(UserError, ValueError):
    """A json's categories do not match the dataset's class names (unknown, duplicated or malformed entries)."""


def _suggestion(name: str, classes: Sequence[str]) -> str:
    same_but_case = [c for c in classes if c.lower() == name.lower()]
    return f' (did you mean {same_but_case[0]!r}? names are case-sensitive)' if same_but_case else ''


def category_ids_by_name(categories: Sequence[dict], classes: Sequence[str], source: str) -> List[Optional[int]]:
    """The category id of each class, matched by name.

    Args:
        categories (Sequence[dict]): the json's ``categories`` (each with ``id`` and ``name``).
        classes (Sequence[str]): the dataset's class names; label ``i`` is ``classes[i]``.
        source (str): the json file (or a description), for messages.

    Returns:
        list[int | None]: ``ids[i]`` is the id of the category named ``classes[i]``, or None where the json lists
        no such category (a devkit json lists only the classes present in it).

    Raises:
        CategoryMismatchError: an entry without ``id``/``name``, a name or id listed twice, or a category name that
            is none of ``classes`` (the message names ``source``, the names and the expected names).
    """
    if not isinstance(categories, (list, tuple)):
        raise CategoryMismatchError(f"{source}: 'categories' must be a list of {{'id', 'name'}}, "
                                    f'got {type(categories).__name__}')
    by_name: Dict[str, int] = {}
    seen_ids: Dict[int, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or 'id' not in cat or 'name' not in cat:
            raise CategoryMismatchError(f"{source}: categories[{i}] must have an 'id' and a 'name', got {cat!r}")
        name, cat_id = cat['name'], cat['id']
        if name in by_name:
            raise CategoryMismatchError(
                f'{source}: category name {name!r} is listed twice (ids {by_name[name]} and {cat_id}); categories '
                f'are matched to the classes by name, so each name must appear once')
        if cat_id in seen_ids:
            raise CategoryMismatchError(
                f'{source}: category id {cat_id} is listed twice ({seen_ids[cat_id]!r} and {name!r})')
        by_name[name] = cat_id
        seen_ids[cat_id] = name
    unknown = [name for name in by_name if name not in classes]
    if unknown:
        hints = ''.join(f'\n  {name!r}{_suggestion(name, classes)}' for name in unknown)
        raise CategoryMismatchError(
            f'{source}: {len(unknown)} category name(s) are none of the {len(classes)} class names:{hints}\n'
            f'the json names: {list(by_name)}\nexpected names: {list(classes)}\n'
            f'Categories are matched by exact name: rename them in the json, or give the dataset (and metric) the '
            f"json's names with metainfo=dict(classes=...).")
    return [by_name.get(name) for name in classes]
