"""A hook for tests/test_distributed.py, imported by the torchrun processes through the config's custom_imports:
each rank writes its rank, world size, the images it trained on and a fingerprint of every parameter."""
import hashlib
import json
import os.path as osp

from mmdet.registry import HOOKS
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper


def fingerprints(model):
    """sha256 of each parameter's bytes, by name (identical weights <=> identical fingerprints)."""
    module = model.module if is_model_wrapper(model) else model
    return {name: hashlib.sha256(p.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for name, p in module.named_parameters()}


@HOOKS.register_module()
class DistProbeHook(Hook):
    priority = 'LOWEST'

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.images = []
        self.initial = None

    def before_train(self, runner):
        self.initial = fingerprints(runner.model)  # after the DDP wrap (rank 0's weights broadcast)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.images.append([osp.basename(s.img_path) for s in data_batch['data_samples']])

    def after_train(self, runner):
        rank, world_size = get_dist_info()
        # mmengine logs from rank 0 only (the other ranks' console handlers show errors); torchrun relays stdout
        print(f'DistProbeHook: rank {rank} of {world_size} trained on {self.images}', flush=True)
        with open(osp.join(self.out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump(dict(rank=rank, world_size=world_size, distributed=runner.distributed, images=self.images,
                           wrapper=type(runner.model).__name__, initial=self.initial,
                           final=fingerprints(runner.model)), f)
