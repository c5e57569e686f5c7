"""Writing a scene's merged detections: COCO results, GeoJSON, GeoPackage and a downscaled overlay.

Polygons are traced with :func:`rasterio.features.shapes` on each cropped mask: they follow the pixel *edges*
(a 1-pixel mask is a unit square), holes included, and several parts make a MultiPolygon. The raster's affine
transform takes them to map coordinates; a raster without georeferencing keeps pixel coordinates (x right, y down,
the top-left corner of the scene at (0, 0)). A GeoPackage of such a scene carries :data:`PIXEL_CRS_WKT`, an
engineering CRS named ``scene pixels`` whose unit is the pixel: readers (QGIS, geopandas) then see pixel coordinates
for what they are instead of a layer without any CRS (which pyogrio warns about on every write).
"""
import errno
import json
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np

from .merge import SceneDetections, decode_crop, scene_rle

#: The CRS of pixel coordinates (column x to the right, row y down, the scene's top-left corner at (0, 0), unit
#: 1 pixel): an OGC WKT2 engineering CRS, written into GeoPackages of scenes that are not georeferenced.
PIXEL_CRS_WKT = ('ENGCRS["scene pixels",EDATUM["pixel grid of the scene"],CS[Cartesian,2],'
                 'AXIS["column (x)",east,ORDER[1],LENGTHUNIT["pixel",1]],'
                 'AXIS["row (y)",south,ORDER[2],LENGTHUNIT["pixel",1]]]')


def crs_wkt(crs) -> Optional[str]:
    """WKT of a rasterio / pyproj CRS or a WKT / user string (``'EPSG:32633'``); None stays None."""
    if crs is None:
        return None
    return crs.to_wkt() if hasattr(crs, 'to_wkt') else str(crs)


def coco_results(dets: SceneDetections, image_id: int, category_ids: Sequence[int]) -> List[dict]:
    """COCO results entries (as pycocotools ``loadRes`` reads them) in scene pixels.

    Args:
        dets (SceneDetections): merged detections of one scene.
        image_id (int): the scene's image id.
        category_ids (Sequence[int]): category id of each model class index.

    Returns:
        list[dict]: ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` (the predicted box), ``score`` and, for
        mask models, ``segmentation`` (full-scene compressed RLE).
    """
    out = []
    for k in range(len(dets)):
        x0, y0, x1, y1 = (float(v) for v in dets.bboxes[k])
        item = dict(image_id=int(image_id), category_id=int(category_ids[int(dets.labels[k])]),
                    bbox=[x0, y0, x1 - x0, y1 - y0], score=float(dets.scores[k]))
        if dets.with_masks:
            item['segmentation'] = scene_rle(dets.extents[k], dets.counts[k], dets.height, dets.width)
        out.append(item)
    return out


def pixel_polygons(dets: SceneDetections) -> list:
    """One shapely (Multi)Polygon per detection in scene pixels: the mask's outline, or the box for box-only models
    (and for an empty mask)."""
    import shapely
    from affine import Affine
    from rasterio.features import shapes
    from shapely.geometry import shape
    out = []
    for k in range(len(dets)):
        if not dets.with_masks or not dets.counts[k]:
            out.append(shapely.box(*(float(v) for v in dets.bboxes[k])))
            continue
        crop = decode_crop(dets.extents[k], dets.counts[k]).astype(np.uint8)
        x0, y0 = (float(v) for v in dets.extents[k][:2])
        parts = [shape(geom) for geom, _ in
                 shapes(crop, mask=crop.astype(bool), connectivity=4, transform=Affine.translation(x0, y0))]
        out.append(parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts))
    return out


def to_map(geoms: list, transform) -> list:
    """Apply a rasterio/affine ``transform`` (pixel column, row -> map x, y) to shapely geometries."""
    from shapely import affinity
    if transform is None or transform.is_identity:
        return list(geoms)
    matrix = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    return [affinity.affine_transform(g, matrix) for g in geoms]


def _crs_member(crs) -> Optional[dict]:
    """The GeoJSON 2008 ``crs`` member (RFC 7946 readers assume WGS 84 and ignore it; GDAL/QGIS read it)."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    name = f'urn:ogc:def:crs:EPSG::{epsg}' if epsg else crs.to_wkt()
    return {'type': 'name', 'properties': {'name': name}}


def write_geojson(path: str, dets: SceneDetections, geoms: list, classes: Sequence[str],
                  category_ids: Sequence[int], crs=None) -> None:
    """A FeatureCollection: one feature per detection with ``id``, ``class``, ``category_id`` and ``score``.

    Args:
        path (str): the output file (the caller makes it atomic).
        dets (SceneDetections): merged detections.
        geoms (list): shapely geometries in output coordinates (see :func:`pixel_polygons`, :func:`to_map`).
        classes (Sequence[str]): class names by model label.
        category_ids (Sequence[int]): category ids by model label (as in the COCO results).
        crs (rasterio.crs.CRS, optional): written as the ``crs`` member when given.
    """
    from shapely.geometry import mapping
    features = []
    for k, geom in enumerate(geoms):
        label = int(dets.labels[k])
        features.append({'type': 'Feature', 'id': k + 1, 'geometry': mapping(geom),
                         'properties': {'id': k + 1, 'class': classes[label],
                                        'category_id': int(category_ids[label]), 'score': float(dets.scores[k])}})
    collection = {'type': 'FeatureCollection'}
    member = _crs_member(crs)
    if member is not None:
        collection['crs'] = member
    collection['features'] = features
    with open(path, 'w') as f:
        json.dump(collection, f)


def geopackage_available() -> bool:
    """geopandas and pyogrio are importable (GeoPackage output is optional)."""
    try:
        import geopandas  # noqa: F401
        import pyogrio  # noqa: F401
    except ImportError:
        return False
    return True


def write_geopackage(path: str, dets: SceneDetections, geoms: list, classes: Sequence[str],
                     category_ids: Sequence[int], crs=None) -> None:
    """The same features as :func:`write_geojson` in a GeoPackage layer ``detections`` (needs geopandas + pyogrio).

    ``crs`` (a rasterio CRS or WKT) is the layer's CRS; pass :data:`PIXEL_CRS_WKT` for pixel coordinates. None writes
    a layer without any CRS (pyogrio warns that readers cannot place it): only for map coordinates of an unknown CRS.

    Raises:
        ImportError: geopandas or pyogrio is missing (check :func:`geopackage_available` first).
        OSError: GDAL could not write ``path`` (disk full: its "Failed to commit transaction"; read-only), with an
            errno (28, 30 or 5) and ``path`` as its file name.
    """
    import geopandas as gpd
    labels = dets.labels.astype(int)
    frame = gpd.GeoDataFrame(
        {'id': np.arange(1, len(dets) + 1), 'class': [classes[i] for i in labels],
         'category_id': [int(category_ids[i]) for i in labels], 'score': dets.scores.astype(float)},
        geometry=list(geoms), crs=crs_wkt(crs))
    write_frame(frame, path)


def write_frame(frame, path: str, layer: str = 'detections') -> None:
    """Write a GeoDataFrame as the GeoPackage layer ``layer`` (pyogrio), GDAL's write failures as ``OSError``.

    Raises:
        OSError: GDAL could not write ``path`` (disk full: its "Failed to commit transaction"; read-only), with an
            errno (28, 30 or 5) and ``path`` as its file name.
    """
    try:
        frame.to_file(path, driver='GPKG', layer=layer, engine='pyogrio')
    except RuntimeError as e:  # pyogrio's errors (DataSourceError, ...) carry GDAL's text without an errno
        text = str(e)
        if not any(s in text.lower() for s in ('commit transaction', 'no space', 'read-only', 'readonly',
                                                'disk i/o', 'attempt to write', 'permission denied')):
            raise
        stat = os.statvfs(osp.dirname(osp.abspath(path)))
        code = errno.ENOSPC if stat.f_bavail * stat.f_frsize < 2**20 or 'space' in text.lower() else (
            errno.EROFS if 'read' in text.lower() and 'only' in text.lower() else errno.EIO)
        raise OSError(code, f'{os.strerror(code)}; GDAL: {text.strip().splitlines()[0]}', path) from e


def class_palette(num_classes: int, palette: Optional[Sequence] = None) -> List[tuple]:
    """RGB colours (0-255) per class for the overlay: ``palette`` when given with enough colours, else matplotlib's
    qualitative maps tab20 (its 10 strong colours first), tab20b, tab20c in turn (60 colours that the eye tells
    apart), then a seeded spread.

    The model's ``dataset_meta['palette']`` is not the default: iSAID's is the devkit's *encoding* of classes in
    ``*_instance_color_RGB.png`` (dark blues and teals, every channel in 0-63), which an overlay cannot tell apart.
    """
    if palette is not None and len(palette) >= num_classes:
        return [tuple(int(c) for c in p) for p in palette[:num_classes]]
    from matplotlib import colormaps
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # tab20: its 10 strong colours before their light pairs
    colours = [tuple(int(round(255 * c)) for c in colormaps[name](i)[:3])
               for name in ('tab20', 'tab20b', 'tab20c') for i in order]
    rng = np.random.RandomState(42)
    colours += [tuple(int(c) for c in rng.randint(64, 256, 3)) for _ in range(max(0, num_classes - len(colours)))]
    return colours[:num_classes]


def write_overlay(path: str, reader, dets: SceneDetections, pixel_geoms: list, palette: Sequence[tuple],
                  max_side: int = 2048, classes: Optional[Sequence[str]] = None, scores: bool = False,
                  thickness: int = 2) -> float:
    """A downscaled picture of the scene with each detection outlined in its class colour, and a legend.

    Outlines only (no fill), so that touching objects stay apart; holes are outlined too. The legend is a panel
    to the right of the picture (it hides no pixel of the scene): one row per class present, its colour, name and
    count of detections. With ``scores`` each detection's score (two decimals) is written above its top-left corner.

    Args:
        path (str): output PNG (the caller makes it atomic).
        reader (SceneReader): the scene (read decimated, memory bounded by the output).
        dets (SceneDetections): merged detections.
        pixel_geoms (list): their polygons in scene pixels.
        palette (Sequence[tuple]): RGB colour per class.
        max_side (int): longest side of the scene picture in pixels (the legend comes on top). Defaults to 2048.
        classes (Sequence[str], optional): class names by label for the legend; ``class <label>`` when None.
        scores (bool): write each detection's score. Defaults to False.
        thickness (int): outline width in picture pixels. Defaults to 2.

    Returns:
        float: the scale (picture px per scene px).

    Raises:
        OSError: the PNG could not be written.
    """
    import cv2
    from shapely.geometry import MultiPolygon
    image, scale = reader.read_overview(max_side)
    image = np.ascontiguousarray(image)
    for k, geom in enumerate(pixel_geoms):
        r, g, b = palette[int(dets.labels[k])]
        polys = geom.geoms if isinstance(geom, MultiPolygon) else [geom]
        rings = [np.round(np.asarray(ring.coords)[:, :2] * scale).astype(np.int32)
                 for poly in polys for ring in [poly.exterior, *poly.interiors]]
        cv2.polylines(image, rings, True, (b, g, r), thickness, lineType=cv2.LINE_8)
    if scores:
        for k, geom in enumerate(pixel_geoms):
            r, g, b = palette[int(dets.labels[k])]
            x0, y0 = geom.bounds[:2]
            org = (int(round(x0 * scale)), max(int(round(y0 * scale)) - 3, 10))
            text = f'{float(dets.scores[k]):.2f}'
            cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (b, g, r), 1, cv2.LINE_AA)
    image = _with_legend(image, dets, palette, classes)
    if not cv2.imwrite(path, image):
        raise OSError(f'could not write {path}')
    return scale


#: Legend layout, in picture pixels: row height, colour swatch side, margin.
LEGEND_ROW, LEGEND_SWATCH, LEGEND_MARGIN = 22, 14, 8
LEGEND_BACKGROUND = (32, 32, 32)


def _with_legend(image: np.ndarray, dets: SceneDetections, palette: Sequence[tuple],
                 classes: Optional[Sequence[str]]) -> np.ndarray:
    """``image`` (BGR) with the legend panel appended on its right (see :func:`write_overlay`)."""
    import cv2
    labels, counts = np.unique(dets.labels.astype(int), return_counts=True)
    rows = [(f'{classes[lab] if classes is not None else f"class {lab}"} ({n})', palette[lab])
            for lab, n in zip(labels.tolist(), counts.tolist())] or [('no detections', None)]
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    text_w = max(cv2.getTextSize(text, font, font_scale, 1)[0][0] for text, _ in rows)
    width = LEGEND_MARGIN * 3 + LEGEND_SWATCH + text_w
    height = max(image.shape[0], LEGEND_MARGIN * 2 + LEGEND_ROW * len(rows))
    out = np.empty((height, image.shape[1] + width, 3), np.uint8)
    out[:] = LEGEND_BACKGROUND
    out[:image.shape[0], :image.shape[1]] = image
    x = image.shape[1] + LEGEND_MARGIN
    for i, (text, colour) in enumerate(rows):
        top = LEGEND_MARGIN + i * LEGEND_ROW
        if colour is not None:
            r, g, b = colour
            cv2.rectangle(out, (x, top), (x + LEGEND_SWATCH - 1, top + LEGEND_SWATCH - 1), (b, g, r), cv2.FILLED)
        cv2.putText(out, text, (x + LEGEND_SWATCH + LEGEND_MARGIN, top + LEGEND_SWATCH - 2), font, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out
