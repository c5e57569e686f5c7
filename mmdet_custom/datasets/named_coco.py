"""A COCO dataset whose labels follow the class *names*, never the json's category order or ids."""
import copy
from typing import List

import numpy as np
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.fileio import get_local_path

from mmdet_custom.evaluation.functional.categories import CategoryMismatchError, category_ids_by_name
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import load_json


class EmptyTrainingSetError(UserError, ValueError):
    """A training json (or its filtered subset) holds nothing to learn from."""


@DATASETS.register_module()
class NamedCocoDataset(CocoDataset):
    """mmdet's :class:`~mmdet.datasets.CocoDataset` with categories matched to ``metainfo['classes']`` by name.

    mmdet's ``CocoDataset`` takes ``cat_ids = coco.get_cat_ids(cat_names=classes)``, which comes back in the order
    the json *lists* its categories, and numbers the labels in that order. A json whose categories are listed in
    another order than the classes (the official iSAID devkit lists only the classes present, in order of first
    appearance) gets every label permuted, silently. Here label ``i`` is always the json category named
    ``classes[i]``, whatever its id and position; classes the json does not list simply have no instances.

    The json is refused, with a :class:`~mmdet_custom.utils.errors.UserError` naming the file, when:

    * a category name is none of the classes (e.g. lower-cased names), with the json's and the expected names;
    * an annotation has a ``category_id`` that ``categories`` does not list (it would be dropped silently);
    * in training mode (``test_mode=False``): the json has no image, or no annotation of any class (training on
      it runs with zero box and mask losses and learns nothing), or ``filter_cfg`` leaves no image.

    Everything else (``parse_data_info``, ``filter_data``, the pipeline) is ``CocoDataset``'s. Arguments are
    ``CocoDataset``'s.

    Raises:
        UserError: as listed above, or a missing / malformed annotation file.
    """

    def load_data_list(self) -> List[dict]:
        """Load ``ann_file`` with the by-name category mapping; the per-image loop is ``CocoDataset``'s.

        Returns:
            list[dict]: one data info per image (``img_id``, ``img_path``, ``instances`` with ``bbox`` xyxy in
            pixels, ``bbox_label`` = index in ``metainfo['classes']``, ``mask``, ``ignore_flag``).
        """
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            data = load_json(local_path, 'annotation file')
        if not isinstance(data, dict) or not isinstance(data.get('images'), list) or not isinstance(
                data.get('categories'), list) or not isinstance(data.get('annotations', []), list):
            raise UserError(f"{self.ann_file}: a COCO annotation file is an object with the lists 'images', "
                            f"'annotations' and 'categories'")
        data.setdefault('annotations', [])
        classes = tuple(self.metainfo['classes'])
        ids = category_ids_by_name(data['categories'], classes, self.ann_file)
        self.cat_ids = [cat_id for cat_id in ids if cat_id is not None]
        self.cat2label = {cat_id: label for label, cat_id in enumerate(ids) if cat_id is not None}
        self._check_annotations(data, ids)

        self.coco = self.COCOAPI()
        self.coco.dataset = data
        self.coco.createIndex()
        self.cat_img_map = copy.deepcopy(self.coco.catToImgs)
        data_list, total_ann_ids = [], []
        for img_id in self.coco.get_img_ids():
            raw_img_info = self.coco.load_imgs([img_id])[0]
            raw_img_info['img_id'] = img_id
            ann_ids = self.coco.get_ann_ids(img_ids=[img_id])
            total_ann_ids.extend(ann_ids)
            data_list.append(self.parse_data_info(
                dict(raw_ann_info=self.coco.load_anns(ann_ids), raw_img_info=raw_img_info)))
        if self.ANN_ID_UNIQUE and len(set(total_ann_ids)) != len(total_ann_ids):
            raise UserError(f"{self.ann_file}: annotation ids are not unique ({len(total_ann_ids)} annotations, "
                            f'{len(set(total_ann_ids))} ids)')
        del self.coco
        return data_list

    def _check_annotations(self, data: dict, ids: list) -> None:
        listed = {cat['id'] for cat in data['categories']}
        unlisted = [ann.get('category_id') for ann in data['annotations'] if ann.get('category_id') not in listed]
        if unlisted:
            raise CategoryMismatchError(
                f"{self.ann_file}: {len(unlisted)} annotation(s) have a category_id that 'categories' does not list "
                f'(first: {unlisted[0]!r}; listed ids: {sorted(listed)}); they would be dropped silently')
        self._check_coordinates(data['annotations'])
        if self.test_mode:
            return
        names = [cat['name'] for cat in data['categories']]
        if not data['images']:
            raise EmptyTrainingSetError(f"{self.ann_file}: 'images' is empty: nothing to train on")
        used = set(self.cat_ids)
        if not any(ann['category_id'] in used for ann in data['annotations']):
            raise EmptyTrainingSetError(
                f'{self.ann_file}: no annotation belongs to any of the {len(self.metainfo["classes"])} classes '
                f'({len(data["annotations"])} annotations; the json names: {names}; expected names: '
                f'{list(self.metainfo["classes"])}). Training on it would run with zero box and mask losses and '
                f'learn nothing: check the file (e.g. the right split, category names spelled as the classes).')

    def _check_coordinates(self, annotations: list) -> None:
        """Refuse a NaN / infinite / non-numeric ``bbox`` or polygon coordinate (json allows ``NaN``): mmdet would
        drop such a box silently or train on it (its IoU with every anchor is NaN)."""
        for ann in annotations:
            fields = [('bbox', ann.get('bbox', []))]
            seg = ann.get('segmentation')
            if isinstance(seg, list):
                fields += [(f'segmentation[{k}]', poly) for k, poly in enumerate(seg)]
            for field, values in fields:
                try:
                    ok = bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    raise UserError(f"{self.ann_file}: annotation id {ann.get('id')!r} (image_id "
                                    f"{ann.get('image_id')!r}): '{field}' holds a NaN, infinite or non-numeric "
                                    f'coordinate ({str(values)[:80]}); fix or remove the annotation')

    def filter_data(self) -> List[dict]:
        """``CocoDataset.filter_data``; in training mode, a filter that leaves no image is an error.

        Raises:
            EmptyTrainingSetError: ``filter_cfg`` removed every image of a training json.
        """
        data_list = super().filter_data()
        if not self.test_mode and not data_list:
            raise EmptyTrainingSetError(
                f'{self.ann_file}: filter_cfg={self.filter_cfg} leaves none of its {len(self.data_list)} images '
                f'(e.g. filter_empty_gt with no annotated image, or min_size larger than every image)')
        return data_list
