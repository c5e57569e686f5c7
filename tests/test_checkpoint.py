"""Checkpoints under torch >= 2.6: mmengine's own files load with weights_only=True; anything else is refused."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import load_checkpoint

import mmdet_custom.register  # noqa: F401  (installs the loader)
from mmdet_custom.checkpoint import UnsafeCheckpointError, load_checkpoint_file
from mmdet_custom.utils.errors import UserError

MARKER = 'pwned.txt'


class _Payload:
    """An object whose unpickling would run code: it writes a marker file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_mmengine_checkpoint_types_load(tmp_path):
    hub = HistoryBuffer()
    hub.update(np.float64(0.5))
    ckpt = {'meta': {'message_hub': {'log_scalars': {'loss': hub}, 'runtime_info': {'best': np.float32(0.25),
                                                                                      'arr': np.arange(3)}}},
            'state_dict': {'w': torch.ones(2)}}
    path = tmp_path / 'ok.pth'
    torch.save(ckpt, path)
    loaded = load_checkpoint_file(str(path))
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert loaded['meta']['message_hub']['log_scalars']['loss'].current() == 0.5
    assert loaded['meta']['message_hub']['runtime_info']['arr'].tolist() == [0, 1, 2]


def test_foreign_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / MARKER
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match='evil.pth') as err:
        load_checkpoint_file(str(path))
    # the message names what was refused and does not relay torch's advice to turn the protection off
    assert 'the pickled global io.open' in str(err.value)  # _Payload reduces to open(path, 'w')
    assert 'weights_only' not in str(err.value)
    # the same refusal through mmengine's public API (load_from / --resume / tools/test.py use it)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(torch.nn.Linear(1, 1), str(path))
    assert not marker.exists(), 'the payload ran: the checkpoint was unpickled without the allow-list'
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)
    assert issubclass(UnsafeCheckpointError, UserError)  # tools print one line, exit 2


def test_empty_history_buffer_loads(tmp_path):
    # an empty numpy array pickles (protocol 2) its data as bytes(): mmengine saves those for scalars not yet logged
    ckpt = {'meta': {'message_hub': {'log_scalars': {'val/loss': HistoryBuffer()}}}, 'state_dict': {}}
    path = tmp_path / 'empty_hub.pth'
    torch.save(ckpt, path)
    loaded = load_checkpoint_file(str(path))['meta']['message_hub']['log_scalars']['val/loss']
    assert isinstance(loaded, HistoryBuffer) and len(loaded.data[0]) == 0


class _BytesPayload:
    def __reduce__(self):
        return (bytes, (10**6, ))


def test_bytes_is_allowed_only_empty(tmp_path):
    path = tmp_path / 'bytes.pth'
    torch.save({'x': _BytesPayload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'bytes\.pth'):
        load_checkpoint_file(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.pth'):
        load_checkpoint_file(str(tmp_path / 'nothere.pth'))


class _GetattrPayload:
    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return (getattr, (self.obj, self.name))


@pytest.mark.parametrize('obj,name', [(HistoryBuffer, '__init__'), (np.ndarray, 'tofile'), (HistoryBuffer, 'update')])
def test_getattr_is_limited_to_history_buffer_statistics(tmp_path, obj, name):
    """Only getattr(HistoryBuffer, <statistics method>) may appear; mmengine pickles those, nothing else."""
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrPayload(obj, name)}, path)
    if name == 'update':  # a public, callable method of HistoryBuffer: allowed, resolves to the function itself
        assert load_checkpoint_file(str(path))['x'] is HistoryBuffer.update
    else:
        with pytest.raises(UnsafeCheckpointError, match='getattr.pth'):
            load_checkpoint_file(str(path))


# ----------------------------------------------------------------------------------------------------------------
# Foreign checkpoints: every load of weights (build_model: infer_scene, gradcam, visualize_predictions, score_hist,
# the benchmarks; tools/test.py; --resume) refuses weights that do not fit, before anything runs
# ----------------------------------------------------------------------------------------------------------------
def test_foreign_checkpoints_refused_by_every_load(tmp_path):
    from mmdet_custom.checkpoint import (
        CheckpointMismatchError,
        CorruptCheckpointError,
        ResumeError,
        check_resume_checkpoint,
    )
    from mmdet_custom.models.builder import build_model
    from tests.helpers import SMOKE_CONFIG
    config = str(SMOKE_CONFIG)
    model = build_model(config)
    other_classes = build_model(config, cfg_options={'model.roi_head.bbox_head.num_classes': 3,
                                                     'model.roi_head.mask_head.num_classes': 3})
    other_neck = build_model(config, cfg_options={'model.neck.out_channels': 64})
    for name, other in (('classes', other_classes), ('neck', other_neck)):
        torch.save(dict(state_dict=other.state_dict(), meta=dict(epoch=0, iter=2), message_hub={}),
                   tmp_path / f'{name}.pth')
    with pytest.raises(CheckpointMismatchError, match=r'classes\.pth.*roi_head\.bbox_head\.fc_cls\.weight '
                                                      r'\(checkpoint \[4, 1024\], model \[16, 1024\]\)'):
        build_model(config, str(tmp_path / 'classes.pth'))
    with pytest.raises(CheckpointMismatchError, match=r'neck\.pth.*neck\.'):
        build_model(config, str(tmp_path / 'neck.pth'))
    with pytest.warns(UserWarning, match='does not fit'):  # knowingly, as tools/test.py --strict false
        build_model(config, str(tmp_path / 'classes.pth'), strict=False)
    # --resume: a weights-only file (mmengine: KeyError 'epoch') and another config's checkpoint (SGD.step dies)
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'weights.pth')
    with pytest.raises(ResumeError, match=r'weights\.pth is not a training checkpoint \(no meta\.epoch, meta\.iter'):
        check_resume_checkpoint(model, str(tmp_path / 'weights.pth'))
    with pytest.raises(CheckpointMismatchError, match=r'--resume: checkpoint .*neck\.pth does not fit'):
        check_resume_checkpoint(model, str(tmp_path / 'neck.pth'))
    # a truncated file: one error naming it, wherever it is loaded
    data = (tmp_path / 'weights.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r'cut\.pth \(\d+ bytes\): it is truncated or corrupt'):
        build_model(config, str(tmp_path / 'cut.pth'))
