"""The evaluator's json against the dataset's, checked at start (``train`` and ``test``).

An mmdet config names the data of a split twice: the dataset's ``data_root`` + ``ann_file`` and the evaluator's
``ann_file`` (a full path that ``data_root`` does not move). When they name different files, the run infers the
dataset's images and scores them against the evaluator's json; with other images there, the evaluation failed only
after inference, with an RLE size error about a temporary results file. ``--data-root`` sets both
(:func:`mmdet_custom.datasets.utils.set_data_root`); this check catches the rest before the first iteration.
"""
import os.path as osp
from typing import Any, List, Optional

from mmdet_custom.utils.errors import UserError

__all__ = ['AnnFileMismatchError', 'check_evaluator_ann_files', 'dataset_ann_files', 'leaf_datasets']


class AnnFileMismatchError(UserError, ValueError):
    """The evaluator's json lists other images than the dataset it evaluates."""


def leaf_datasets(dataset: Any) -> List[Any]:
    """The built datasets inside mmengine's wrappers (``ConcatDataset.datasets``, ``RepeatDataset.dataset``, ...)."""
    if hasattr(dataset, 'datasets'):
        return [leaf for ds in dataset.datasets for leaf in leaf_datasets(ds)]
    if hasattr(dataset, 'dataset'):
        return leaf_datasets(dataset.dataset)
    return [dataset]


def dataset_ann_files(dataset: Any) -> List[str]:
    """The annotation files of a built dataset (inside mmengine's wrappers), as mmdet resolved them."""
    return [leaf.ann_file for leaf in leaf_datasets(dataset) if getattr(leaf, 'ann_file', None)]


def _same_file(a: str, b: str) -> bool:
    if osp.exists(a) and osp.exists(b):
        return osp.samefile(a, b)
    return osp.abspath(a) == osp.abspath(b)


def _image_mismatch(dataset: Any, coco: Any, ann_file: str) -> Optional[str]:
    """The first image of ``dataset`` that the COCO api ``coco`` (of ``ann_file``) lists otherwise, or None."""
    for leaf in leaf_datasets(dataset):
        for i in range(len(leaf)):
            info = leaf.get_data_info(i)
            img_id, name = info.get('img_id'), osp.basename(str(info.get('img_path', '')))
            size = (info.get('width'), info.get('height'))
            entry = coco.imgs.get(img_id)
            if entry is None:
                return f'its image {name} (id {img_id}) is not in {ann_file}'
            if osp.basename(str(entry.get('file_name', ''))) != name:
                return f'image id {img_id} is {name} in the dataset but {entry.get("file_name")} in {ann_file}'
            if (entry.get('width'), entry.get('height')) != size:
                return (f'image {name} (id {img_id}) is {size[0]}x{size[1]} in the dataset but '
                        f'{entry.get("width")}x{entry.get("height")} in {ann_file}')
    return None


def check_evaluator_ann_files(evaluator: Any, dataset: Any, split: str, logger: Any = None) -> List[str]:
    """Check that each metric of ``evaluator`` that reads a json reads the json of ``dataset``.

    The same file passes. Another file that lists the dataset's images under the same ids, names and sizes (e.g.
    the devkit's own json for our patches) passes with a warning naming both files. Another file that does not is
    refused before any inference.

    Args:
        evaluator: a built mmengine ``Evaluator`` (its ``metrics``; a metric with an ``ann_file`` and the COCO api
            it loaded, ``_coco_api``, is checked).
        dataset: the built dataset the evaluator scores (wrappers are looked into).
        split (str): ``'val'`` or ``'test'``, for the messages (``<split>_evaluator``).
        logger: gets the warning (None: no warning).

    Returns:
        list[str]: the warnings given (evaluator json other than the dataset's, with the same images).

    Raises:
        AnnFileMismatchError: naming the two files, the first image that differs, and ``--data-root``.
    """
    datasets = dataset_ann_files(dataset)
    if len(datasets) != 1:  # several jsons (ConcatDataset) or none: nothing to compare one evaluator json with
        return []
    data_json = datasets[0]
    warnings = []
    for metric in getattr(evaluator, 'metrics', []):
        ann_file = getattr(metric, 'ann_file', None)
        if not ann_file or _same_file(ann_file, data_json):
            continue
        coco = getattr(metric, '_coco_api', None)
        if coco is None:
            continue
        problem = _image_mismatch(dataset, coco, ann_file)
        what = f'{split}_evaluator.ann_file {ann_file} is not the {split} dataset\'s json {data_json}'
        if problem:
            raise AnnFileMismatchError(
                f'{what}, and it describes other images: {problem}. The evaluation would fail after inference. '
                f'Point both at one data folder with --data-root DIR, or set {split}_evaluator.ann_file to the '
                f'dataset\'s json.')
        warnings.append(f'{what}; it lists the same images (ids, names, sizes), so the run scores against it')
        if logger is not None:
            logger.warning(warnings[-1])
    return warnings
