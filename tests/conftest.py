"""Shared fixtures: real data lives in ../shared/data (never in the repo); tests that need it skip without it.

Expensive steps shared by several modules run once per test process (``make test`` runs 2 pytest-xdist processes,
each test file whole on one) into ``tmp_path_factory``: the iSAID conversions of
the shared samples (:func:`isaid_converted`, :func:`isaid_exact`, :func:`isaid_256`), the DSB2018 cells conversion
(:func:`cells_converted`) and the generated smoke dataset (:func:`smoke_raw`). Their outputs are read-only for tests:
a test that writes into one copies it first (``shutil.copytree``).

Markers (registered in pytest.ini, ``--strict-markers``): ``needs_data`` is put on every test that uses one of the
data fixtures below (directly or through another fixture); ``slow`` marks tests that take over ~10 s on an idle CPU.
``-m 'not slow'`` gives the quick loop, ``-m 'not needs_data'`` what runs without ../shared/data. ``cuda`` marks
the tests that need a GPU (tests/test_cuda.py): without a usable one they are skipped, the reason saying why.
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from mmdet_custom.utils.paths import shared_data_dir

SHARED_DATA = Path(shared_data_dir())  # $MMDET_CUSTOM_SHARED_DATA, else ../shared/data beside the checkout
# fixtures that read ../shared/data: a test depending on one of them (at any depth) gets the needs_data marker
DATA_FIXTURES = frozenset({'isaid_raw_dir', 'isaid_reference_dir', 'cells_dir', 'tiny_coco_dir'})


def _require(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f'real data not found at {path} (set MMDET_CUSTOM_SHARED_DATA or place ../shared/data)')
    return path


def pytest_collection_modifyitems(config, items):
    no_cuda = None
    for item in items:
        if DATA_FIXTURES.intersection(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.needs_data)
        if item.get_closest_marker('cuda') is not None:
            if no_cuda is None:  # asked once, only when a cuda test is collected
                from mmdet_custom.utils.device import cuda_problem
                no_cuda = cuda_problem() or ''
            if no_cuda:
                item.add_marker(pytest.mark.skip(reason=f'cuda: {no_cuda}'))


class Converted(NamedTuple):
    """A conversion done once per session: its output folder (read-only for tests) and the converter's summary."""
    root: Path
    summary: dict


# ----------------------------------------------------------------------------------------------------------------
# Raw data in ../shared/data
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='session')
def isaid_raw_dir() -> Path:
    """Official iSAID devkit layout: <split>/images/Pxxxx.png + _instance_{color,id}_RGB.png.

    Samples: train P0005 (W x H = 884 x 977), val P0003 (1147 x 1023, holds a storage tank), test P0006
    (1054 x 1529, image only)."""
    return _require('isaid_devkit')


@pytest.fixture(scope='session')
def isaid_reference_dir() -> Path:
    """The devkit's own output on the shared samples: ``instancesonly_filtered_{train,val}.json`` (written by
    CAPTAIN-WHU/iSAID_Devkit ``preprocess/split.py`` then ``preprocess/preprocess.py``)."""
    return _require('isaid_devkit_reference')


@pytest.fixture(scope='session')
def cells_dir() -> Path:
    """DSB2018 cells: train/<id>/image.tif + class1.tif (uint16 instance labels)."""
    return _require('cells_dsb2018')


@pytest.fixture(scope='session')
def tiny_coco_dir() -> Path:
    """16 COCO train2017 images and their instances json."""
    return _require('tiny_coco')


# ----------------------------------------------------------------------------------------------------------------
# Conversions shared by several modules (once per session, read-only)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='session')
def isaid_converted(isaid_raw_dir, tmp_path_factory) -> Converted:
    """The default (devkit: 800 px windows, 200 px overlap, polygon masks) conversion of every split found."""
    from mmdet_custom.converters.isaid import convert_isaid
    out = tmp_path_factory.mktemp('isaid_default')
    return Converted(out, convert_isaid(isaid_raw_dir, out, show_progress=False))


@pytest.fixture(scope='session')
def isaid_exact(isaid_raw_dir, tmp_path_factory) -> Converted:
    """train + val at the default windows with exact masks and no area filter: every instance visible in a window,
    rasterising back to its pixels."""
    from mmdet_custom.converters.isaid import convert_isaid
    out = tmp_path_factory.mktemp('isaid_exact')
    return Converted(out, convert_isaid(isaid_raw_dir, out, splits=('train', 'val'), masks='exact', area_threshold=0,
                                        show_progress=False))


@pytest.fixture(scope='session')
def isaid_256(isaid_raw_dir, tmp_path_factory) -> Converted:
    """train + val cut into 256 px patches without overlap (a patch holds a few objects; an iteration on it takes
    seconds on a CPU)."""
    from mmdet_custom.converters.isaid import convert_isaid
    out = tmp_path_factory.mktemp('isaid_256')
    return Converted(out, convert_isaid(isaid_raw_dir, out, splits=('train', 'val'), patch_size=256, overlap=0,
                                        show_progress=False))


@pytest.fixture(scope='session')
def cells_converted(cells_dir, tmp_path_factory) -> Converted:
    """The six DSB2018 images converted with ``val_fraction=0.2, seed=0``: 5 train, 1 val, 171 instances."""
    from mmdet_custom.converters.cells import convert_cells
    out = tmp_path_factory.mktemp('cells')
    return Converted(out, convert_cells(cells_dir, out, val_fraction=0.2, seed=0))


SMOKE_SPLITS = {'train': 2, 'val': 1}


@pytest.fixture(scope='session')
def smoke_raw(tmp_path_factory) -> Converted:
    """The generated smoke dataset (``mmdet_custom/converters/smoke.py``) in the iSAID raw layout: 2 train and 1 val
    images of 192 px, seed 3; the summary counts the instances per split and class."""
    from mmdet_custom.converters.smoke import generate_smoke_dataset
    out = tmp_path_factory.mktemp('smoke_raw')
    return Converted(out, generate_smoke_dataset(str(out), SMOKE_SPLITS, size=192, seed=3))


class Trained(NamedTuple):
    """A tiny model trained once per session (read-only for tests: copy the work dir before writing into it)."""
    config: Path       # the resolved config it trained with, dumped (for the command lines)
    work_dir: Path     # logs (vis_data/scalars.json holds the losses and the validation's coco/* metrics)
    checkpoint: Path   # work_dir / 'iter_2.pth' (weights + dataset_meta, no optimizer state)


@pytest.fixture(scope='session')
def tiny_trained(isaid_256, tmp_path_factory) -> Trained:
    """The smoke model (ResNet-18, 128-channel FPN, random init; tests/helpers.py ``tiny_isaid_cfg``: 128 px,
    batch 1, 100 proposals) trained 2 iterations on the ``isaid_256`` patches through ``mmdet_custom.apis.train``,
    validated once at its end on 1 val patch, one checkpoint: for the tests that need "a trained checkpoint and its
    work dir", not a training of their own."""
    from helpers import tiny_isaid_cfg

    from mmdet_custom.apis import train
    root = tmp_path_factory.mktemp('tiny_trained')
    cfg = tiny_isaid_cfg(isaid_256.root, root / 'work')
    cfg.val_dataloader.dataset.indices = 1
    cfg.dump(str(root / 'tiny.py'))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = train(cfg)
    finally:
        torch.set_num_threads(threads)
    assert runner.iter == 2
    return Trained(root / 'tiny.py', root / 'work', root / 'work' / 'iter_2.pth')


@pytest.fixture(autouse=True)
def _restore_environ():
    """Each test gets the session's environment back: tools run in-process (``runpy``) set variables for their own
    process (for example a torchrun ``RANK`` or a thread count), which would leak into every later subprocess of the
    same test process (measured once: a variable a converter CLI set made later subprocesses of test_recipe and
    test_hpo fail)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope='module')
def one_torch_thread():
    """One intra-op thread for a module: where other jobs share the 2 cores, two OpenMP threads spin against them
    and cost several times the CPU of one (measured: R50 loss + backward at 128 px, 0.7 s CPU with 1 thread, 2-9 s
    with 2 under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------------
# A database server for Optuna studies shared by several workers (tests/test_hpo.py, test_anchor_search_workers.py)
# ----------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL cluster in a temp folder, serving on a free port of 127.0.0.1 only (trust auth)."""
    initdb = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'))
    if not initdb:
        pytest.skip('PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): install the Debian '
                    'package postgresql')
    # SQLAlchemy 2.1's default driver for postgresql:// URLs
    pytest.importorskip('psycopg', reason='the PostgreSQL driver psycopg 3 (pip psycopg[binary]) is not installed')
    bindir = os.path.dirname(initdb[-1])
    root = tempfile.mkdtemp(prefix='mmdet_custom_pg_')
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            user = pwd.getpwnam('postgres')
        except KeyError:
            shutil.rmtree(root)
            pytest.skip('running as root and no postgres user to run the server as')
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ['runuser', '-u', 'postgres', '--']
    data, port = os.path.join(root, 'data'), _free_port()
    try:
        subprocess.run(as_user + [f'{bindir}/initdb', '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8',
                                  '-N'], check=True, capture_output=True, timeout=120)
        subprocess.run(as_user + [f'{bindir}/pg_ctl', '-D', data, '-l', os.path.join(root, 'server.log'), '-w',
                                  '-t', '60', '-o', f'-p {port} -k {root} -c listen_addresses=127.0.0.1 -F',
                                  'start'], check=True, capture_output=True, timeout=120)
        yield f'postgresql://postgres@127.0.0.1:{port}/postgres'
    finally:
        if os.path.exists(os.path.join(data, 'postmaster.pid')):
            subprocess.run(as_user + [f'{bindir}/pg_ctl', '-D', data, '-m', 'immediate', '-w', 'stop'],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
