"""Export of COCO-style instance results for images without labels (``tools/test.py --format-only``)."""
import os.path as osp
from typing import Optional, Sequence

from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger

from mmdet_custom.evaluation.functional import (
    CategoryMismatchError,
    category_ids_by_name,
    load_name_to_ids,
    predictions_to_coco_results,
)
from mmdet_custom.utils.fileio import dump_json_atomic, load_json


@METRICS.register_module()
class CocoResultsExport(BaseMetric):
    """Write predictions as one COCO results json: ``image_id``, ``category_id``, ``bbox`` (xywh, pixels),
    ``score`` and an RLE ``segmentation`` per instance, loadable with pycocotools ``COCO.loadRes``.

    Unlike ``CocoMetric(format_only=True)``, which writes separate bbox and segm files, every instance carries both
    its box and its mask, and image ids may come from a ``file name -> id`` json (e.g. a challenge's
    ``test_image_name_to_ids.json``). Masks are RLE-encoded as each batch arrives, so memory stays small.

    Args:
        out_file (str): the json to write (atomically: no partial file is left on failure).
        score_thr (float): keep instances scoring at least this. Defaults to 0.
        name_to_ids (str, optional): json file mapping image file name -> image id. Defaults to the dataset's
            ``img_id``.
        drop_border (bool): drop instances whose mask touches the image border. Defaults to False.
        ann_file (str, optional): the dataset's COCO json; its categories give the ``category_id`` of each class
            (matched by name). Without it, class ``i`` gets id ``i + 1``.

    Raises:
        UserError: ``name_to_ids`` or ``ann_file`` is missing or malformed; ``ann_file``'s categories name a class
            the dataset does not have (:class:`CategoryMismatchError`). A class the json does not list gets id
            ``i + 1`` (iSAID's fixed ids) unless another category holds that id.
    """
    default_prefix = 'export'

    def __init__(self, out_file: str, score_thr: float = 0.0, name_to_ids: Optional[str] = None,
                 drop_border: bool = False, ann_file: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file
        self.score_thr = score_thr
        self.drop_border = drop_border
        self.ann_file = ann_file
        self.name_to_ids = None if name_to_ids is None else load_name_to_ids(name_to_ids)
        self._cat_ids = None

    def _category_ids(self) -> Sequence[int]:
        if self._cat_ids is None:
            classes = self.dataset_meta['classes']
            if self.ann_file is None:
                self._cat_ids = list(range(1, len(classes) + 1))
            else:  # by name; a class the json does not list (devkit jsons list only those present) keeps i + 1
                categories = load_json(self.ann_file, 'annotation file').get('categories', [])
                ids = category_ids_by_name(categories, classes, self.ann_file)
                taken = {i for i in ids if i is not None}
                fallback = [i + 1 for i, cat_id in enumerate(ids) if cat_id is None and i + 1 in taken]
                if fallback:
                    raise CategoryMismatchError(
                        f'{self.ann_file}: classes {[classes[i - 1] for i in fallback]} are not listed and their '
                        f'default ids {fallback} belong to other categories; list every class in the json')
                self._cat_ids = [i + 1 if cat_id is None else cat_id for i, cat_id in enumerate(ids)]
        return self._cat_ids

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        # one entry per image: BaseMetric.evaluate keeps the first len(dataset) entries of self.results
        for sample in data_samples:
            self.results.append(
                predictions_to_coco_results([sample], self._category_ids(), name_to_id=self.name_to_ids,
                                            score_thr=self.score_thr, drop_border=self.drop_border))

    def compute_metrics(self, results: list) -> dict:
        results = [instance for per_image in results for instance in per_image]
        dump_json_atomic(results, self.out_file)
        MMLogger.get_current_instance().info(
            f'wrote {len(results)} instances to {osp.abspath(self.out_file)}')
        return {'num_instances': len(results)}
