"""Helpers shared by the test modules (pytest puts tests/ on sys.path)."""


def cpu_run_cfg(cfg, work_dir):
    """A CPU-sized run of ``cfg``: ResNet-18 without pretrained weights (no download; the data side is under test,
    not the backbone), 100 proposals and 64 sampled RoIs instead of 1000 and 512, 2 iterations, no workers, one
    checkpoint without optimizer state."""
    from mmengine.config import ConfigDict
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.update(depth=18, init_cfg=None)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    cfg.model.train_cfg.rcnn.sampler.num = 64
    cfg.model.test_cfg.rpn.update(nms_pre=200, max_per_img=100)
    cfg.model.test_cfg.rcnn.max_per_img = 20
    cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)
    cfg.param_scheduler = []
    cfg.optim_wrapper.optimizer.lr = 0.002
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = ConfigDict(type='CheckpointHook', by_epoch=False, interval=2, save_optimizer=False)
    cfg.log_processor.by_epoch = False
    cfg.randomness = dict(seed=0)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    return cfg


def tiny_isaid_cfg(data_root, work_dir, scale=(128, 128)):
    """The CPU smoke config (ResNet-18, 128-channel FPN, random init) on iSAID patches under ``data_root``, cut to a
    ``scale`` input and a 2-iteration run by :func:`cpu_run_cfg`; validation and test use the val split."""
    from pathlib import Path

    from mmengine.config import Config
    config = Path(__file__).resolve().parents[1] / 'configs' / 'mask_rcnn' / 'mask-rcnn_r18_fpn_300i_isaid-smoke.py'
    cfg = cpu_run_cfg(Config.fromfile(str(config)), work_dir)
    root = str(data_root).rstrip('/') + '/'
    for loader, split in (('train_dataloader', 'train'), ('val_dataloader', 'val'), ('test_dataloader', 'val')):
        cfg[loader].batch_size = 1
        cfg[loader].dataset.update(data_root=root, ann_file=f'annotations/instances_{split}.json',
                                   data_prefix=dict(img=f'{split}/images/'))
        for t in cfg[loader].dataset.pipeline:
            if t['type'] == 'Resize':
                t['scale'] = scale
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = root + 'annotations/instances_val.json'
    return cfg
