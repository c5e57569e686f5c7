"""Reading a whole aerial scene window by window, with one fixed rule for bands and bit depth.

Every raster GDAL reads is opened through :mod:`rasterio`. Formats with random access by block (GeoTIFF and
Cloud-Optimized GeoTIFF, JPEG 2000, VRT, ...) are read window by window with :class:`rasterio.windows.Window`, so the
scene is never held in memory. Formats that must be decoded from their first line (PNG, JPEG, GIF, BMP, WebP) would
be decoded again for every window; they are read whole, once, and windows are views into that array (convert a
larger-than-memory scene with ``gdal_translate -co TILED=YES in.png out.tif`` first).

Band rule (GDAL band numbers start at 1):

- 1 band: grey, copied to R, G and B; 2 bands of which the second is alpha: the same, alpha dropped.
- 3 bands: R, G, B; 4 bands of which the fourth is alpha (RGBA PNG, GeoTIFF with an alpha band): alpha dropped.
- anything else (RGB + near-infrared, multispectral, palette rasters): :class:`SceneReadError`, unless ``bands``
  names the three bands to use as R, G, B (one band is used as grey).

Bit-depth rule: 8-bit data goes to the model unchanged. Any other type (uint16, int16, float32, ...) needs
``value_range``: ``(low, high)`` maps ``low`` to 0 and ``high`` to 255 linearly, clipping outside; ``'auto'`` takes,
per band, the 2nd and 98th percentiles of a decimated read of the scene (at most 1024 px on its longer side, from the
file's overviews when it has them), nodata pixels excluded. Without it the reader raises :class:`SceneReadError`:
guessing a stretch would silently change what the model sees. The model receives BGR ``uint8`` windows, as mmdet's
``LoadImageFromFile`` gives.
"""
import contextlib
import os
import os.path as osp
import warnings
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from mmdet_custom.converters.isaid.windows import devkit_windows
from mmdet_custom.utils.errors import UserError

#: GDAL drivers whose files cannot be read by window efficiently: such scenes are decoded whole, once.
WHOLE_READ_DRIVERS = ('PNG', 'JPEG', 'GIF', 'BMP', 'WEBP')
#: Longest side of the decimated read used by ``value_range='auto'``.
AUTO_RANGE_SIDE = 1024
#: Percentiles of ``value_range='auto'``.
AUTO_RANGE_PERCENTILES = (2.0, 98.0)
#: GDAL block cache per reading process, in MB. GDAL's default is 5% of the machine's RAM, enough to end up holding
#: a whole scene of a few GB. One row of 512 px tiles of a 20,000 px wide RGB scene (what consecutive window rows
#: share) takes 30 MB.
GDAL_CACHE_MB = 32

ValueRange = Union[None, str, Tuple[float, float]]


class SceneReadError(UserError, ValueError):
    """A scene that cannot be read as the model's RGB input: the message names the file and what to pass."""


class SceneSettingError(UserError, ValueError):
    """Whole-scene settings that cannot work (window, overlap, batch size, match threshold, ...)."""


def scene_windows(height: int, width: int, window: int = 800, overlap: int = 200) -> np.ndarray:
    """Windows that cover a ``height`` x ``width`` scene as the iSAID devkit's ``split.py`` cuts training patches:
    :func:`~mmdet_custom.converters.isaid.windows.devkit_windows` with the ``'clip'`` small-image rule.

    Windows are ``window`` px wide with stride ``window - overlap``; the last window of a row or column is shifted
    back inside the scene (flush with its edge) rather than padded; a side of ``window`` px or less gets one window
    covering it whole (the other side is still cut). Row-major order (top row first).

    Args:
        height (int): scene height in pixels.
        width (int): scene width in pixels.
        window (int): window side in pixels. Defaults to 800.
        overlap (int): overlap of neighbouring windows in pixels, ``0 <= overlap < window``. Defaults to 200.

    Returns:
        np.ndarray: (K, 4) int64 ``x0, y0, x1, y1`` in scene pixels, ``x1``/``y1`` exclusive.

    Raises:
        SceneSettingError: a non-positive size or window, or an overlap outside ``[0, window)``.
    """
    try:
        return devkit_windows(height, width, window, overlap, small_image='clip')
    except ValueError as e:
        raise SceneSettingError(str(e)) from None


def is_georeferenced(crs, transform) -> bool:
    """A raster is georeferenced when it has a CRS or a non-identity geotransform (GCP-only rasters are not)."""
    return crs is not None or not transform.is_identity


def raster_header(path: str) -> tuple:
    """``(height, width, crs, transform)`` of a raster, from its header: no pixel is read and neither bands nor bit
    depth are checked (:class:`SceneReader` does that).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SceneReadError: GDAL cannot open it.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    if not osp.isfile(path):
        raise FileNotFoundError(f'scene not found: {path}')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.height, ds.width, ds.crs, ds.transform
    except RasterioIOError as e:
        raise SceneReadError(f'{path}: not a raster GDAL can read ({e})') from e


def _select_bands(path: str, count: int, colorinterp: Sequence[str], bands: Optional[Sequence[int]]) -> Tuple[int]:
    """The three 1-based band numbers read as R, G, B (see the module's band rule)."""
    if bands is not None:
        bands = tuple(int(b) for b in bands)
        if len(bands) not in (1, 3) or not all(1 <= b <= count for b in bands):
            raise SceneReadError(f'{path}: bands={list(bands)} must name 1 or 3 band numbers between 1 and {count}')
        return bands * 3 if len(bands) == 1 else bands
    if 'palette' in colorinterp[:1]:
        raise SceneReadError(f'{path}: a palette (colour-table) raster; expand it to RGB first, e.g. '
                             f'`gdal_translate -expand rgb {osp.basename(path)} rgb.tif`')
    if count == 1 or (count == 2 and colorinterp[1] == 'alpha'):
        return (1, 1, 1)
    if count == 3 or (count == 4 and colorinterp[3] == 'alpha'):
        return (1, 2, 3)
    raise SceneReadError(f'{path} has {count} bands (colour interpretation {list(colorinterp)}): choose the three '
                         f'bands the model gets as R, G, B with bands=(r, g, b) / --bands R G B (GDAL band numbers '
                         f'from 1), e.g. --bands 1 2 3')


class SceneReader:
    """One scene opened for reading windows as BGR ``uint8`` (H, W, 3) arrays; see the module text for the rules.

    The reader opens the file again in each process that reads from it (a DataLoader worker after ``fork`` must not
    share the parent's GDAL handle). Whole-read formats are decoded by :meth:`prepare` in the parent, so forked
    workers share the pages instead of decoding again.

    Args:
        path (str): any raster GDAL opens (GeoTIFF, PNG, JPEG, TIFF, JPEG 2000, VRT, ...).
        bands (Sequence[int], optional): 1 or 3 GDAL band numbers (from 1) used as grey or R, G, B.
        value_range (tuple | str, optional): ``(low, high)`` or ``'auto'``: the scaling of non-8-bit data to 0..255.
        gdal_cache_mb (int): GDAL's block cache while this reader reads (``GDAL_CACHEMAX``, process-wide), in MB.
            Defaults to :data:`GDAL_CACHE_MB`.

    Attributes:
        height, width (int): scene size in pixels.
        transform (affine.Affine): pixel (column, row) -> map coordinates; identity when not georeferenced.
        crs (rasterio.crs.CRS | None): the raster's coordinate reference system.
        georeferenced (bool): the raster has a CRS or a non-identity transform (GCP-only rasters count as not
            georeferenced: warp them first).
        whole_read (bool): the scene is decoded whole (see :data:`WHOLE_READ_DRIVERS`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        SceneReadError: GDAL cannot open it, or its bands or data type break the rules above.
    """

    def __init__(self, path: str, bands: Optional[Sequence[int]] = None, value_range: ValueRange = None,
                 gdal_cache_mb: int = GDAL_CACHE_MB):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
        self.path = os.fspath(path)
        if not osp.isfile(self.path):
            raise FileNotFoundError(f'scene not found: {self.path}')
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                with rasterio.open(self.path) as ds:
                    self.height, self.width, self.count = ds.height, ds.width, ds.count
                    self.driver = ds.driver
                    self.transform, self.crs = ds.transform, ds.crs
                    self.nodata = ds.nodata
                    colorinterp = [ci.name for ci in ds.colorinterp]
                    self.bands = _select_bands(self.path, ds.count, colorinterp, bands)
                    dtypes = {ds.dtypes[b - 1] for b in self.bands}
        except RasterioIOError as e:
            raise SceneReadError(f'{self.path}: not a raster GDAL can read ({e})') from e
        self.dtype = np.dtype(dtypes.pop()) if len(dtypes) == 1 else np.dtype('float64')
        self.georeferenced = is_georeferenced(self.crs, self.transform)
        self.whole_read = self.driver in WHOLE_READ_DRIVERS
        self._unique_bands = sorted(set(self.bands))
        self._band_pos = [self._unique_bands.index(b) for b in self.bands]
        self._ds = None
        self._pid = None
        self._whole = None
        self.gdal_cache_mb = gdal_cache_mb
        if self.driver == 'PNG':
            self._check_png()
        self._set_scaling(value_range)

    def _check_png(self) -> None:
        """Refuse a truncated or corrupt PNG: GDAL decodes one cut short as black rows without an error. Pillow's
        ``verify`` reads the chunks and their CRCs, not the pixels (milliseconds)."""
        from PIL import Image
        try:
            with Image.open(self.path) as image:
                image.verify()
        except Exception as e:  # noqa: BLE001 (Pillow raises OSError, SyntaxError, struct.error, ...)
            raise SceneReadError(f'{self.path}: the PNG is truncated or corrupt ({e or type(e).__name__}); copy it '
                                 f'again') from None

    # ------------------------------------------------------------------------------------------------------------
    def _set_scaling(self, value_range: ValueRange) -> None:
        self.value_range = value_range
        if value_range is None:
            if self.dtype != np.uint8:
                raise SceneReadError(
                    f'{self.path}: bands {list(self.bands)} are {self.dtype}, not 8-bit: say how to scale them to '
                    f'0..255 with value_range=(low, high) / --value-range LOW HIGH (e.g. 0 4095 for 12-bit data) or '
                    f"value_range='auto' / --value-range auto (2nd-98th percentile per band)")
            self._low = self._high = None
            return
        if isinstance(value_range, str):
            if value_range != 'auto':
                raise SceneReadError(f"{self.path}: value_range must be (low, high) or 'auto', got {value_range!r}")
            small = self._read_raw_decimated(*self._decimated_shape(AUTO_RANGE_SIDE))[self._band_pos]  # R, G, B
            if self.dtype.kind == 'f':
                self._check_finite(small)
            low, high = [], []
            for band in small:
                values = band[band != self.nodata] if self.nodata is not None else band.ravel()
                values = values[np.isfinite(values)]
                lo, hi = np.percentile(values, AUTO_RANGE_PERCENTILES) if values.size else (0.0, 1.0)
                low.append(lo)
                high.append(hi if hi > lo else lo + 1.0)
            self._low, self._high = np.array(low), np.array(high)
            return
        low, high = (float(v) for v in value_range)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise SceneReadError(f'{self.path}: value_range (--value-range) needs finite low < high, got '
                                 f'({low}, {high})')
        self._low, self._high = np.full(3, low), np.full(3, high)
        if self.dtype.kind == 'f':
            self._check_finite(self._read_raw_decimated(*self._decimated_shape(AUTO_RANGE_SIDE))[self._band_pos])

    def _check_finite(self, small: np.ndarray) -> None:
        """Refuse a float scene whose band (sampled as ``small``, (3, h, w)) holds no finite value besides nodata:
        every pixel would be scaled to 0, a black scene with no detection and no word."""
        for band, values in zip(self.bands, small):
            finite = np.isfinite(values) & ((values != self.nodata) if self.nodata is not None else True)
            if not finite.any():
                raise SceneReadError(f'{self.path}: band {band} holds no finite value (all NaN, inf or nodata '
                                     f'{self.nodata}): nothing to detect; check the file or --bands')

    def _to_bgr_uint8(self, chw: np.ndarray) -> np.ndarray:
        """(len(unique bands), h, w) raw values -> (h, w, 3) BGR uint8."""
        import cv2
        rgb = [chw[i] for i in self._band_pos]
        if self._low is not None:
            rgb = [np.clip(np.rint((band.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))), 0,
                           255).astype(np.uint8) for band, lo, hi in zip(rgb, self._low, self._high)]
        return cv2.merge(rgb[::-1])  # interleaving by OpenCV: ~10x faster than a numpy transpose copy

    def _dataset(self):
        """This process's rasterio handle (opened again after a fork)."""
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning
        if self._ds is None or self._pid != os.getpid():
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                self._ds = rasterio.open(self.path)
            self._pid = os.getpid()
        return self._ds

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """GDAL's block cache for this reader, and a failed read (a truncated or corrupt file: rasterio's bare "Read
        failed. See previous exception") raised as :class:`SceneReadError` naming the file and GDAL's reason."""
        from rasterio.errors import RasterioError
        try:
            with self._gdal_env():
                yield
        except RasterioError as e:
            cause = e.__cause__ or e.__context__
            reason = (cause.args[-1] if cause is not None and cause.args else None) or str(e)
            raise SceneReadError(f'{self.path}: cannot read its pixels ({reason}); the file is truncated or '
                                 f'corrupt') from None

    def _decimated_shape(self, max_side: int) -> Tuple[int, int]:
        scale = min(1.0, max_side / max(self.height, self.width))
        return max(1, round(self.height * scale)), max(1, round(self.width * scale))

    def _read_raw_decimated(self, out_h: int, out_w: int) -> np.ndarray:
        """(len(unique bands), out_h, out_w) raw values, area-averaged (GDAL reads block by block or overviews)."""
        from rasterio.enums import Resampling
        with self._reading():
            return self._dataset().read(self._unique_bands, out_shape=(len(self._unique_bands), out_h, out_w),
                                        resampling=Resampling.average)

    def _gdal_env(self):
        import rasterio
        return rasterio.Env(GDAL_CACHEMAX=int(self.gdal_cache_mb) * 2**20)

    # ------------------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Decode a whole-read scene now (in the parent process, before DataLoader workers fork)."""
        if self.whole_read and self._whole is None:
            with self._reading():
                self._whole = self._to_bgr_uint8(self._dataset().read(self._unique_bands))

    def read(self, window: Sequence[int]) -> np.ndarray:
        """The pixels of ``window`` = ``(x0, y0, x1, y1)`` (scene pixels, exclusive ends) as (h, w, 3) BGR uint8."""
        from rasterio.windows import Window
        x0, y0, x1, y1 = (int(v) for v in window)
        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ValueError(f'window {tuple(window)} outside the {self.width} x {self.height} scene {self.path}')
        if self.whole_read:
            self.prepare()
            return self._whole[y0:y1, x0:x1]
        with self._reading():
            chw = self._dataset().read(self._unique_bands, window=Window(x0, y0, x1 - x0, y1 - y0))
        return self._to_bgr_uint8(chw)

    def read_overview(self, max_side: int) -> Tuple[np.ndarray, float]:
        """The whole scene shrunk to at most ``max_side`` px on its longer side (area averaging), BGR uint8.

        Memory is bounded by the output (GDAL reads block by block; overviews are used when the file has them).

        Returns:
            tuple: the (h, w, 3) image and its scale (output px per scene px, <= 1).
        """
        import cv2
        out_h, out_w = self._decimated_shape(max_side)
        scale = out_w / self.width
        if self.whole_read:
            self.prepare()
            return cv2.resize(self._whole, (out_w, out_h), interpolation=cv2.INTER_AREA), scale
        return self._to_bgr_uint8(self._read_raw_decimated(out_h, out_w)), scale

    def close(self) -> None:
        """Close this process's handle and drop a whole-read array."""
        if self._ds is not None and self._pid == os.getpid():
            self._ds.close()
        self._ds, self._pid, self._whole = None, None, None

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_ds'], state['_pid'] = None, None
        return state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
