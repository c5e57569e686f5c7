"""LR range test (Smith 2017, Sec. 3.3): the curve, the suggestion, the stop on divergence, the tool's outputs."""
import hashlib
import json
import math
import runpy
from types import SimpleNamespace

import numpy as np
import pytest
from recipe_tools_helpers import REPO_ROOT, shared_smoke_patches, tiny_cfg

from mmdet_custom.apis.lr_find import LRFindError, LRRangeTestHook, smooth_losses, suggest_lr


def test_smoothing_is_a_bias_corrected_moving_average():
    # beta 0.5: avg1 = 0.5*2 = 1 -> 1/(1-0.5) = 2; avg2 = 0.5*1 + 0.5*4 = 2.5 -> 2.5/(1-0.25) = 3.333...
    assert smooth_losses([2.0, 4.0], beta=0.5) == pytest.approx([2.0, 10 / 3])
    assert smooth_losses([3.0, 3.0, 3.0], beta=0.9) == pytest.approx([3.0, 3.0, 3.0])


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-6, 0, 61)  # 0.1 decade apart
    x = np.log10(lrs)
    loss = 2 - np.tanh(2 * (x + 3)) + np.exp(3 * (x + 0.5))  # falls fastest at lr 1e-3, then rises
    picks = suggest_lr(lrs, loss)
    assert picks['steepest_lr'] == pytest.approx(1e-3, rel=0.3)
    assert picks['suggested_lr'] == picks['steepest_lr']
    assert picks['min_loss_lr'] == lrs[int(np.argmin(loss))]
    # too few points for a slope: one decade below the minimum
    assert suggest_lr([1e-3, 1e-2], [2.0, 1.0])['suggested_lr'] == pytest.approx(1e-3)
    with pytest.raises(LRFindError, match='no finite loss'):
        suggest_lr([1e-3, 1e-2], [math.nan, math.inf])


def test_hook_stops_the_loop_when_the_smoothed_loss_diverges():
    loop = SimpleNamespace(stop_training=False)
    lr = {'lr': [0.0]}
    runner = SimpleNamespace(train_loop=loop, optim_wrapper=SimpleNamespace(get_lr=lambda: lr),
                             logger=SimpleNamespace(info=lambda msg: None))
    hook = LRRangeTestHook(beta=0.0, diverge=4.0)  # beta 0: the smoothed loss is the loss
    for i, loss in enumerate([2.0, 1.0, 3.9, 4.1]):
        lr['lr'] = [10.0 ** (i - 5)]
        hook.before_train_iter(runner, i)
        hook.after_train_iter(runner, i, outputs={'loss': loss})
        assert loop.stop_training == (loss > 4 * 1.0)
    assert hook.lrs == [1e-5, 1e-4, 1e-3, 1e-2] and hook.stopped_early
    hook = LRRangeTestHook(beta=0.5)
    hook.before_train_iter(runner, 0)
    hook.after_train_iter(runner, 0, outputs={'loss': math.nan})
    assert hook.stopped_early


def test_tool_on_the_smoke_dataset(tmp_path, tmp_path_factory, one_torch_thread):
    data = shared_smoke_patches(tmp_path_factory)
    cfg = tiny_cfg(data, tmp_path / 'work_of_the_config')
    cfg.default_hooks.logger.interval = 1
    config = tmp_path / 'tiny.py'
    cfg.dump(str(config))
    config_hash = hashlib.sha256(config.read_bytes()).hexdigest()
    out = tmp_path / 'out' / 'lr.png'
    tool = runpy.run_path(str(REPO_ROOT / 'tools' / 'lr_find.py'))
    start, end, iters = 1e-5, 1.0, 6
    result = tool['main']([str(config), '--start', str(start), '--end', str(end), '--iters', str(iters),
                           '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    curve = json.loads((tmp_path / 'out' / 'lr.json').read_text())
    assert curve['suggested_lr'] == result.suggested_lr and start <= result.suggested_lr <= end
    # exponential schedule: the first iteration at start, a constant ratio (end/start)^(1/(iters-1)) after
    assert 2 <= len(result.lrs) <= iters and result.lrs[0] == pytest.approx(start)
    ratios = np.array(result.lrs[1:]) / np.array(result.lrs[:-1])
    assert ratios == pytest.approx((end / start) ** (1 / (iters - 1)), rel=1e-6)
    assert len(result.losses) == len(result.lrs) and math.isfinite(result.losses[0])
    # the config file and the config's work dir are untouched (no checkpoint, no log there)
    assert hashlib.sha256(config.read_bytes()).hexdigest() == config_hash
    assert not (tmp_path / 'work_of_the_config').exists()
    with pytest.raises(LRFindError, match='start < end'):
        tool['main']([str(config), '--start', '1', '--end', '1e-3', '--out', str(out)])
