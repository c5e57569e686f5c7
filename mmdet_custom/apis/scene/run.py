"""Whole-scene inference on a list of scenes, written to one output folder at the end (:func:`infer_scenes`), and
the pieces it shares with the resumable region run of ``tools/infer_scene.py`` (:mod:`.region`): the checks of every
input before the first window, the per-scene files, the evaluation.

Output folder (written to a sibling temporary folder and swapped in whole, see
:func:`~mmdet_custom.utils.fileio.atomic_dir`):

- ``results.json``: COCO results of all scenes in scene pixels (full-scene RLE masks), ``image_id`` = 1, 2, ...
  in input order; ``scenes.json``: the matching COCO ``images`` and ``categories`` (``COCO('scenes.json')
  .loadRes('results.json')`` works);
- ``<stem>.geojson`` per scene: a FeatureCollection of instance polygons (``id``, ``class``, ``category_id``,
  ``score``), in map coordinates with the raster's CRS when it is georeferenced, else in pixels;
  ``<stem>.gpkg`` the same as a GeoPackage when geopandas and pyogrio are installed (pixel scenes in the
  engineering CRS :data:`~.writers.PIXEL_CRS_WKT`);
- ``<stem>_overlay.png``: the scene downscaled (longer side ``overlay_max_side``), each detection outlined in its
  class colour, a legend of the classes on the right (scores written with ``overlay_scores``);
- ``summary.json``: per scene windows, detections before and after the merge, merge counts and seconds;
- ``eval.json`` with ``gt_dir``: segm and bbox AP of the whole scenes against the raw iSAID masks.
"""
import os
import os.path as osp
import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_dir, check_output_outside_inputs, dump_json_atomic
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES

from . import writers
from .gt import find_isaid_masks, isaid_mask_size, read_isaid_instances, scene_gt_coco
from .reader import SceneReader, ValueRange, is_georeferenced, raster_header, scene_windows

#: The iSAID budget of detections per image (applied per window; see :func:`evaluate_scenes`).
ISAID_MAX_DETS = 1000


def evaluate_scenes(gt: dict, results: list, iou_types: Sequence[str] = ('segm', 'bbox'),
                    classes: Optional[Sequence[str]] = None) -> dict:
    """AP of whole-scene results under the iSAID protocol (maxDets 1000, iSAID's size bands).

    A whole scene can hold more than 1000 objects while the iSAID budget is per 800 px patch; when a scene has more
    than 1000 detections, the largest budget is raised to that scene's count (rounded up to a thousand) so that no
    detection is cut, and the keys are named by it (e.g. ``segm_AR@3000``).

    Args:
        gt (dict): COCO ground truth of the scenes (see :func:`~.gt.scene_gt_coco`).
        results (list): COCO results (see :func:`~.writers.coco_results`).
        iou_types (Sequence[str]): ``'segm'`` and/or ``'bbox'``.
        classes (Sequence[str], optional): class names for matching by name.

    Returns:
        dict: ``metrics`` (mmdet keys ``segm_mAP`` ...) and ``max_dets`` (the budgets used).
    """
    import contextlib
    import io
    from collections import Counter

    from pycocotools.coco import COCO

    from mmdet_custom.evaluation.functional.coco_eval import PROTOCOLS, EvalProtocol, evaluate_coco_results
    per_image = Counter(r['image_id'] for r in results)
    top = max(per_image.values(), default=0)
    isaid = PROTOCOLS['isaid']
    if top <= ISAID_MAX_DETS:
        protocol = isaid
    else:
        budget = -(-top // 1000) * 1000
        protocol = EvalProtocol('isaid-scene', (1, 10, budget), isaid.area_ranges,
                                f'{isaid.source}, maxDets {ISAID_MAX_DETS} raised to {budget} for whole scenes')
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    metrics = evaluate_coco_results(coco, results, iou_types, protocol, classes)
    return dict(protocol=protocol.name, max_dets=list(protocol.max_dets), metrics=dict(metrics))


@dataclass
class SceneHeader:
    """What the checks before inference learnt of one scene (nothing decoded but a PNG's chunks)."""
    path: str
    stem: str
    height: int
    width: int
    num_windows: int
    georeferenced: bool
    crs_wkt: Optional[str]
    gt_paths: Optional[Tuple[str, str]] = None


def check_inputs(inferencer, inputs: Sequence[str], gt_dir: Optional[str] = None,
                 bands: Optional[Sequence[int]] = None, value_range: ValueRange = None,
                 deep: Optional[Callable[[List[SceneHeader]], Iterable[int]]] = None) -> List[SceneHeader]:
    """Check the scenes before the first window of the first one runs: a bad last scene or mask must not cost the
    inference of the others.

    Every scene's header is read (size, CRS: nothing decoded). The scenes ``deep`` picks (all by default) are then
    checked in full: opened as the model will read them (bands, bit depth, a truncated PNG), their window shapes run
    through the config's test pipeline (``inferencer.check_scene``), and with ``gt_dir`` their iSAID masks found and
    their size compared. A shard checks its own scenes in full, and the headers of the others (for the split and the
    CRS rule), so that no rank reads every file of a region.

    Args:
        inferencer (SceneInferencer): classes, window settings, ``check_scene``.
        inputs (Sequence[str]): scene files.
        gt_dir (str, optional): raw iSAID folder with the scenes' masks.
        bands, value_range: see :class:`~.reader.SceneReader`.
        deep (callable, optional): the headers (in input order) -> indices of the scenes to check in full.

    Returns:
        list[SceneHeader]: one per input, in input order (``gt_paths`` set for the scenes checked in full).

    Raises:
        FileNotFoundError: a missing scene or ``gt_dir``.
        UserError: no input, duplicate stems (they name the outputs), a scene that cannot be read, ground truth that
            is missing or of another size than its scene, a model whose classes are not iSAID's with ``gt_dir``.
    """
    inputs = [os.fspath(p) for p in inputs]
    if not inputs:
        raise UserError('no input scene given')
    stems = [osp.splitext(osp.basename(p))[0] for p in inputs]
    if len(set(stems)) != len(stems):
        seen, twice = set(), []
        for path, stem in zip(inputs, stems):
            if stem in seen:
                twice.append(path)
            seen.add(stem)
        raise UserError(f'input scenes must have different file names (they name the outputs); named twice: '
                        f'{twice[:5]}')
    if gt_dir is not None:
        if not osp.isdir(gt_dir):
            raise FileNotFoundError(f'--gt folder not found: {gt_dir}')
        unknown = [c for c in inferencer.classes if c not in ISAID_CLASSES]
        if unknown:
            raise UserError(f'--gt evaluates against iSAID masks, but the model\'s classes {unknown} are not iSAID '
                            f'classes {list(ISAID_CLASSES)}')
    headers = []
    for path, stem in zip(inputs, stems):
        height, width, crs, transform = raster_header(path)
        windows = scene_windows(height, width, inferencer.window, inferencer.overlap)
        headers.append(SceneHeader(path, stem, height, width, len(windows), is_georeferenced(crs, transform),
                                   writers.crs_wkt(crs)))
    chosen = sorted(set(deep(headers))) if deep is not None else range(len(headers))
    if gt_dir is not None:
        for i in chosen:  # every mask found before the first scene is read
            headers[i].gt_paths = find_isaid_masks(gt_dir, headers[i].stem)
    for i in chosen:
        header = headers[i]
        with SceneReader(header.path, bands=bands, value_range=value_range) as reader:
            check_scene = getattr(inferencer, 'check_scene', None)
            if check_scene is not None:
                check_scene(reader)
            if header.gt_paths is not None:
                height, width = isaid_mask_size(*header.gt_paths)
                if (height, width) != (reader.height, reader.width):
                    raise UserError(f'{header.gt_paths[0]} is {width} x {height} px but the scene {header.path} is '
                                    f'{reader.width} x {reader.height}: not the masks of this scene')
    return headers


def write_scene_files(folder: str, stem: str, scene, classes: Sequence[str], palette: Sequence[tuple],
                      overlay_max_side: int = 2048, geopackage: bool = True, overlay_scores: bool = False) -> dict:
    """Write one scene's ``<stem>.geojson``, ``<stem>.gpkg`` and ``<stem>_overlay.png`` into ``folder``.

    Args:
        folder (str): the (temporary) output folder.
        stem (str): the scene's file stem.
        scene (SceneResult): the merged detections and the open reader (not closed here).
        classes (Sequence[str]): class names by label; category ids are ``label + 1``.
        palette (Sequence[tuple]): RGB colour per class.
        overlay_max_side (int): longer side of the overlay; 0 writes none. Defaults to 2048.
        geopackage (bool): write the GeoPackage when geopandas and pyogrio are installed. Defaults to True.
        overlay_scores (bool): write scores on the overlay. Defaults to False.

    Returns:
        dict: ``crs`` (string or None), ``georeferenced``, ``geopackage`` (written or not).
    """
    dets, reader = scene.detections, scene.reader
    category_ids = list(range(1, len(classes) + 1))
    pixel_geoms = writers.pixel_polygons(dets)
    geoms = writers.to_map(pixel_geoms, reader.transform) if reader.georeferenced else pixel_geoms
    crs = reader.crs if reader.georeferenced else None
    writers.write_geojson(osp.join(folder, f'{stem}.geojson'), dets, geoms, classes, category_ids, crs)
    gpkg = geopackage and writers.geopackage_available()
    if gpkg:
        writers.write_geopackage(osp.join(folder, f'{stem}.gpkg'), dets, geoms, classes, category_ids,
                                 crs if reader.georeferenced else writers.PIXEL_CRS_WKT)
    if overlay_max_side > 0:
        writers.write_overlay(osp.join(folder, f'{stem}_overlay.png'), reader, dets, pixel_geoms, palette,
                              overlay_max_side, classes=classes, scores=overlay_scores)
    return dict(crs=None if crs is None else crs.to_string(), georeferenced=reader.georeferenced,
                geopackage=bool(gpkg))


def scene_summary(scene, timings: dict) -> dict:
    """The ``summary.json`` entry of one scene: windows, detections before and after the merge, seconds."""
    return dict(windows=scene.num_windows, detections_before_merge=scene.merge.before,
                detections_after_merge=scene.merge.after, merge=scene.merge.as_dict(),
                seconds={k: round(v, 3) for k, v in timings.items()},
                windows_per_second=round(scene.num_windows / max(timings['predict'], 1e-9), 3))


def scene_log_line(stem: str, scene, timings: dict) -> str:
    """One line per scene: windows, detections before and after the merge, seconds."""
    return (f'{stem}: {scene.num_windows} windows, {scene.merge.before} detections -> {scene.merge.after} after '
            f'merge ({scene.merge.suppressed} suppressed, {scene.merge.unioned} joined), '
            f'{timings["total"]:.1f} s ({scene.num_windows / max(timings["predict"], 1e-9):.2f} windows/s)')


def evaluate_to(folder: str, images: list, results: list, gt_paths: list, classes: Sequence[str],
                with_masks: bool, gt_dir: str, log=print) -> dict:
    """Evaluate ``results`` against the raw iSAID masks ``gt_paths`` (one pair per image) and write
    ``folder/eval.json``; returns its content."""
    scenes_gt = []
    for image, (id_png, colour_png) in zip(images, gt_paths):
        inst = read_isaid_instances(id_png, colour_png, classes)
        if (inst.height, inst.width) != (image['height'], image['width']):
            raise UserError(f'{id_png} is {inst.width} x {inst.height} px but the scene {image["file_name"]} '
                            f'is {image["width"]} x {image["height"]}: not the masks of this scene')
        scenes_gt.append((image['id'], image['file_name'], inst))
    gt = scene_gt_coco(scenes_gt, classes, list(range(1, len(classes) + 1)))
    evaluation = evaluate_scenes(gt, results, ('segm', 'bbox') if with_masks else ('bbox', ), classes)
    evaluation.update(gt_dir=gt_dir, gt_instances=len(gt['annotations']))
    dump_json_atomic(evaluation, osp.join(folder, 'eval.json'), indent=1)
    metrics = evaluation['metrics']
    log('whole-scene evaluation (iSAID protocol): ' + ', '.join(
        f'{k} {v:.3f}' for k, v in metrics.items() if k.endswith(('_mAP', '_mAP_50'))))
    return evaluation


def infer_scenes(inferencer, inputs: Sequence[str], out_dir: str, gt_dir: Optional[str] = None,
                 bands: Optional[Sequence[int]] = None, value_range: ValueRange = None,
                 overlay_max_side: int = 2048, geopackage: bool = True, overlay_scores: bool = False,
                 log=print) -> dict:
    """Run ``inferencer`` on each scene and write the output folder described in the module text, whole at the end
    (for many scenes, resumable and sharded, see :func:`~.region.infer_region`).

    Args:
        inferencer (SceneInferencer): the model and the window / merge settings.
        inputs (Sequence[str]): scene files (stems must differ: they name the per-scene files).
        out_dir (str): output folder (created; a folder this project did not write is refused).
        gt_dir (str, optional): raw iSAID folder (devkit layout) holding the masks of the same scenes; evaluates.
        bands, value_range: see :class:`~.reader.SceneReader`.
        overlay_max_side (int): longer side of the overlay PNG; 0 writes none. Defaults to 2048.
        geopackage (bool): write ``<stem>.gpkg`` when geopandas and pyogrio are installed. Defaults to True.
        overlay_scores (bool): write each detection's score on the overlay. Defaults to False.
        log (callable): receives one summary line per scene. Defaults to ``print``.

    Returns:
        dict: the content of ``summary.json`` (and ``eval`` when evaluated).

    Raises:
        FileNotFoundError, UserError: see :func:`check_inputs` (all checked before the first window runs); an
            output folder overlapping an input.
    """
    headers = check_inputs(inferencer, inputs, gt_dir, bands, value_range)
    check_output_outside_inputs(out_dir, *[h.path for h in headers], *([gt_dir] if gt_dir else []),
                                out_flag='--out-dir')
    classes = list(inferencer.classes)
    category_ids = list(range(1, len(classes) + 1))
    palette = writers.class_palette(len(classes))
    summary = dict(classes=classes, window=inferencer.window, overlap=inferencer.overlap,
                   batch_size=inferencer.batch_size, score_thr=inferencer.score_thr,
                   max_per_window=inferencer.max_per_window, match=inferencer.match, match_thr=inferencer.match_thr,
                   scenes=[])
    results, images, with_masks = [], [], True
    with atomic_dir(out_dir) as tmp:
        for image_id, header in enumerate(headers, 1):
            start = time.perf_counter()
            scene = inferencer(header.path, bands=bands, value_range=value_range)
            try:
                with_masks = with_masks and scene.detections.with_masks
                write_start = time.perf_counter()
                results.extend(writers.coco_results(scene.detections, image_id, category_ids))
                images.append(dict(id=image_id, file_name=osp.basename(header.path), height=header.height,
                                   width=header.width))
                written = write_scene_files(tmp, header.stem, scene, classes, palette, overlay_max_side, geopackage,
                                            overlay_scores)
            finally:
                scene.reader.close()
            end = time.perf_counter()
            timings = dict(scene.timings, write=end - write_start, total=end - start)
            item = dict(image_id=image_id, file=header.path, height=header.height, width=header.width,
                        **written, **scene_summary(scene, timings))
            summary['scenes'].append(item)
            log(scene_log_line(header.stem, scene, timings))
        dump_json_atomic(results, osp.join(tmp, 'results.json'))
        dump_json_atomic(dict(images=images, categories=[dict(id=c, name=n) for c, n in zip(category_ids, classes)]),
                         osp.join(tmp, 'scenes.json'))
        if gt_dir is not None:
            summary['eval'] = evaluate_to(tmp, images, results, [h.gt_paths for h in headers], classes, with_masks,
                                          gt_dir, log)
        dump_json_atomic(summary, osp.join(tmp, 'summary.json'), indent=1)
    return summary
