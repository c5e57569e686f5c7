"""Region-scale whole-scene inference: many scenes, resumable after a kill, split across processes or machines,
merged into one region output (what ``tools/infer_scene.py`` runs).

Output folder ``OUT``:

- ``manifest.json``: the run's settings that change outputs (config and checkpoint SHA-256, classes, window,
  overlap, score threshold, per-window cap, merge rule, bands, value range, overlay and GeoPackage options), their
  fingerprint, and the scene list. A run whose settings differ from an existing manifest is refused before any
  window runs (never a folder of mixed outputs). Device, batch size, workers and threads are not part of it (they
  do not change what is detected beyond float rounding) and are recorded per scene.
- ``scenes/<stem>/``: one folder per scene, written whole (:func:`~mmdet_custom.utils.fileio.atomic_dir`) as soon as
  that scene is done: ``<stem>.geojson``, ``<stem>.gpkg``, ``<stem>_overlay.png``, ``results.json`` (its COCO
  results, ``image_id`` 1) and ``scene.json``, its record: input path, size and mtime, fingerprint, size in pixels,
  CRS, counts, seconds, rank and host. A scene is *complete* when its record carries the manifest's fingerprint and
  its input still has the recorded size and mtime; a rerun skips complete scenes and redoes the others.
- ``region/``: written whole by the merge: ``results.json`` + ``scenes.json`` (COCO, ``image_id`` = place in the
  scene list, masks in each scene's pixels), ``region.gpkg`` (layer ``detections``: every scene's instances in one
  CRS, columns ``scene``, ``id``, ``class``, ``category_id``, ``score``), ``summary.json`` and, with ``gt_dir``,
  ``eval.json``.

Sharding: rank ``I`` of ``N`` (``--shard I/N``, or torchrun's ``RANK`` / ``WORLD_SIZE``; no process group) takes the
scenes :func:`~.inputs.assign_scenes` gives it, the same split on every rank. Ranks share nothing but the folder:
each writes only its scenes' folders; per-scene records need no lock.

Who merges: every process, after its last scene, looks whether all scenes of the list are complete; the one that
finds them so (the last to finish) merges, under an exclusive lock file ``OUT/.merge.lock`` (a second finisher
skips; a lock left by a dead process on the same host is taken over). ``merge_region`` (``--merge-only``) merges an
existing folder at any time, e.g. after ranks on several machines are done.

CRS of the region output: the scenes' common CRS; scenes in different CRSs are reprojected to ``crs``
(``--crs EPSG:xxxx``) and refused without it; scenes without georeferencing stay in pixel coordinates
(:data:`~.writers.PIXEL_CRS_WKT`) and cannot be mixed with georeferenced ones. These rules are checked for every
scene before the first window runs.
"""
import json
import os
import os.path as osp
import socket
import time
from typing import Dict, List, Optional, Sequence, Tuple

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_dir, check_output_outside_inputs, dump_json_atomic, load_json

from . import writers
from .gt import find_isaid_masks
from .inputs import assign_scenes
from .manifest import (
    LOCK,
    MANIFEST,
    RECORD,
    REGION_DIR,
    check_manifest,
    complete_record,
    merge_lock,
    read_manifest,
    region_settings,
    scene_dir,
    settings_fingerprint,
    write_manifest,
)
from .reader import ValueRange
from .run import SceneHeader, check_inputs, evaluate_to, scene_log_line, scene_summary, write_scene_files


def region_crs(scenes: Sequence[Tuple[str, bool, Optional[str]]], crs: Optional[str] = None) -> Optional[str]:
    """The CRS (WKT) of the region output of scenes ``(stem, georeferenced, crs_wkt)``.

    Returns:
        str | None: ``crs`` when given; else the scenes' common CRS; :data:`~.writers.PIXEL_CRS_WKT` for scenes
        without georeferencing; None for georeferenced scenes without a CRS (map units of an unknown CRS).

    Raises:
        UserError: georeferenced and pixel scenes together; different CRSs without ``crs``; ``crs`` for pixel scenes
            or scenes without a CRS; ``crs`` that is not a CRS. The message names the scenes.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    def names(items) -> str:
        return ', '.join(items[:4]) + (f' and {len(items) - 4} more' if len(items) > 4 else '')

    pixel = [stem for stem, georef, _ in scenes if not georef]
    unknown = [stem for stem, georef, wkt in scenes if georef and wkt is None]
    mapped = [(stem, CRS.from_wkt(wkt)) for stem, georef, wkt in scenes if georef and wkt is not None]
    if pixel and (mapped or unknown):
        raise UserError(f'scenes without georeferencing ({names(pixel)}: pixel coordinates) and georeferenced scenes '
                        f'({names([s for s, _ in mapped] + unknown)}) cannot share one region output: run them into '
                        f'separate --out-dir folders')
    if pixel:
        if crs is not None:
            raise UserError(f'--crs {crs}: the scenes are not georeferenced ({names(pixel)}): there is no map '
                            f'position to reproject')
        return writers.PIXEL_CRS_WKT
    if unknown:
        if mapped or crs is not None:
            raise UserError(f'the scenes {names(unknown)} have a geotransform but no CRS: they cannot be placed with '
                            f'{"--crs " + crs if crs else "the others"} ({names([s for s, _ in mapped])}); '
                            f'assign their CRS first (gdal_edit.py -a_srs EPSG:xxxx)')
        return None
    if crs is not None:
        try:
            return CRS.from_user_input(crs).to_wkt()
        except CRSError as e:
            raise UserError(f'--crs {crs}: not a coordinate reference system ({e})') from None
    first = mapped[0][1]
    others = [(stem, c) for stem, c in mapped if c != first]
    if others:
        raise UserError(f'the scenes are in different CRSs ({mapped[0][0]}: {first.to_string()}; '
                        f'{", ".join(f"{s}: {c.to_string()}" for s, c in others[:4])}): pass --crs (e.g. --crs '
                        f'{first.to_string()}) to reproject the region output into one CRS')
    return first.to_wkt()


# ----------------------------------------------------------------------------------------------------------------
# Inference
# ----------------------------------------------------------------------------------------------------------------
def infer_region(inferencer, inputs: Sequence[str], out_dir: str, model_id: Optional[dict] = None,
                 shard: Tuple[int, int] = (0, 1), gt_dir: Optional[str] = None,
                 bands: Optional[Sequence[int]] = None, value_range: ValueRange = None, overlay_max_side: int = 2048,
                 overlay_scores: bool = False, geopackage: bool = True, crs: Optional[str] = None,
                 merge: bool = True, max_scenes: Optional[int] = None, progress: bool = True, log=print) -> dict:
    """Run this rank's share of the scenes into ``out_dir`` (see the module text), each written whole when done;
    complete scenes are skipped; the process that finds every scene complete merges the region.

    Args:
        inferencer (SceneInferencer): the model and the window / merge settings.
        inputs (Sequence[str]): scene files (see :func:`~.inputs.expand_scene_inputs`); stems must differ.
        out_dir (str): the region folder (created; one with a manifest of other settings is refused).
        model_id (dict, optional): what identifies the model (config and checkpoint SHA-256, speedups); part of
            the manifest's fingerprint.
        shard (tuple): ``(rank, world_size)``. Defaults to ``(0, 1)``.
        gt_dir (str, optional): raw iSAID folder with the scenes' masks: the merge evaluates.
        bands, value_range: see :class:`~.reader.SceneReader`.
        overlay_max_side (int): longer side of each overlay; 0 writes none. Defaults to 2048.
        overlay_scores (bool): scores on the overlays. Defaults to False.
        geopackage (bool): per-scene and region GeoPackages (with geopandas + pyogrio). Defaults to True.
        crs (str, optional): the region output's CRS (``'EPSG:32633'``, WKT); see :func:`region_crs`.
        merge (bool): merge when every scene is complete. Defaults to True.
        max_scenes (int, optional): run at most this many scenes in this call (the rest on a later run).
        progress (bool): a tqdm bar over this rank's windows, with the ETA across its scenes. Defaults to True.
        log (callable): receives one line per scene and the run's status.

    Returns:
        dict: the region summary when this call merged (see :func:`merge_region`), else ``rank``, ``world_size``,
        ``ran``, ``skipped``, ``complete`` and ``missing`` (stems of incomplete scenes).

    Raises:
        FileNotFoundError, UserError: see :func:`~.run.check_inputs`, :func:`check_manifest`, :func:`region_crs`;
            all before the first window runs.
    """
    from tqdm import tqdm
    rank, world_size = shard
    settings = region_settings(inferencer, model_id, bands, value_range, overlay_max_side, overlay_scores, geopackage)
    fingerprint = settings_fingerprint(settings)
    check_manifest(out_dir, settings)  # before the scenes are opened: a wrong folder fails at once
    ranks: List[int] = []

    def my_scenes(headers: List[SceneHeader]) -> List[int]:  # the split needs every header's window count
        ranks.extend(assign_scenes([h.num_windows for h in headers], world_size))
        return [i for i, r in enumerate(ranks) if r == rank]

    headers = check_inputs(inferencer, inputs, gt_dir, bands, value_range, deep=my_scenes)
    check_output_outside_inputs(out_dir, *[h.path for h in headers], *([gt_dir] if gt_dir else []),
                                out_flag='--out-dir')
    region_crs([(h.stem, h.georeferenced, h.crs_wkt) for h in headers], crs)
    write_manifest(out_dir, settings, [dict(stem=h.stem, path=h.path) for h in headers])
    mine = [h for h, r in zip(headers, ranks) if r == rank]
    pending = [h for h in mine if complete_record(out_dir, h.stem, fingerprint, h.path) is None]
    skipped = len(mine) - len(pending)
    if max_scenes is not None:
        pending = pending[:max_scenes]
    log(f'rank {rank} of {world_size}: {len(mine)} of {len(headers)} scenes, {skipped} already complete (skipped), '
        f'{len(pending)} to run')
    classes = list(inferencer.classes)
    palette = writers.class_palette(len(classes))
    bar = tqdm(total=sum(h.num_windows for h in pending), unit='window', disable=not progress, dynamic_ncols=True)
    try:
        for k, header in enumerate(pending, 1):
            bar.set_description(f'scene {k}/{len(pending)}')
            line = _run_scene(inferencer, header, out_dir, fingerprint, classes, palette, settings, shard, bands,
                              value_range, bar.update)
            with tqdm.external_write_mode():  # the line above the bar, not through it
                log(line)
    finally:
        bar.close()
    missing = [h.stem for h in headers if complete_record(out_dir, h.stem, fingerprint) is None]
    status = dict(rank=rank, world_size=world_size, ran=len(pending), skipped=skipped,
                  complete=len(headers) - len(missing), missing=missing)
    if missing or not merge:
        if missing:
            log(f'{len(headers) - len(missing)} of {len(headers)} scenes complete; the region output is written by '
                f'the process that completes the last one (or by --merge-only)')
        return status
    with merge_lock(out_dir) as acquired:
        if not acquired:
            log(f'another process is merging {out_dir} ({osp.join(out_dir, LOCK)})')
            return status
        return merge_region(out_dir, crs=crs, gt_dir=gt_dir, log=log)


def _run_scene(inferencer, header: SceneHeader, out_dir: str, fingerprint: str, classes: List[str],
               palette: list, settings: dict, shard: Tuple[int, int], bands, value_range, on_windows) -> str:
    """Infer one scene and write its folder whole; returns its log line."""
    stat = os.stat(header.path)  # before reading: a file changed during the run is redone next time
    start = time.perf_counter()
    scene = inferencer(header.path, bands=bands, value_range=value_range, on_windows=on_windows)
    try:
        with atomic_dir(scene_dir(out_dir, header.stem)) as tmp:
            write_start = time.perf_counter()
            written = write_scene_files(tmp, header.stem, scene, classes, palette, settings['overlay_max_side'],
                                        settings['geopackage'], settings['overlay_scores'])
            dump_json_atomic(writers.coco_results(scene.detections, 1, range(1, len(classes) + 1)),
                             osp.join(tmp, 'results.json'))
            end = time.perf_counter()
            timings = dict(scene.timings, write=end - write_start, total=end - start)
            device = next(iter(getattr(inferencer.model, 'parameters', lambda: iter(()))()), None)
            record = dict(stem=header.stem, input=header.path, input_size=stat.st_size,
                          input_mtime_ns=stat.st_mtime_ns, fingerprint=fingerprint, height=header.height,
                          width=header.width, crs_wkt=header.crs_wkt, with_masks=scene.detections.with_masks,
                          **written, **scene_summary(scene, timings), rank=shard[0], world_size=shard[1],
                          host=socket.gethostname(), device=None if device is None else str(device.device),
                          batch_size=inferencer.batch_size, finished=time.strftime('%Y-%m-%dT%H:%M:%S%z'))
            dump_json_atomic(record, osp.join(tmp, RECORD), indent=1)
    finally:
        scene.reader.close()
    return scene_log_line(header.stem, scene, timings)


# ----------------------------------------------------------------------------------------------------------------
# Merge
# ----------------------------------------------------------------------------------------------------------------
def merge_region(out_dir: str, crs: Optional[str] = None, gt_dir: Optional[str] = None, log=print) -> dict:
    """Merge the complete scenes of ``out_dir`` into ``out_dir/region/`` (written whole; see the module text).

    Args:
        out_dir (str): a region folder (with ``manifest.json``).
        crs (str, optional): the CRS of ``region.gpkg``; see :func:`region_crs`.
        gt_dir (str, optional): raw iSAID folder with the scenes' masks: writes ``eval.json``.
        log (callable): receives status lines.

    Returns:
        dict: the content of ``region/summary.json``: ``settings``, ``crs``, ``detections``, ``scenes`` (each
        scene's record with its ``image_id``) and ``eval`` when evaluated.

    Raises:
        UserError: no manifest, scenes of the list not complete (named), CRS rules (:func:`region_crs`), missing
            ground truth.
    """
    manifest = read_manifest(out_dir)
    if manifest is None:
        raise UserError(f'{out_dir} holds no {MANIFEST}: nothing to merge (run tools/infer_scene.py into it first)')
    scenes, fingerprint, settings = manifest['scenes'], manifest['fingerprint'], manifest['settings']
    records = [complete_record(out_dir, s['stem'], fingerprint) for s in scenes]
    missing = [s['stem'] for s, r in zip(scenes, records) if r is None]
    if missing:
        raise UserError(f'{len(missing)} of {len(scenes)} scenes of {osp.join(out_dir, MANIFEST)} are not complete '
                        f'({", ".join(missing[:5])}{" ..." if len(missing) > 5 else ""}): run tools/infer_scene.py '
                        f'on them with the manifest\'s settings first')
    target = region_crs([(r['stem'], r['georeferenced'], r['crs_wkt']) for r in records], crs)
    gt_paths = [find_isaid_masks(gt_dir, r['stem']) for r in records] if gt_dir is not None else None
    classes = settings['classes']
    category_ids = list(range(1, len(classes) + 1))
    results, images, items = [], [], []
    for image_id, record in enumerate(records, 1):
        for item in load_json(osp.join(scene_dir(out_dir, record['stem']), 'results.json'), 'scene results'):
            item['image_id'] = image_id
            results.append(item)
        images.append(dict(id=image_id, file_name=osp.basename(record['input']), height=record['height'],
                           width=record['width']))
        items.append(dict(record, image_id=image_id))
    summary = dict(settings=settings, fingerprint=fingerprint, crs=_crs_name(target), detections=len(results),
                   scenes=items)
    with atomic_dir(osp.join(out_dir, REGION_DIR)) as tmp:
        dump_json_atomic(results, osp.join(tmp, 'results.json'))
        dump_json_atomic(dict(images=images, categories=[dict(id=c, name=n) for c, n in zip(category_ids, classes)]),
                         osp.join(tmp, 'scenes.json'))
        if settings.get('geopackage') and writers.geopackage_available():
            writers.write_frame(region_frame(out_dir, records, target), osp.join(tmp, 'region.gpkg'))
        if gt_paths is not None:
            with_masks = all(r.get('with_masks', True) for r in records)
            summary['eval'] = evaluate_to(tmp, images, results, gt_paths, classes, with_masks, gt_dir, log)
        dump_json_atomic(summary, osp.join(tmp, 'summary.json'), indent=1)
    log(f'region of {len(records)} scenes merged into {osp.join(out_dir, REGION_DIR)}: {len(results)} detections'
        f'{", CRS " + summary["crs"] if summary["crs"] else ""}')
    return summary


def _crs_name(wkt: Optional[str]) -> Optional[str]:
    if wkt is None:
        return None
    if wkt == writers.PIXEL_CRS_WKT:
        return 'scene pixels'
    from rasterio.crs import CRS
    return CRS.from_wkt(wkt).to_string()


def region_frame(out_dir: str, records: Sequence[dict], target: Optional[str]):
    """Every scene's instances (from its GeoJSON) as one GeoDataFrame in the CRS ``target`` (WKT), each scene
    reprojected from its own CRS when it differs; columns ``scene``, ``id``, ``class``, ``category_id``, ``score``.
    Polygons are written as MultiPolygons (one geometry type for the layer)."""
    import geopandas as gpd
    import pandas as pd
    import shapely
    from shapely.geometry import shape
    frames = []
    for record in records:
        with open(osp.join(scene_dir(out_dir, record['stem']), f'{record["stem"]}.geojson')) as f:
            features = json.load(f)['features']
        geoms = [shape(feat['geometry']) for feat in features]
        geoms = [shapely.MultiPolygon([g]) if g.geom_type == 'Polygon' else g for g in geoms]
        props: Dict[str, list] = {'scene': [record['stem']] * len(features)}
        for key in ('id', 'class', 'category_id', 'score'):
            props[key] = [feat['properties'][key] for feat in features]
        own = record['crs_wkt'] if record['georeferenced'] else writers.PIXEL_CRS_WKT
        frame = gpd.GeoDataFrame(props, geometry=geoms, crs=own)
        if target is not None and own is not None and own != target:
            frame = frame.to_crs(target)
        frames.append(frame.set_crs(target, allow_override=True) if target is not None else frame)
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry='geometry', crs=target)
