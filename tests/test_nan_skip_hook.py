"""NanSkipHook beyond the loss: non-finite gradients are caught before the step, and the BN running statistics of
a skipped iteration are restored (its forward pass had already moved them)."""
import glob
import os.path as osp
import uuid

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import mmdet_custom.register  # noqa: F401  (registers NanSkipHook)

CLEAN, NAN_INPUT, NAN_GRAD = 0, 1, 2


class BNModel(BaseModel):
    """Linear -> BatchNorm1d -> Linear; a batch of kind NAN_INPUT holds a NaN input, one of kind NAN_GRAD adds
    ``sqrt(0 * w)`` to the loss: value 0 (the loss stays finite), gradient 0.5 / sqrt(0) * 0 = NaN."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 4)
        self.bn = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, kind=None, data_samples=None, mode='tensor'):
        if mode == 'loss' and int(kind.max()) == NAN_INPUT:
            inputs = inputs.clone()
            inputs[0, 0] = float('nan')
        out = self.head(self.bn(self.linear(inputs)))
        if mode != 'loss':
            return out
        loss = (out ** 2).mean()
        if int(kind.max()) == NAN_GRAD:
            loss = loss + torch.sqrt(self.head.weight * 0).sum()
        return dict(loss=loss)


class Recorder(Hook):
    """Parameters, BN buffers and Adam's step count before training and after each iteration."""
    priority = 'LOWEST'

    def __init__(self):
        self.params, self.bn, self.adam_steps, self.losses = [], [], [], []

    def _record(self, runner):
        model = runner.model
        self.params.append(torch.cat([p.detach().clone().flatten() for p in model.parameters()]))
        self.bn.append({k: v.detach().clone() for k, v in model.bn.state_dict().items()})

    def before_train(self, runner):
        self._record(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self._record(runner)
        state = runner.optim_wrapper.optimizer.state.get(runner.model.head.weight, {})
        self.adam_steps.append(int(state['step']) if 'step' in state else 0)
        self.losses.append(outputs['loss'].item())


def _train(tmp_path, kinds, optim_wrapper=None, hook=True):
    torch.manual_seed(0)
    rng = torch.Generator().manual_seed(1)
    dataset = [dict(inputs=torch.randn(2, generator=rng), kind=torch.tensor(k)) for k in kinds for _ in range(4)]
    recorder = Recorder()
    runner = Runner(
        model=BNModel(), work_dir=str(tmp_path), experiment_name=f'nan_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(dataset=dataset, batch_size=4, num_workers=0, collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=len(kinds)),
        optim_wrapper=optim_wrapper or dict(optimizer=dict(type='Adam', lr=0.1)),
        custom_hooks=([dict(type='NanSkipHook', max_consecutive_skips=3)] if hook else []) + [recorder],
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False), default_scope='mmdet')
    runner.train()
    return runner, recorder


def _log(runner):
    return open(glob.glob(osp.join(runner.log_dir, '*.log'))[0]).read()


def _assert_bn_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_nan_input_batch_leaves_bn_statistics_as_before(tmp_path):
    # without the hook's restore, the NaN batch makes running_mean / running_var NaN (shown here on the same data)
    _, plain = _train(tmp_path / 'plain', [CLEAN, NAN_INPUT], hook=False)
    assert torch.isnan(plain.bn[2]['running_mean']).any()

    runner, rec = _train(tmp_path / 'hook', [CLEAN, NAN_INPUT, CLEAN, CLEAN])
    # rec.*[i]: after iteration i (0: before training)
    _assert_bn_equal(rec.bn[2], rec.bn[1])           # the skipped iteration changed no statistic
    assert int(rec.bn[2]['num_batches_tracked']) == 1
    assert torch.equal(rec.params[2], rec.params[1])  # nor any weight
    for i in (1, 3, 4):                                # the clean iterations update both
        assert not torch.equal(rec.bn[i]['running_mean'], rec.bn[i - 1]['running_mean'])
        assert not torch.equal(rec.params[i], rec.params[i - 1])
    assert int(rec.bn[4]['num_batches_tracked']) == 3
    assert all(torch.isfinite(v).all() for state in rec.bn for v in state.values())
    assert all(torch.isfinite(p).all() for p in rec.params)
    assert rec.adam_steps == [1, 1, 2, 3]
    assert rec.losses[1] != rec.losses[1] and all(x == x for x in rec.losses[2:])  # nan, then finite
    # the model evaluates to finite outputs (NaN BN statistics would make every eval output NaN)
    runner.model.eval()
    assert torch.isfinite(runner.model(torch.randn(3, 2))).all()
    log = _log(runner)
    assert 'loss is nan at iteration 2; parameter update skipped (1 in a row, 1 in total); ' \
           '3 running statistics (BN) restored' in log


@pytest.mark.parametrize('clip_grad', [None, dict(max_norm=1.0)], ids=['no-clip', 'clip'])
def test_finite_loss_with_nan_gradients_is_skipped(tmp_path, clip_grad):
    optim_wrapper = dict(optimizer=dict(type='Adam', lr=0.1), clip_grad=clip_grad)
    _, plain = _train(tmp_path / 'plain', [CLEAN, NAN_GRAD], optim_wrapper=optim_wrapper, hook=False)
    # without the hook the NaN gradient reaches the weights; clipping spreads it over every parameter
    assert torch.isnan(plain.params[2]).any() and (clip_grad is None or torch.isnan(plain.params[2]).all())

    runner, rec = _train(tmp_path / 'hook', [CLEAN, NAN_GRAD, CLEAN], optim_wrapper=optim_wrapper)
    assert rec.losses[1] == rec.losses[1]             # the loss of the skipped iteration was finite
    assert torch.equal(rec.params[2], rec.params[1])  # parameters unchanged...
    _assert_bn_equal(rec.bn[2], rec.bn[1])            # ...and so are the BN statistics of that forward
    assert not torch.equal(rec.params[3], rec.params[2])
    assert all(torch.isfinite(p).all() for p in rec.params)
    assert rec.adam_steps == [1, 1, 2]
    assert all(p.grad is None or not p.grad.any() for p in runner.model.parameters())  # zeroed after the skip
    assert runner.message_hub.get_scalar('train/nan_skips').current() == 1
    assert 'gradient of head.weight is not finite (loss finite) at iteration 2; parameter update skipped' \
        in _log(runner)
    assert 'step' not in vars(runner.optim_wrapper)  # the wraps are removed after training


def test_consecutive_gradient_skips_stop_training(tmp_path):
    with pytest.raises(RuntimeError, match=r'NaN or Inf at 3 consecutive iterations \(2 to 4, 1-based'):
        _train(tmp_path, [CLEAN, NAN_GRAD, NAN_INPUT, NAN_GRAD, CLEAN])
