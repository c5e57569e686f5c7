"""The training losses on the validation split, beside AP, at every validation (``val/loss``, ``val/loss_*``)."""
import copy
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmdet_custom.datasets.utils import innermost_dataset_cfg
from mmdet_custom.utils.config import is_annotation_loader
from mmdet_custom.utils.errors import UserError

#: Transforms after which ``LoadAnnotations`` would read ground truth in another frame than the image's.
_IMAGE_LOADERS = ('LoadImageFromFile', 'LoadImageFromNDArray', 'LoadMultiChannelImageFromFiles')


class ValLossConfigError(UserError, ValueError):
    """The validation data cannot give training losses (no annotations in its pipeline)."""


def loss_pipeline(pipeline: Sequence[dict]) -> List[dict]:
    """The validation ``pipeline`` with ``LoadAnnotations`` moved right after the image loader.

    mmdet's test pipelines load annotations *after* ``Resize`` so that evaluation sees them in the original image
    frame; the losses need them in the network's input frame, transformed with the image, as in training.

    Args:
        pipeline (Sequence[dict]): transform configs, e.g. ``cfg.val_dataloader.dataset.pipeline``.

    Returns:
        list[dict]: a copy, reordered.

    Raises:
        ValLossConfigError: when the pipeline has no ``LoadAnnotations`` (no ground truth, no loss).
    """
    steps = [copy.deepcopy(dict(t)) for t in pipeline]
    loads = [i for i, t in enumerate(steps) if is_annotation_loader(t)]
    if not loads:
        raise ValLossConfigError('ValLossHook: the validation pipeline has no LoadAnnotations, so there is no ground '
                                 'truth to compute losses with. Add dict(type=\'LoadAnnotations\', with_bbox=True, '
                                 'with_mask=True) to val_dataloader.dataset.pipeline, or give the hook a dataloader.')
    annotations = steps.pop(loads[0])
    image = next((i for i, t in enumerate(steps) if str(t.get('type', '')).split('.')[-1] in _IMAGE_LOADERS), -1)
    steps.insert(image + 1, annotations)
    return steps


@HOOKS.register_module()
class ValLossHook(Hook):
    """Compute the model's training losses on the validation data at each validation and report them as metrics.

    After each validation epoch (before any other hook sees its metrics) the hook runs the model in ``'loss'`` mode
    over its own loader of the validation set: the val dataloader config with ``LoadAnnotations`` moved right after
    the image loader (see :func:`loss_pipeline`; mmdet's test pipelines load annotations after ``Resize``, in the
    original image frame). The model stays in the mode the validation loop put it in (``eval``: BatchNorm uses its
    running statistics, no dropout), gradients are off, and the batches are preprocessed as for evaluation (no
    batch augmentation) with the ground-truth masks padded as in training.

    The proposal / RoI samplers of two-stage detectors draw at random; each batch is computed under a fixed seed
    (``seed + batch index``, in a forked RNG so training's random stream is not changed), so the same weights give
    the same validation loss and differences between validations come from the weights.

    Reported (added to the validation metrics, so ``CheckpointHook(save_best='val/loss', rule='less')`` and
    ``ReduceOnPlateauLR(monitor='val/loss')`` can use them, and logged with the AP metrics):

    - ``val/loss``: the total of the loss terms (mmengine's ``parse_losses``: every log variable whose name holds
      ``loss``), averaged over batches;
    - ``val/<term>`` for each loss term (``val/loss_rpn_cls``, ``val/loss_bbox``, ``val/loss_mask``, ...).

    In distributed runs each rank computes its shard (mmengine's sampler) and the batch means are averaged over
    all ranks (the sampler pads the last shard with repeated images, as for evaluation).

    Args:
        dataloader (dict, optional): a dataloader config to compute the losses on instead of the validation
            loader (e.g. a subset). Used as given (its pipeline must put annotations in the input frame).
        seed (int): base seed of the per-batch samplers. Defaults to 0.
        prefix (str): metric name prefix. Defaults to ``'val'``.
        priority (str | int): must run before ``RuntimeInfoHook`` (``VERY_HIGH``), which copies the metrics to the
            message hub for logging. Defaults to ``'HIGHEST'``.

    Raises:
        ValLossConfigError: at the first validation, when the validation pipeline loads no annotations.

    Example:
        >>> custom_hooks = [dict(type='ValLossHook')]
        >>> default_hooks = dict(checkpoint=dict(type='CheckpointHook', save_best='val/loss', rule='less'))
    """

    def __init__(self,
                 dataloader: Optional[dict] = None,
                 seed: int = 0,
                 prefix: str = 'val',
                 priority: Union[str, int] = 'HIGHEST') -> None:
        self.dataloader_cfg = dataloader
        self.seed = seed
        self.prefix = prefix
        self.priority = priority
        self._loader = None

    # ------------------------------------------------------------------------------------------------ building
    def _build_loader(self, runner) -> Any:
        if self.dataloader_cfg is not None:
            cfg = copy.deepcopy(self.dataloader_cfg)
        else:
            cfg = copy.deepcopy(runner.cfg.get('val_dataloader'))
            if not cfg:
                raise ValLossConfigError('ValLossHook needs val_dataloader in the config (or a dataloader argument)')
            leaf = innermost_dataset_cfg(cfg['dataset'])  # inside RepeatDataset, ClassBalancedDataset, ...
            leaf['pipeline'] = loss_pipeline(leaf['pipeline'])
        return runner.build_dataloader(cfg, seed=runner.seed)

    # ------------------------------------------------------------------------------------------------ computing
    @torch.no_grad()
    def compute(self, model: torch.nn.Module, data_loader) -> Dict[str, float]:
        """Mean training losses of ``model`` over ``data_loader`` (this rank's shard, averaged over ranks).

        Args:
            model (nn.Module): an mmdet detector (or a DDP wrapper of one), left in its current mode.
            data_loader (Iterable[dict]): batches as mmdet's dataloaders give them (``inputs``, ``data_samples``
                with ``gt_instances`` in the input frame).

        Returns:
            dict[str, float]: ``{'<prefix>/loss': total, '<prefix>/<term>': mean, ...}``.
        """
        module = model.module if is_model_wrapper(model) else model
        totals: Dict[str, float] = {}
        device = next(module.parameters()).device
        batches = 0
        for idx, data_batch in enumerate(data_loader):
            with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
                torch.manual_seed(self.seed + idx)
                log_vars = self._batch_losses(module, data_batch)
            for name, value in log_vars.items():
                if 'loss' in name:  # log variables such as the RoI head's 'acc' are not losses
                    totals[name] = totals.get(name, 0.0) + float(value)
            batches += 1
        names = sorted(totals)
        sums = torch.tensor([totals[n] for n in names] + [float(batches)], dtype=torch.float64, device=device)
        if get_world_size() > 1:  # every rank has the same loss terms (same model)
            all_reduce(sums, op='sum')
        count = max(float(sums[-1]), 1.0)
        return {f'{self.prefix}/{name}': float(sums[i]) / count for i, name in enumerate(names)}

    @staticmethod
    def _batch_losses(module: torch.nn.Module, data_batch: dict) -> Dict[str, torch.Tensor]:
        pre = module.data_preprocessor
        data = pre(data_batch, False)  # no batch augmentation
        if data.get('data_samples') is not None:  # as DetDataPreprocessor does in training
            if getattr(pre, 'pad_mask', False):
                pre.pad_gt_masks(data['data_samples'])
            if getattr(pre, 'pad_seg', False):
                pre.pad_gt_sem_seg(data['data_samples'])
        losses = module(**data, mode='loss')
        _, log_vars = module.parse_losses(losses)
        return log_vars

    # ------------------------------------------------------------------------------------------------ hook
    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        if self._loader is None:
            self._loader = self._build_loader(runner)
        values = self.compute(runner.model, self._loader)
        if metrics is not None:  # logged with the other metrics by LoggerHook
            metrics.update(values)
