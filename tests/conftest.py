"""Shared fixtures: real data lives in ../shared/data (never in the repo); tests that need it skip without it."""
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('MMDET_CUSTOM_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data'))


def _require(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f'real data not found at {path} (set MMDET_CUSTOM_SHARED_DATA or place ../shared/data)')
    return path


@pytest.fixture(scope='session')
def isaid_raw_dir() -> Path:
    """Official iSAID devkit layout: <split>/images/Pxxxx.png + _instance_{color,id}_RGB.png."""
    return _require('isaid_devkit')


@pytest.fixture(scope='session')
def cells_dir() -> Path:
    """DSB2018 cells: train/<id>/image.tif + class1.tif (uint16 instance labels)."""
    return _require('cells_dsb2018')


@pytest.fixture(scope='session')
def tiny_coco_dir() -> Path:
    """16 COCO train2017 images and their instances json."""
    return _require('tiny_coco')


@pytest.fixture(scope='module')
def one_torch_thread():
    """One intra-op thread for a module: where other jobs share the 2 cores, two OpenMP threads spin against them
    and cost several times the CPU of one (measured: R50 loss + backward at 128 px, 0.7 s CPU with 1 thread, 2-9 s
    with 2 under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
