"""The region folder's bookkeeping: the manifest of settings that change outputs, per-scene records, the merge
lock (see :mod:`.region` for the folder layout and the rules)."""
import contextlib
import hashlib
import json
import os
import os.path as osp
import socket
from typing import Iterator, List, Optional, Sequence

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import dump_json_atomic, load_json, pid_alive

from . import writers
from .reader import ValueRange

MANIFEST = 'manifest.json'
RECORD = 'scene.json'
SCENES_DIR, REGION_DIR = 'scenes', 'region'
LOCK = '.merge.lock'
#: Manifest format version (a manifest of another version is refused).
MANIFEST_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# Settings and manifest
# ----------------------------------------------------------------------------------------------------------------
def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's content, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def config_sha256(cfg) -> str:
    """SHA-256 of a config's resolved content (after ``_base_`` and ``--cfg-options``), not of its file's text."""
    text = json.dumps(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def region_settings(inferencer, model_id: Optional[dict] = None, bands: Optional[Sequence[int]] = None,
                    value_range: ValueRange = None, overlay_max_side: int = 2048, overlay_scores: bool = False,
                    geopackage: bool = True) -> dict:
    """The settings that change a region's outputs (the manifest's ``settings``).

    Args:
        inferencer (SceneInferencer): classes, window and merge settings.
        model_id (dict, optional): what identifies the model, e.g. ``config_sha256``, ``checkpoint_sha256``,
            ``speedups`` (json values).
        bands, value_range, overlay_max_side, overlay_scores, geopackage: as :func:`infer_region`.
    """
    return dict(model=dict(model_id or {}), classes=list(inferencer.classes), window=inferencer.window,
                overlap=inferencer.overlap, score_thr=inferencer.score_thr,
                max_per_window=inferencer.max_per_window, match=inferencer.match, match_thr=inferencer.match_thr,
                border_margin=inferencer.border_margin, bands=None if bands is None else list(bands),
                value_range=list(value_range) if isinstance(value_range, tuple) else value_range,
                overlay_max_side=overlay_max_side, overlay_scores=bool(overlay_scores),
                geopackage=bool(geopackage and writers.geopackage_available()))


def settings_fingerprint(settings: dict) -> str:
    """SHA-256 of the settings' canonical json (sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _differences(old, new, prefix: str = '') -> List[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f'{prefix}{key}.')
        return out
    return [] if old == new else [f'{prefix[:-1]} {old!r} -> {new!r}']


def read_manifest(out_dir: str) -> Optional[dict]:
    """The manifest of ``out_dir``; None when the folder is absent or empty.

    Raises:
        UserError: a folder that holds files but no manifest (not a region output of this tool), or a manifest of
            another version.
    """
    path = osp.join(out_dir, MANIFEST)
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise UserError(f'output folder {out_dir} exists and is not a folder')
    if not osp.isfile(path):
        if osp.isdir(out_dir) and os.listdir(out_dir):
            raise UserError(f'output folder {out_dir} holds files but no {MANIFEST}: it is not a region output of '
                            f'tools/infer_scene.py (an output of an older version has no manifest either); choose a '
                            f'new or empty --out-dir, nothing was changed')
        return None
    manifest = load_json(path, 'region manifest')
    if not isinstance(manifest, dict) or manifest.get('version') != MANIFEST_VERSION:
        raise UserError(f'{path}: field "version" is {manifest.get("version") if isinstance(manifest, dict) else None}'
                        f', this tool reads version {MANIFEST_VERSION}; choose a new --out-dir')
    return manifest


def check_manifest(out_dir: str, settings: dict) -> Optional[dict]:
    """Refuse a folder whose manifest has other settings; returns the manifest (None for a new folder).

    Raises:
        UserError: see :func:`read_manifest`; settings that differ, each named with its old and new value.
    """
    manifest = read_manifest(out_dir)
    if manifest is not None and manifest.get('fingerprint') != settings_fingerprint(settings):
        diff = _differences(manifest.get('settings') or {}, settings)
        raise UserError(f'{osp.join(out_dir, MANIFEST)} was written with other settings ({"; ".join(diff[:6])}): '
                        f'its scenes would be mixed with different ones. Rerun with the settings of the manifest, or '
                        f'write to a new --out-dir (nothing was changed)')
    return manifest


def write_manifest(out_dir: str, settings: dict, scenes: List[dict]) -> dict:
    """Create the manifest (exclusively: of two ranks starting at once one creates it, the other checks it) or
    update its scene list."""
    manifest = dict(version=MANIFEST_VERSION, tool='tools/infer_scene.py', fingerprint=settings_fingerprint(settings),
                    settings=settings, scenes=scenes)
    path = osp.join(out_dir, MANIFEST)
    os.makedirs(out_dir, exist_ok=True)
    existing = check_manifest(out_dir, settings)
    if existing is None:
        tmp = f'{path}.{os.getpid()}.tmp'
        with open(tmp, 'w') as f:
            json.dump(manifest, f, indent=1)
        try:
            os.link(tmp, path)  # fails when another rank created it first
        except FileExistsError:
            existing = check_manifest(out_dir, settings)
        finally:
            os.remove(tmp)
    if existing is not None and existing.get('scenes') != scenes:
        dump_json_atomic(manifest, path, indent=1)
    return manifest


# ----------------------------------------------------------------------------------------------------------------
# Scene records
# ----------------------------------------------------------------------------------------------------------------
def scene_dir(out_dir: str, stem: str) -> str:
    return osp.join(out_dir, SCENES_DIR, stem)


def complete_record(out_dir: str, stem: str, fingerprint: str, path: Optional[str] = None) -> Optional[dict]:
    """The record of a complete scene, or None (no record, another fingerprint, or, with ``path``, an input whose
    size or mtime changed since)."""
    record_path = osp.join(scene_dir(out_dir, stem), RECORD)
    if not osp.isfile(record_path):
        return None
    try:
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if record.get('fingerprint') != fingerprint:
        return None
    if path is not None:
        stat = os.stat(path)
        if (record.get('input_size'), record.get('input_mtime_ns')) != (stat.st_size, stat.st_mtime_ns):
            return None
    return record


@contextlib.contextmanager
def merge_lock(out_dir: str) -> Iterator[bool]:
    """Yield True while this process holds ``OUT/.merge.lock`` (created exclusively), False when another live
    process holds it. A lock of a dead process on this host is taken over; one of another host is respected."""
    path = osp.join(out_dir, LOCK)
    host = socket.gethostname()
    fd = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                with open(path) as f:
                    owner_host, owner_pid = f.read().split()
            except (OSError, ValueError):
                owner_host, owner_pid = host, '0'
            if owner_host != host or (owner_pid.isdigit() and pid_alive(int(owner_pid))):
                break
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # left by a dead process of this host
    if fd is None:
        yield False
        return
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(f'{host} {os.getpid()}\n')
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
