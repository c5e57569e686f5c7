"""Annotation loading that keeps instance masks as polygons, so a dense patch costs kilobytes, not gigabytes."""
from mmdet.datasets.transforms import LoadAnnotations
from mmdet.registry import TRANSFORMS
from mmengine.logging import print_log


@TRANSFORMS.register_module()
class LoadCompactAnnotations(LoadAnnotations):
    """mmdet's :class:`~mmdet.datasets.transforms.LoadAnnotations` with polygons kept as ``PolygonMasks`` and no
    mask ever dropped.

    With mmdet's default ``poly2mask=True`` every polygon becomes an image-sized ``uint8`` bitmap (640 KB per object
    at 800 x 800: ~0.8 GB for iSAID's densest reported patch of 1,239 objects), which every later transform copies
    and ``mask_target`` moves whole to the device. Kept as polygons, masks are rasterised only inside the sampled
    positive RoIs (``PolygonMasks.crop_and_resize``), at the mask head's size.

    mmdet's ``poly2mask=False`` silently turns a non-polygon mask (an RLE dict) into an *ignored* fake polygon, so
    the object vanishes from training. Here an image whose masks include a valid RLE is loaded as mmdet's
    ``poly2mask=True`` does (``BitmapMasks``, exact, the image's memory as before); a malformed mask is ignored
    as mmdet ignores it. Images of polygons only stay ``PolygonMasks``.

    Mask targets then differ slightly from the bitmap path: a polygon is rasterised at the RoI's 28 x 28 grid
    (pycocotools, pixel centres inside the polygon) instead of bilinearly resampled from a full-resolution bitmap
    and thresholded at 0.5.

    Args:
        poly2mask (bool): As in mmdet; ``True`` restores mmdet's bitmap loading. Defaults to False.
        **kwargs: Other ``LoadAnnotations`` arguments (``with_bbox``, ``with_mask``, ``box_type``, ...).
    """

    def __init__(self, poly2mask: bool = False, **kwargs) -> None:
        super().__init__(poly2mask=poly2mask, **kwargs)
        self._warned_rle = False

    def _load_masks(self, results: dict) -> None:
        """Load ``gt_masks``: ``PolygonMasks`` when every mask is a polygon, else mmdet's ``BitmapMasks``."""
        if self.poly2mask or not any(isinstance(inst.get('mask'), dict) for inst in results.get('instances', [])):
            super()._load_masks(results)
            return
        if not self._warned_rle:
            print_log(f'LoadCompactAnnotations: {results.get("img_path", "an image")} has RLE masks; images with RLE '
                      f'masks are decoded to full-size bitmaps (exact; polygon-only images stay polygons)',
                      logger='current')
            self._warned_rle = True
        self.poly2mask = True
        try:
            super()._load_masks(results)
        finally:
            self.poly2mask = False

    def __repr__(self) -> str:
        return super().__repr__().replace('LoadAnnotations', 'LoadCompactAnnotations', 1)

