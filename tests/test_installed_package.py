"""The package works installed (non-editable), from outside the checkout: the wheel ships the configs as package data
(``mmdet_custom/.mim/configs``), ``config_path`` finds them there, a config of the wheel and a user config inheriting
one build with mmengine's Config and mmdet's registries in a fresh process (``custom_imports`` registers from the
installed package), and a tool runs against the installed package.

The install is ``pip install --no-deps --no-build-isolation --target`` of a copy of the sources (nothing is written
into the checkout, nothing is downloaded; torch, mmdet and the rest come from this virtualenv).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

CONFIG = 'mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py'
# a user's config in a folder of their own, inheriting a config of the wheel (mmengine 0.10.7 takes 'pkg::' scopes
# only for OpenMMLab's packages, so by path: mmdet_custom.utils.paths.config_path prints it)
USER_CONFIG = """_base_ = {base!r}
model = dict(backbone=dict(pretrained=False), roi_head=dict(mask_head=dict(num_convs=2)))
"""
PROBE = """
import json, sys
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmdet.registry import MODELS
import mmdet_custom
from mmdet_custom.utils.paths import config_dir, config_path, shared_data_dir
registered_before = 'mmdet_custom.register' in sys.modules
init_default_scope('mmdet')
built = {}
for name, path in (('shipped', config_path(sys.argv[1])), ('user', sys.argv[2])):
    model = MODELS.build(Config.fromfile(path).model)
    built[name] = [type(model).__name__, type(model.backbone).__name__, type(model.neck).__name__,
                   model.roi_head.mask_head.num_convs]
print(json.dumps(dict(package=mmdet_custom.__file__, config_dir=config_dir(), shared=shared_data_dir(),
                      registered_before=registered_before, built=built)))
"""


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """``(site, env)``: the package installed from a copy of the sources into ``site``, and an environment whose
    PYTHONPATH holds ``site`` only (not the checkout)."""
    root = tmp_path_factory.mktemp('installed')
    src, site = root / 'src', root / 'site'
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc')
    src.mkdir()
    for name in ('setup.py', 'MANIFEST.in'):
        shutil.copy(REPO_ROOT / name, src / name)
    for name in ('mmdet_custom', 'configs', 'requirements'):
        shutil.copytree(REPO_ROOT / name, src / name, symlinks=True, ignore=ignore)
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-compile',
                           '--disable-pip-version-check', '-q', '--target', str(site), str(src)],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'MMDET_CUSTOM_SHARED_DATA')}
    env['PYTHONPATH'] = str(site)
    return site, env


def test_wheel_ships_every_config_as_a_file(installed):
    site, _ = installed
    from mmdet_custom.version import __version__
    assert (site / f'mmdet_custom-{__version__}.dist-info').is_dir()  # setup.py reads the version from the package
    shipped = site / 'mmdet_custom' / '.mim' / 'configs'
    assert shipped.is_dir() and not shipped.is_symlink()  # a copy, not the checkout's link
    ours = sorted(p.relative_to(REPO_ROOT / 'configs') for p in (REPO_ROOT / 'configs').rglob('*.py'))
    assert sorted(p.relative_to(shipped) for p in shipped.rglob('*.py')) == ours


@pytest.mark.slow  # a fresh interpreter importing torch + mmdet and building two detectors: ~10-20 s
def test_configs_build_from_the_installed_package_outside_the_checkout(installed, tmp_path):
    site, env = installed
    base = site / 'mmdet_custom' / '.mim' / 'configs' / 'cbam' / 'mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py'
    (tmp_path / 'user_config.py').write_text(USER_CONFIG.format(base=str(base)))
    proc = subprocess.run([sys.executable, '-c', PROBE, CONFIG, str(tmp_path / 'user_config.py')], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out['package'].startswith(str(site)), f'imported {out["package"]}, not the installed copy'
    assert out['config_dir'] == str(site / 'mmdet_custom' / '.mim' / 'configs')
    # installed: the shared data are looked for beside the working folder (no checkout to find them from)
    assert out['shared'] == str(tmp_path.parent / 'shared' / 'data')
    # importing the package registered nothing; the configs' custom_imports did
    assert out['registered_before'] is False
    assert out['built']['shipped'][:3] == ['MaskRCNN', 'ResNet', 'FPN']
    assert out['built']['user'] == ['MaskRCNN', 'TimmCBAMBackbone', 'AttentionFPN', 2]  # our modules, our change


@pytest.mark.slow  # a fresh interpreter importing torch + mmdet: ~10 s
def test_tool_runs_against_the_installed_package(installed, tmp_path):
    """tools/analysis_tools/model_stats.py on a config of the wheel, from a folder outside the checkout."""
    site, env = installed
    config = site / 'mmdet_custom' / '.mim' / 'configs' / CONFIG
    proc = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'analysis_tools' / 'model_stats.py'),
                           str(config), '--no-flops'], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'Model statistics of {config}' in proc.stdout, proc.stdout[-2000:]
    assert '| backbone       | 11,176,512 |' in proc.stdout, proc.stdout[-2000:]  # ResNet-18's parameters
