"""tools/ablate.py: config family -> one table (parent, changes, AP, params, inference ms), on real iSAID patches."""
import runpy
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from mmdet_custom.apis import ablation as ab

SMOKE = REPO_ROOT / 'configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py'


def test_config_diff_entries():
    parent = dict(model=dict(backbone=dict(type='ResNet', depth=50, init_cfg=dict(type='Pretrained', checkpoint='x')),
                             neck=dict(type='FPN', num_outs=5), rpn_head=dict(ratios=[0.5, 1.0])),
                  optim_wrapper=dict(lr=0.02), _scope_='mmdet', work_dir='a')
    child = dict(model=dict(backbone=dict(type='ResNet', depth=18, init_cfg=None),
                            neck=dict(type='AttentionFPN', num_outs=5, cbam_reduction=16), rpn_head=dict(ratios=[1.0]),
                            roi_head=dict(type='StandardRoIHead', x=1)),
                 optim_wrapper=dict(lr=0.02), extra_fragment=dict(a=1), work_dir='b', _scope_='other')
    entries = ab.config_diff(child, parent)
    assert entries == [
        'model.backbone.depth=18',
        'model.backbone.init_cfg=None',  # one entry for the dict it replaces
        'model.neck: FPN -> AttentionFPN',  # its other keys are covered by the type change
        '+model.roi_head',
        'model.rpn_head.ratios=(1.0,)',
        '+extra_fragment',  # top-level helper names last
    ]
    assert ab.shorten_diff(entries, max_items=3) == \
        'backbone.depth=18; backbone.init_cfg=None; neck: FPN -> AttentionFPN; +3 more'
    assert ab.shorten_diff([]) == '(same as parent)'
    assert ab.config_diff(parent, parent) == []


def test_expand_configs_and_parent(tmp_path):
    files = ab.expand_configs([str(REPO_ROOT / 'configs/cbam/mask-rcnn_effb0*_1x_isaid.py'), str(SMOKE)])
    assert [Path(f).name for f in files] == ['mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py',
                                             'mask-rcnn_effb0-cbam_attn-fpn_stock-heads_anchors_1x_isaid.py',
                                             'mask-rcnn_effb0-cbam_fpn_anchors_1x_isaid.py',
                                             'mask-rcnn_effb0_attn-fpn_anchors_1x_isaid.py', SMOKE.name]
    full = str(REPO_ROOT / 'configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py')
    assert ab.parent_config(files[1]) == full and ab.parent_config(files[2]) == full
    assert ab.parent_config(str(REPO_ROOT / 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py')) == \
        'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
    with pytest.raises(ab.AblationInputError, match='nothing_here'):
        ab.expand_configs([str(tmp_path / 'nothing_here*.py')])


def test_rerun_keeps_finished_rows_and_runs_the_rest(tmp_path, monkeypatch):
    # run_one replaced: the resume rule is about which configs run, not about training them
    configs = []
    for name, value in (('a', 1), ('b', 2), ('c', 3)):
        (tmp_path / f'{name}.py').write_text(f'x = {value}\n')
        configs.append(str(tmp_path / f'{name}.py'))
    ran = []

    def fake_run_one(config, work_dir, iters, **kwargs):
        ran.append(Path(config).stem)
        error = 'RuntimeError: killed' if Path(config).stem == 'b' and len(ran) < 4 else ''
        return ab.AblationRow(config=config, parent='-', changes='', protocol='coco', iters=iters, segm_AP=0.25,
                              error=error)

    monkeypatch.setattr(ab, 'run_one', fake_run_one)
    work = str(tmp_path / 'work')
    rows, _, csv = ab.run_ablation(configs, work, iters=5, log=lambda m: None)
    assert ran == ['a', 'b', 'c'] and [r.error for r in rows] == ['', 'RuntimeError: killed', '']
    rows, _, _ = ab.run_ablation(configs, work, iters=5, log=lambda m: None)  # the failed row only
    assert ran[3:] == ['b'] and [r.segm_AP for r in rows] == [0.25] * 3 and not any(r.error for r in rows)
    assert [r.config for r in ab.read_csv(csv)] == configs
    (tmp_path / 'c.py').write_text('x = 30\n')  # an edited config runs again, and so does everything at 6 iters
    ab._load_cached.cache_clear()  # a rerun is a new process; here the parse cache would keep the old text
    ab.run_ablation(configs, work, iters=5, log=lambda m: None)
    assert ran[4:] == ['c']
    ab.run_ablation(configs, work, iters=6, log=lambda m: None)
    assert ran[5:] == ['a', 'b', 'c']


@pytest.fixture(scope='module')
def isaid_patches(isaid_converted):
    """train + val at the devkit's default windows (conftest's session conversion; read-only)."""
    return isaid_converted.root


def test_ablate_cli_two_iterations(isaid_patches, tmp_path, capsys, one_torch_thread):
    """A child of the R18 smoke config (one anchor ratio) and a broken config, 2 iterations on the shared iSAID
    patches: the table, the CSV read back, the error row and the exit status."""
    from mmdet_custom.analysis.model_stats import build_detector
    child = tmp_path / 'one-ratio.py'
    child.write_text(f"_base_ = '{SMOKE}'\nmodel = dict(rpn_head=dict(anchor_generator=dict(ratios=[1.0])))\n")
    broken = tmp_path / 'broken.py'
    broken.write_text(f"_base_ = '{SMOKE}'\nmodel = dict(neck=dict(type='NoSuchNeck'))\n")
    out = tmp_path / 'table' / 'ablation.md'
    tool = runpy.run_path(str(REPO_ROOT / 'tools' / 'ablate.py'))
    with pytest.raises(SystemExit, match='1 config.s. failed: .*broken.py'):
        tool['main']([str(tmp_path / '*.py'), '--iters', '2', '--data', str(isaid_patches),
                      '--img-size', '96', '--workers', '0', '--batch-size', '1', '--random-init',
                      '--infer-iters', '1', '--work-dir', str(tmp_path / 'work'), '--out', str(out),
                      '--cfg-options', 'model.train_cfg.rpn_proposal.max_per_img=50',
                      'model.train_cfg.rcnn.sampler.num=32', 'model.test_cfg.rpn.max_per_img=50',
                      'model.test_cfg.rcnn.max_per_img=20',
                      'anchor_check=warn'])  # 800 px patches at 96 px: below every anchor, accepted here
    assert '| config | parent | changes vs parent | segm AP |' in capsys.readouterr().out
    md = out.read_text()
    assert '| config | parent | changes vs parent | segm AP | segm AP50 | segm APs | box AP50 | params (M) | ' \
           'infer ms/img |' in md
    assert 'protocol isaid' in md and '2 iterations per config' in md and 'failed: ' in md
    rows = ab.read_csv(str(out.with_suffix('.csv')))
    assert [Path(r.config).name for r in rows] == ['broken.py', 'one-ratio.py']  # the glob, sorted
    bad, one = rows
    assert one.parent == str(SMOKE) and one.changes == 'rpn_head.anchor_generator.ratios=(1.0,)'
    assert one.changed_keys == ['model.rpn_head.anchor_generator.ratios=(1.0,)']
    assert not one.error and one.iters == 2 and one.protocol == 'isaid'
    for value in (one.segm_AP, one.segm_AP50, one.segm_APs, one.bbox_AP50):
        assert value is None or 0.0 <= value <= 1.0
    assert one.segm_AP is not None and one.infer_ms > 0
    # 3 anchors -> 1 per location on the 128-channel RPN: rpn_cls loses 2 x 129 and rpn_reg 8 x 129 parameters
    smoke_params = sum(p.numel() for p in build_detector(str(SMOKE)).parameters())
    assert smoke_params - one.params_m * 1e6 == pytest.approx(10 * 129, abs=1e-3)
    assert bad.error.startswith('KeyError') and 'NoSuchNeck' in bad.error and bad.segm_AP is None
    assert bad.parent == str(SMOKE) and bad.changes == 'neck: FPN -> NoSuchNeck'
