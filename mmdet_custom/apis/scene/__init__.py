"""Whole-scene inference: predict on aerial scenes of any size (PNG, GeoTIFF, any GDAL raster), merged once,
written as COCO results, GeoJSON / GeoPackage and an overlay.

- :mod:`.reader`: windows (iSAID devkit tiling) and windowed reading with the band / bit-depth rule;
- :mod:`.batching`: windows as a DataLoader through the config's test pipeline;
- :mod:`.merge`: compact (cropped RLE) detections and the duplicate merge across window overlaps;
- :mod:`.writers`: COCO results, GeoJSON, GeoPackage, overlay;
- :mod:`.gt`: whole-scene ground truth from the raw iSAID masks;
- :mod:`.inferencer` / :mod:`.run`: :class:`SceneInferencer` and :func:`infer_scenes` (one folder, written whole);
- :mod:`.inputs` / :mod:`.manifest` / :mod:`.region`: scene lists and shards, the region folder's manifest and
  records, and :func:`infer_region` / :func:`merge_region`, the
  resumable, sharded region run of ``tools/infer_scene.py``.
"""
from .gt import read_isaid_instances, scene_gt_coco
from .inferencer import SceneInferencer, SceneResult
from .inputs import assign_scenes, expand_scene_inputs, resolve_shard
from .merge import MergeStats, SceneDetections, SceneDetectionsBuilder, encode_crops, merge_scene_detections, scene_rle
from .reader import SceneReader, SceneReadError, SceneSettingError, scene_windows
from .region import infer_region, merge_region, region_crs
from .run import evaluate_scenes, infer_scenes
from .writers import coco_results

__all__ = [
    'SceneInferencer', 'SceneResult', 'infer_scenes', 'evaluate_scenes', 'SceneReader', 'SceneReadError',
    'SceneSettingError', 'scene_windows', 'SceneDetections', 'SceneDetectionsBuilder', 'MergeStats',
    'merge_scene_detections', 'encode_crops', 'scene_rle', 'coco_results', 'read_isaid_instances', 'scene_gt_coco',
    'infer_region', 'merge_region', 'region_crs', 'expand_scene_inputs', 'resolve_shard', 'assign_scenes'
]
