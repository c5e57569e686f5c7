"""Whole-scene inference with an mmdet detector: windows read and batched, predictions merged once."""
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from mmdet_custom.utils.errors import UserError

from .batching import WindowDataset, build_window_pipeline, window_loader
from .memory import release_free_memory
from .merge import MergeStats, SceneDetections, SceneDetectionsBuilder, check_match, merge_scene_detections
from .reader import SceneReader, SceneSettingError, ValueRange, scene_windows


@dataclass
class SceneResult:
    """Merged detections of one scene and what it took.

    Attributes:
        path (str): the scene file.
        reader (SceneReader): the scene's reader (size, transform, crs, georeferenced), still open for writing
            the overlay; :meth:`SceneReader.close` it when done.
        detections (SceneDetections): merged detections in scene pixels.
        merge (MergeStats): the merge's counts (``before`` = detections of all windows after the score threshold
            and the per-window cap).
        num_windows (int): windows processed.
        timings (dict): seconds: ``predict`` (reading + model, overlapped), ``merge``.
    """
    path: str
    reader: SceneReader
    detections: SceneDetections
    merge: MergeStats
    num_windows: int
    timings: Dict[str, float] = field(default_factory=dict)


def _config_classes(cfg) -> Optional[tuple]:
    """Class names of the config's test dataset (``metainfo`` or its dataset type's ``METAINFO``)."""
    from mmdet.registry import DATASETS
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes is None and dataset.get('type'):
        dataset_cls = DATASETS.get(dataset['type'])
        classes = getattr(dataset_cls, 'METAINFO', {}).get('classes') if dataset_cls is not None else None
    return tuple(classes) if classes else None


def check_settings(window: int = 800, overlap: int = 200, batch_size: int = 2, num_workers: int = 2,
                   score_thr: float = 0.05, max_per_window: int = 1000, match: str = 'iou', match_thr: float = 0.5,
                   border_margin: int = 2, **_: object) -> None:
    """Refuse window / merge settings that cannot work or would change the results without a word.

    Each setting is named as the argument and as ``tools/infer_scene.py``'s flag. Called before the model is built.

    Raises:
        SceneSettingError: a window or overlap of no tiling, a batch size or window cap below 1, negative workers or
            border margin, a score threshold outside [0, 1], an unknown match or a match threshold outside (0, 1].
    """
    def refuse(name: str, rule: str, value: object) -> None:
        raise SceneSettingError(f'{name} (--{name.replace("_", "-")}) must be {rule}, got {value!r}')

    if not window > 0:
        refuse('window', 'a positive number of pixels', window)
    if not 0 <= overlap < window:
        refuse('overlap', f'in [0, window = {window}) px', overlap)
    if not batch_size >= 1:
        refuse('batch_size', '>= 1', batch_size)
    if not num_workers >= 0:
        refuse('num_workers', '>= 0', num_workers)
    if not max_per_window >= 1:
        refuse('max_per_window', '>= 1', max_per_window)
    if not 0 <= score_thr <= 1:  # also refuses NaN
        refuse('score_thr', 'in [0, 1] (a detection score)', score_thr)
    if not 0 <= border_margin < window / 2:
        refuse('border_margin', f'in [0, window / 2 = {window / 2:g}) px', border_margin)
    check_match(match, match_thr)


class SceneInferencer:
    """Predict instances on whole scenes of any size, window by window, merged once (see :mod:`.merge`).

    Windows (iSAID devkit tiling, :func:`~.reader.scene_windows`) are read by DataLoader workers while the model
    runs, ``batch_size`` at a time through the model's ``test_step`` (mmdet's batched inference, the config's own
    test pipeline). Each window's masks are cropped to their extent and RLE-encoded as soon as they arrive, so memory
    holds one batch of dense window masks, never a scene-sized array.

    Args:
        model (torch.nn.Module): an mmdet detector in eval mode (anything with mmdet's ``test_step``), its
            ``dataset_meta['classes']`` set unless ``classes`` is given.
        pipeline (callable, optional): window dict -> packed inputs; defaults to
            :func:`~.batching.build_window_pipeline` of ``model.cfg``.
        classes (Sequence[str], optional): class names by label; defaults to ``model.dataset_meta['classes']``.
        window (int): window side in pixels. Defaults to 800 (iSAID training patches).
        overlap (int): overlap of neighbouring windows in pixels. Defaults to 200.
        batch_size (int): windows per ``test_step``. Defaults to 2.
        num_workers (int): reading processes (0 reads in the main process). Defaults to 2.
        score_thr (float): detections below are dropped, after the model's own ``test_cfg``. Defaults to 0.05.
        max_per_window (int): detections kept per window (highest scores). Defaults to 1000 (iSAID's budget per
            image applies per window; the scene has no cap).
        match (str): ``'iou'`` or ``'ios'``; see :func:`~.merge.merge_scene_detections`. Defaults to ``'iou'``.
        match_thr (float): duplicate threshold. Defaults to 0.5.
        border_margin (int): px from an inner window border within which a detection counts as cut. Defaults to 2.
        progress (bool): a tqdm bar over windows. Defaults to True.

    Example:
        >>> inferencer = SceneInferencer.from_config(  # doctest: +SKIP
        ...     'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py', 'epoch_12.pth', device='cuda', batch_size=4)
        >>> result = inferencer('scene.tif')  # doctest: +SKIP
        >>> len(result.detections), result.merge.before  # doctest: +SKIP
    """

    def __init__(self, model, pipeline=None, classes: Optional[Sequence[str]] = None, window: int = 800,
                 overlap: int = 200, batch_size: int = 2, num_workers: int = 2, score_thr: float = 0.05,
                 max_per_window: int = 1000, match: str = 'iou', match_thr: float = 0.5, border_margin: int = 2,
                 progress: bool = True):
        check_settings(window, overlap, batch_size, num_workers, score_thr, max_per_window, match, match_thr,
                       border_margin)
        self.model = model
        self.pipeline = pipeline if pipeline is not None else build_window_pipeline(model.cfg)
        meta = getattr(model, 'dataset_meta', None) or {}
        self.classes = tuple(classes) if classes is not None else tuple(meta.get('classes') or ())
        if not self.classes:
            raise UserError('the model has no class names (dataset_meta["classes"]): pass classes=...')
        self.palette = meta.get('palette')
        self.window, self.overlap = window, overlap
        self.batch_size, self.num_workers = batch_size, num_workers
        self.score_thr, self.max_per_window = score_thr, max_per_window
        self.match, self.match_thr, self.border_margin = match, match_thr, border_margin
        self.progress = progress
        self._shapes_checked = set()  # window shapes the pipeline took (see check_scene)

    @classmethod
    def from_config(cls, config, checkpoint: Optional[str] = None, device: Optional[str] = None,
                    cfg_options: Optional[dict] = None, speedups: bool = True, **kwargs) -> 'SceneInferencer':
        """Build the detector of ``config`` (path or Config) with the project's one build path
        (:func:`mmdet_custom.models.builder.build_model`), load ``checkpoint`` (None: random weights).

        Class names come from the checkpoint's ``meta.dataset_meta``, else from the config's test dataset.

        Args:
            config (str | Config): the detector config.
            checkpoint (str, optional): its weights (None: random init).
            device (str, optional): 'cpu', 'cuda', ... (None: 'cuda' when available).
            cfg_options (dict, optional): ``--cfg-options`` (unknown keys refused).
            speedups (bool): apply :func:`mmdet_custom.models.speedups.apply_inference_speedups` (BatchNorm
                folded into the convs, the mask head in chunks of 100 RoIs, channels_last): the same detections to
                float rounding, faster. Defaults to True.
            **kwargs: the window / merge settings of :class:`SceneInferencer`.

        Raises:
            FileNotFoundError: the config or checkpoint is missing.
            UserError: no class names anywhere.
        """
        from mmdet_custom.models.builder import build_model
        check_settings(**kwargs)  # before the model is built
        for path, what in ((config, 'config'), (checkpoint, 'checkpoint')):
            if isinstance(path, str) and not osp.isfile(path):
                raise FileNotFoundError(f'{what} not found: {path}')
        model = build_model(config, checkpoint, device, cfg_options=cfg_options)
        if not model.dataset_meta.get('classes'):
            classes = _config_classes(model.cfg)
            if classes is None:
                raise UserError('neither the checkpoint (meta.dataset_meta) nor the config\'s test dataset names the '
                                'classes')
            model.dataset_meta = dict(classes=classes, palette=None)
        if speedups:
            from mmdet_custom.models.speedups import apply_inference_speedups
            apply_inference_speedups(model)
        return cls(model, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    def check_scene(self, reader: SceneReader) -> np.ndarray:
        """The windows of ``reader``'s scene, each distinct window shape run once through the test pipeline on a
        blank image, so that a scene the pipeline cannot take fails before any window of any scene runs.

        Returns:
            np.ndarray: (K, 4) windows, as :func:`~.reader.scene_windows`.

        Raises:
            SceneSettingError: a window shape the pipeline refuses (e.g. a strip a few pixels high, from a
                ``window`` longer than the scene's other side), naming the scene, the shape and the cause.
        """
        windows = scene_windows(reader.height, reader.width, self.window, self.overlap)
        shapes = {(int(x1 - x0), int(y1 - y0)) for x0, y0, x1, y1 in windows} - self._shapes_checked
        for w, h in sorted(shapes):  # a region of thousands of scenes has a few window shapes: each checked once
            try:
                self.pipeline(dict(img=np.zeros((h, w, 3), np.uint8), img_id=0, img_path=None))
            except Exception as e:  # noqa: BLE001 (any failure of the config's transforms)
                raise SceneSettingError(
                    f'{reader.path}: its {w} x {h} px windows (window {self.window}, overlap {self.overlap}, on a '
                    f'{reader.width} x {reader.height} px scene) fail in the config\'s test pipeline '
                    f'({type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ""}); choose '
                    f'a --window that fits the scene, or crop or pad the scene') from None
            self._shapes_checked.add((w, h))
        return windows

    def predict_raw(self, reader: SceneReader, windows: np.ndarray,
                    on_windows: Optional[Callable[[int], None]] = None) -> SceneDetections:
        """All windows' detections in scene pixels, before merging; ``on_windows(n)`` is called after each batch of
        ``n`` windows (e.g. a progress bar over many scenes)."""
        from tqdm import tqdm
        builder = SceneDetectionsBuilder(reader.height, reader.width, windows, self.border_margin, self.score_thr,
                                         self.max_per_window)
        reader.prepare()
        loader = window_loader(WindowDataset(reader, windows, self.pipeline), self.batch_size, self.num_workers)
        bar = tqdm(total=len(windows), unit='window', desc=osp.basename(reader.path), disable=not self.progress,
                   dynamic_ncols=True)
        try:
            for indices, batch in loader:
                self._predict_batch(builder, indices, batch)
                del batch
                release_free_memory()
                bar.update(len(indices))
                if on_windows is not None:
                    on_windows(len(indices))
        except UserError as e:
            # torch re-raises a reading worker's error with the worker's traceback in the message; a user error
            # keeps its one line (the traceback's last: "<module>.<Type>: <message>")
            text = str(e)
            if 'Original Traceback' not in text:
                raise
            raise type(e)(text.rstrip().splitlines()[-1].split(': ', 1)[-1]) from None
        finally:
            bar.close()
        return builder.build()

    def _predict_batch(self, builder: SceneDetectionsBuilder, indices: Sequence[int], batch: dict) -> None:
        """One ``test_step``; its dense (N, H, W) window masks are released on return, before the next batch runs
        (holding them across the next forward would add a batch of dense masks to the peak memory)."""
        with torch.no_grad():
            outputs = self.model.test_step(batch)
        for i, sample in zip(indices, outputs):
            pred = sample.pred_instances
            masks = pred.masks if 'masks' in pred else None
            if masks is not None:
                masks = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
            builder.add(i, pred.bboxes.cpu().numpy(), pred.scores.cpu().numpy(), pred.labels.cpu().numpy(), masks)

    def __call__(self, path: str, bands: Optional[Sequence[int]] = None, value_range: ValueRange = None,
                 on_windows: Optional[Callable[[int], None]] = None) -> SceneResult:
        """Predict and merge one scene.

        Args:
            path (str): a raster (see :mod:`.reader` for formats and the band / bit-depth rule).
            bands (Sequence[int], optional): GDAL band numbers used as R, G, B.
            value_range (tuple | str, optional): scaling of non-8-bit data (``(low, high)`` or ``'auto'``).
            on_windows (callable, optional): called with the number of windows of each batch done.

        Raises:
            FileNotFoundError, SceneReadError: see :class:`~.reader.SceneReader`.
        """
        reader = SceneReader(path, bands=bands, value_range=value_range)
        start = time.perf_counter()
        try:
            windows = self.check_scene(reader)
            raw = self.predict_raw(reader, windows, on_windows)
        except BaseException:
            reader.close()
            raise
        predicted = time.perf_counter()
        merged, stats = merge_scene_detections(raw, self.match, self.match_thr)
        done = time.perf_counter()
        return SceneResult(reader.path, reader, merged, stats, len(windows),
                           dict(predict=predicted - start, merge=done - predicted))
