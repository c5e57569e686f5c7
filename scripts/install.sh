#!/usr/bin/env bash
# One-command, idempotent install of the mmdet_custom stack into a virtualenv.
#
#   scripts/install.sh            # creates/updates $VENV (default: .venv in the clone)
#
# mmcv 2.1.0 has no wheel for torch 2.14, so it is built once per machine from the PyPI sdist with its C++
# ops (MMCV_WITH_OPS=1) and the wheel is cached outside the clone, keyed by mmcv/torch/Python version
# ($MMDET_CUSTOM_CACHE, default ~/.cache/mmdet_custom). See ../shared/docs/FACTS.md for why each step exists.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
VENV="${VENV:-$here/.venv}"
PYTHON="${PYTHON:-python3}"
CACHE="${MMDET_CUSTOM_CACHE:-$HOME/.cache/mmdet_custom}"
MMCV_VERSION=2.1.0
TORCH_VERSION=$(sed -n 's/^torch==//p' requirements/torch.txt)
log() { printf '[install] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }

# The stamp holds a hash of every requirements file and this script: a warm machine skips straight to the check.
stamp_key=$(cat requirements/*.txt setup.py scripts/install.sh | sha256sum | cut -c1-16)
stamp="$VENV/.mmdet_custom_installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_key" ]; then
  log "requirements unchanged since last install (stamp $stamp_key): skipping pip"
else
  pip install 'setuptools<81' wheel ninja
  log "installing torch $TORCH_VERSION"
  pip install -r requirements/torch.txt

  pyver=$("$py" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
  wheel_dir="$CACHE/wheels/mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_${pyver}"
  wheel=$(ls "$wheel_dir"/mmcv-${MMCV_VERSION}-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    log "no cached mmcv wheel in $wheel_dir: building mmcv $MMCV_VERSION with ops (about 11 min on 2 cores)"
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    pip download --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers refuse anything below C++20; mmcv 2.1.0's setup.py hard-codes c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    grep -q 'c++20' "$src/setup.py" || { echo "[install] could not raise mmcv's C++ standard" >&2; exit 1; }
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
       "$py" -m pip wheel --no-build-isolation --no-deps -q . -w "$build/dist")
    mkdir -p "$wheel_dir"
    built=$(ls "$build"/dist/mmcv-*.whl)
    # copy then rename: a half-copied wheel never appears under its final name
    cp "$built" "$wheel_dir/.partial.whl" && mv "$wheel_dir/.partial.whl" "$wheel_dir/$(basename "$built")"
    wheel="$wheel_dir/$(basename "$built")"
  fi
  log "installing cached $wheel"
  pip install --no-deps "$wheel"
  log "installing the OpenMMLab stack and tools"
  pip install -r requirements/runtime.txt -r requirements/tests.txt
  pip install --no-deps --no-build-isolation -e .
  echo "$stamp_key" > "$stamp"
fi

log "checking mmcv ops"
"$py" - <<'PY' || { echo "[install] ERROR: mmcv.ops (nms, RoIAlign) are missing or broken: mmcv was built without its compiled ops. Delete the cached wheel under \$MMDET_CUSTOM_CACHE/wheels and run 'make install' again." >&2; exit 1; }
import torch
from mmcv.ops import RoIAlign, nms
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
assert keep.tolist() == [0, 2], keep
out = RoIAlign((2, 2), 1.0, 0)(torch.ones(1, 1, 8, 8), torch.tensor([[0., 0., 0., 4., 4.]]))
assert out.shape == (1, 1, 2, 2) and torch.allclose(out, torch.ones_like(out))
import mmdet, mmengine, mmcv, mmdet_custom  # noqa: F401
print(f"[install] ok: torch {torch.__version__}, mmcv {mmcv.__version__} (ops), mmdet {mmdet.__version__}, mmengine {mmengine.__version__}")
PY
