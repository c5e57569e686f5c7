"""Helpers shared by the test modules (pytest puts tests/ on sys.path).

:func:`shrink_for_cpu` is the one place where a test cuts a config down to CPU size; every test that trains, tests or
steps a model of a project config goes through it and states only what it keeps.
"""
import copy
import functools
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = REPO_ROOT / 'configs' / 'mask_rcnn' / 'mask-rcnn_r18_fpn_300i_isaid-smoke.py'
# C2..C5 channels of mmdet's ResNet by depth (BasicBlock for 18/34, Bottleneck for 50/101/152)
RESNET_CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512], 50: [256, 512, 1024, 2048],
                   101: [256, 512, 1024, 2048], 152: [256, 512, 1024, 2048]}
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
NO_VALIDATION = 10**9  # a val_interval that never comes: the loop validates only when an iteration reaches it


@functools.lru_cache(maxsize=None)
def _parsed(path: str):
    from mmengine.config import Config
    return Config.fromfile(path)


def load_config(path, resolved=True):
    """The config at ``path`` (absolute, or relative to the repository), parsed once per session (mmengine takes
    0.5-2 s per file with its bases) and shared by the test modules; a deep copy, free to modify.

    ``resolved``: as the tools see it (``mmdet_custom.utils.config.read_config``: the fragments' private ``_name``
    parts dropped); ``resolved=False``: as ``Config.fromfile`` gives it, private parts kept."""
    cfg = copy.deepcopy(_parsed(str((REPO_ROOT / path).resolve())))
    if resolved:
        from mmdet_custom.utils.config import drop_private_names
        drop_private_names(cfg)
    return cfg


def _rcnn_stages(rcnn):
    """The R-CNN stage configs of a ``train_cfg.rcnn`` (one dict, or a list for cascades)."""
    return [s for s in (rcnn if isinstance(rcnn, list) else [rcnn]) if isinstance(s, dict)]


def _resize_to(pipeline, image_size, insert=False):
    """Every ``Resize`` of ``pipeline`` to a fixed ``image_size`` (keep_ratio kept); with ``insert``, a pipeline
    without one (native-resolution training, e.g. the cells config) gets one after its ``LoadAnnotations``."""
    from mmdet_custom.utils.config import is_annotation_loader
    resizes = [t for t in pipeline if t.get('type') == 'Resize']
    for t in resizes:
        t.pop('scale_factor', None)
        t['scale'] = tuple(image_size)
        t.setdefault('keep_ratio', True)
    if not resizes and insert:
        after = next((i + 1 for i, t in enumerate(pipeline) if is_annotation_loader(t)), 1)
        pipeline.insert(after, dict(type='Resize', scale=tuple(image_size), keep_ratio=True))


def shrink_for_cpu(cfg, work_dir=None, *, resnet_depth=18, image_size=None, iters=2, val_interval=None,
                   batch_size=None, proposals=100, rois=64, max_dets=20, keep_schedule=False, lr=0.002,
                   checkpoint_interval='last', save_optimizer=False, seed=0):
    """Cut a project config down to a seconds-long CPU job, in place; returns ``cfg``.

    What is cut (each ``None`` keeps the config's own value):

    - weights: random init everywhere, nothing read or downloaded (:func:`mmdet_custom.models.builder.
      disable_pretrained`); a ResNet backbone of another depth becomes ``resnet_depth`` (default ResNet-18, the FPN's
      ``in_channels`` follow; a backbone with plugins, e.g. CBAM, needs Bottlenecks: pass ``resnet_depth=None``);
    - RoI work: ``proposals`` RPN proposals (2x that before NMS) in training and testing, ``rois`` sampled RoIs per
      image in every R-CNN stage (cascades included), at most ``max_dets`` detections per test image;
    - data: ``image_size`` (h, w) for every Resize of every loader (one is added to a pipeline that trains at native
      resolution), ``batch_size`` for training, no loader workers;
    - loop (``iters=None``: no loop, hook or schedule change, for tests that build the model only): an
      ``iters``-iteration ``IterBasedTrainLoop``; validation every ``val_interval`` iterations, or none
      during training when ``val_interval`` is None (then the val loader, loop and evaluator are dropped: tests
      evaluate through ``test``); the config's optimizer at ``lr`` and no LR schedule, unless ``keep_schedule``;
    - hooks: a log line per iteration, one checkpoint (``'last'``: at ``iters``; an int: every that many
      iterations; None: no CheckpointHook) without optimizer state unless ``save_optimizer``, seed ``seed``.
    - the anchor check before training warns instead of refusing (``anchor_check='warn'``): at a shrunk
      ``image_size`` the objects of real patches fall below every anchor, which these plumbing runs accept.

    The number of torch threads is the ``one_torch_thread`` fixture's job (tests/conftest.py), not the config's.

    Args:
        cfg (mmengine.config.Config): a full project config (e.g. ``read_config(path)``), modified in place.
        work_dir (str | Path, optional): set as ``cfg.work_dir``.

    Returns:
        Config: ``cfg``.

    Raises:
        ValueError: ``resnet_depth`` asked for a ResNet with plugins (BasicBlock takes none).
    """
    from mmengine.config import ConfigDict

    from mmdet_custom.models.builder import disable_pretrained

    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    model = cfg.model
    disable_pretrained(model)
    backbone = model.get('backbone') or {}
    if resnet_depth is not None and backbone.get('type') == 'ResNet' and backbone.get('depth') != resnet_depth:
        if backbone.get('plugins') and resnet_depth < 50:
            raise ValueError(f'ResNet-{resnet_depth} takes no plugins ({backbone["plugins"]}): pass resnet_depth=None '
                             f'to keep the config\'s ResNet-{backbone["depth"]}')
        backbone.depth = resnet_depth
        model.neck.in_channels = list(RESNET_CHANNELS[resnet_depth])

    train_cfg, test_cfg = model.get('train_cfg') or {}, model.get('test_cfg') or {}
    if proposals is not None:
        for stage in (train_cfg.get('rpn_proposal'), test_cfg.get('rpn')):
            if isinstance(stage, dict):
                stage.update(nms_pre=2 * proposals, max_per_img=proposals)
    if rois is not None:
        for stage in _rcnn_stages(train_cfg.get('rcnn')):
            if isinstance(stage.get('sampler'), dict) and 'num' in stage['sampler']:
                stage['sampler']['num'] = rois
    if max_dets is not None:
        for stage in _rcnn_stages(test_cfg.get('rcnn')):
            stage['max_per_img'] = max_dets

    if iters is not None:
        if val_interval is None:
            cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=iters,
                                   val_interval=val_interval or NO_VALIDATION)
        cfg.log_processor.by_epoch = False
    if iters is not None and not keep_schedule:
        cfg.param_scheduler = []
        if lr is not None:
            cfg.optim_wrapper.optimizer.lr = lr
    for name in LOADERS:
        loader = cfg.get(name)
        if not loader:
            continue
        loader.num_workers = 0
        loader.persistent_workers = False
        if image_size is not None:
            from mmdet_custom.datasets.utils import innermost_dataset_cfg
            _resize_to(innermost_dataset_cfg(loader.dataset).pipeline, image_size, insert=name == 'train_dataloader')
    if batch_size is not None:
        cfg.train_dataloader.batch_size = batch_size

    if iters is not None:
        cfg.default_hooks.logger.interval = 1
        if checkpoint_interval is None:
            cfg.default_hooks.checkpoint = None
        else:
            every = iters if checkpoint_interval == 'last' else checkpoint_interval
            cfg.default_hooks.checkpoint = ConfigDict(type='CheckpointHook', by_epoch=False, interval=every,
                                                      save_optimizer=save_optimizer)
    if iters is not None:
        cfg.anchor_check = 'warn'
    cfg.randomness = dict(seed=seed)
    return cfg


def use_data_root(cfg, data_root, splits=None):
    """Point every loader (and the val/test evaluators) of ``cfg`` at the COCO folder ``data_root``.

    ``splits`` maps loader -> split for the iSAID converters' layout (``annotations/instances_<split>.json``,
    ``<split>/images/``); without it the config's own ``ann_file`` and ``data_prefix`` stay (e.g. the cells
    layout) and only ``data_root`` moves. The evaluators read the test loader's annotation file."""
    root = str(data_root).rstrip('/') + '/'
    for name in LOADERS:
        loader = cfg.get(name)
        if not loader:
            continue
        loader.dataset.data_root = root
        if splits and name in splits:
            loader.dataset.update(ann_file=f'annotations/instances_{splits[name]}.json',
                                  data_prefix=dict(img=f'{splits[name]}/images/'))
    for name in ('val_evaluator', 'test_evaluator'):
        if cfg.get(name):
            cfg[name].ann_file = root + cfg.test_dataloader.dataset.ann_file
    return cfg


def tiny_isaid_cfg(data_root, work_dir, scale=(128, 128), iters=2, val_interval=2):
    """The CPU smoke config (ResNet-18, 128-channel FPN, random init) on iSAID patches under ``data_root``, cut by
    :func:`shrink_for_cpu` to a ``scale`` input, batch 1 and an ``iters``-iteration run that validates every
    ``val_interval`` iterations (default: at its end) and saves one checkpoint at its end; validation and test use
    the val split."""
    cfg = load_config(SMOKE_CONFIG, resolved=False)
    shrink_for_cpu(cfg, work_dir, image_size=scale, iters=iters, val_interval=val_interval)
    for name in LOADERS:
        cfg[name].batch_size = 1
    return use_data_root(cfg, data_root, splits=dict(train_dataloader='train', val_dataloader='val',
                                                      test_dataloader='val'))
