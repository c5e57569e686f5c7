#!/usr/bin/env bash
# One-command, idempotent install of the mmdet_custom stack into a virtualenv.
#
#   scripts/install.sh                     # creates/updates $VENV (default: .venv in the clone)
#   MMCV_WITH_CUDA=1 scripts/install.sh    # CUDA ops too, also without a visible GPU (then name TORCH_CUDA_ARCH_LIST)
#   MMDET_CUSTOM_INSTALL_PLAN=1 scripts/install.sh   # print what would be built and where it is cached, then stop
#
# mmcv 2.1.0 has no wheel for torch 2.14, so it is built once per machine from the PyPI sdist with its C++ ops
# (MMCV_WITH_OPS=1) and the wheel is cached outside the clone ($MMDET_CUSTOM_CACHE, default ~/.cache/mmdet_custom).
#
# CPU or CUDA ops, decided before anything is downloaded:
#   MMCV_WITH_CUDA=1 builds the CUDA kernels too, 0 only the CPU ones; unset: CUDA when a GPU is visible (nvidia-smi
#   lists one, or the virtualenv's torch sees one). A CUDA build needs nvcc ($CUDA_HOME/bin/nvcc; CUDA_HOME defaults
#   to /usr/local/cuda, else the toolkit of the nvcc on the PATH) of torch's CUDA major version, torch's
#   site-packages/nvidia/cu*/include on CPATH (the toolkit may lack cusparse.h) and the GPU architectures:
#   TORCH_CUDA_ARCH_LIST, else the local GPUs' compute capability. Time: the CPU build about 11 min on 2 cores; the
#   CUDA build about 25 min per architecture on 2 cores (measured per file here), roughly 4-8 min on 16 (estimate).
# Wheel cache key: mmcv-<v>_torch-<v>_py<XY> for the CPU build (unchanged, so existing caches stay valid);
#   ..._cu<CUDA version>_sm<archs> for a CUDA build (e.g. mmcv-2.1.0_torch-2.14.1_py311_cu130_sm90).
# The check at the end runs nms, RoIAlign and DCNv2 on the CPU and, when a GPU is visible, on CUDA; it fails loudly
# when the wheel has no CUDA kernels or torch cannot use the GPU (e.g. a driver too old), naming the fix.
# See ../shared/docs/FACTS.md for why each step exists.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
VENV="${VENV:-$here/.venv}"
PYTHON="${PYTHON:-python3}"
CACHE="${MMDET_CUSTOM_CACHE:-$HOME/.cache/mmdet_custom}"
MMCV_VERSION=2.1.0
TORCH_VERSION=$(sed -n 's/^torch==//p' requirements/torch.txt)
log() { printf '[install] %s\n' "$*"; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 2; }

# ---- CPU or CUDA ops (no download, no build before this is settled) ------------------------------------------------
gpus_hidden() { [ "${CUDA_VISIBLE_DEVICES+set}" = set ] && case "$CUDA_VISIBLE_DEVICES" in ''|-1) true ;; *) false ;; esac; }
gpu_visible() {
  gpus_hidden && return 1
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then return 0; fi
  # no nvidia-smi: ask the virtualenv's torch, only where a GPU device node exists (seconds saved on CPU machines)
  compgen -G '/dev/nvidia[0-9]*' >/dev/null && [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}
case "${MMCV_WITH_CUDA:-}" in
  1) with_cuda=1; why='MMCV_WITH_CUDA=1' ;;
  0) with_cuda=0; why='MMCV_WITH_CUDA=0' ;;
  '') if gpu_visible; then with_cuda=1; why='a GPU is visible'; else with_cuda=0; why='no GPU visible'; fi ;;
  *) die "MMCV_WITH_CUDA must be 1 (build mmcv's CUDA ops), 0 (CPU ops only) or unset (CUDA ops when a GPU is" \
         "visible), got '$MMCV_WITH_CUDA'" ;;
esac

pybin="$PYTHON"
[ -x "$VENV/bin/python" ] && pybin="$VENV/bin/python"  # the virtualenv is made from $PYTHON
pyver=$("$pybin" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
wheel_key="mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_${pyver}"
if [ "$with_cuda" = 1 ]; then
  if [ -z "${CUDA_HOME:-}" ]; then
    CUDA_HOME=/usr/local/cuda
    # elsewhere, the toolkit of the nvcc on the PATH (not a wrapper script: its folder must hold the CUDA headers)
    if [ ! -x "$CUDA_HOME/bin/nvcc" ] && command -v nvcc >/dev/null 2>&1; then
      toolkit=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
      [ -f "$toolkit/include/cuda_runtime.h" ] && CUDA_HOME=$toolkit
    fi
  fi
  nvcc="$CUDA_HOME/bin/nvcc"
  [ -x "$nvcc" ] || die "$why, but there is no nvcc at $nvcc (CUDA_HOME=$CUDA_HOME): install the CUDA toolkit of" \
    "torch's CUDA version (torch $TORCH_VERSION from PyPI: CUDA 13.0) and set CUDA_HOME to its folder, or build" \
    "the CPU ops only with MMCV_WITH_CUDA=0"
  cuda_version=$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n1)
  [ -n "$cuda_version" ] || die "could not read the CUDA version from '$nvcc --version' (CUDA_HOME=$CUDA_HOME)"
  arch_list="${TORCH_CUDA_ARCH_LIST:-}"
  arch_from='TORCH_CUDA_ARCH_LIST'
  if [ -z "$arch_list" ] && ! gpus_hidden && command -v nvidia-smi >/dev/null 2>&1; then
    arch_list=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' ' | sort -u |
                paste -sd';' || true)
    arch_from='the local GPU (nvidia-smi)'
  fi
  if [ -z "$arch_list" ] && ! gpus_hidden && [ -x "$VENV/bin/python" ]; then
    arch_list=$("$VENV/bin/python" -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i)
                for i in range(torch.cuda.device_count())})))' 2>/dev/null || true)
    arch_from='the local GPU (torch.cuda.get_device_capability)'
  fi
  [ -n "$arch_list" ] || die "$why, but no GPU to read the architecture from: set TORCH_CUDA_ARCH_LIST (e.g. '9.0'" \
    "for H100/H200, '8.0' for A100, '8.9' for L4/L40, '8.0;9.0' for both)"
  arch_list=$(printf '%s' "$arch_list" | tr ' ,' ';;' | sed 's/;;*/;/g; s/^;//; s/;$//')
  printf '%s' "$arch_list" | grep -Eq '^[0-9]+\.[0-9]+a?(\+PTX)?(;[0-9]+\.[0-9]+a?(\+PTX)?)*$' ||
    die "TORCH_CUDA_ARCH_LIST='$arch_list' is not a list of compute capabilities such as '9.0' or '8.0;9.0+PTX'"
  arch_tag=$(printf '%s' "$arch_list" | tr ';' '\n' | sed 's/\.//; s/+PTX/ptx/' | sort -u | paste -sd'-')
  wheel_key="${wheel_key}_cu${cuda_version//./}_sm${arch_tag}"
fi
wheel_dir="$CACHE/wheels/$wheel_key"
if [ "$with_cuda" = 1 ]; then
  log "mmcv ops: CPU + CUDA ($why): nvcc $cuda_version at $CUDA_HOME, architectures $arch_list (from $arch_from)"
else
  log "mmcv ops: CPU only ($why; MMCV_WITH_CUDA=1 builds the CUDA ops too)"
fi
log "mmcv wheel cache: $wheel_dir"
[ "${MMDET_CUSTOM_INSTALL_PLAN:-0}" = 1 ] && exit 0

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }

# The stamp holds a hash of every requirements file, this script and the mmcv build (CPU or CUDA, architectures):
# a warm machine skips straight to the check; a machine that switches to the CUDA build reinstalls mmcv.
stamp_key=$( (cat requirements/*.txt setup.py scripts/install.sh; echo "$wheel_key") | sha256sum | cut -c1-16)
stamp="$VENV/.mmdet_custom_installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_key" ]; then
  log "requirements unchanged since last install (stamp $stamp_key): skipping pip"
else
  pip install 'setuptools<81' wheel ninja
  log "installing torch $TORCH_VERSION"
  pip install -r requirements/torch.txt

  wheel=$(ls "$wheel_dir"/mmcv-${MMCV_VERSION}-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    build_env=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
    if [ "$with_cuda" = 1 ]; then
      torch_cuda=$("$py" -c 'import torch; print(torch.version.cuda or "")')
      [ "${torch_cuda%%.*}" = "${cuda_version%%.*}" ] || die "nvcc at $nvcc is CUDA $cuda_version but torch" \
        "$TORCH_VERSION is built for CUDA ${torch_cuda:-none}: torch's extension builder refuses another major" \
        "version; point CUDA_HOME at a CUDA $torch_cuda toolkit"
      # nvcc's toolkit may lack cusparse.h (torch's headers include it); torch's nvidia-* wheels ship it
      nvidia_include=$("$py" -c 'import glob, importlib.util, os
spec = importlib.util.find_spec("nvidia")
print(":".join(p for d in (spec.submodule_search_locations if spec else []) for p in sorted(glob.glob(os.path.join(d, "cu*", "include")))))')
      build_env+=(FORCE_CUDA=1 CUDA_HOME="$CUDA_HOME" TORCH_CUDA_ARCH_LIST="$arch_list" PATH="$CUDA_HOME/bin:$PATH"
                  CPATH="${nvidia_include}${CPATH:+:$CPATH}")
      n_arch=$(printf '%s' "$arch_list" | awk -F';' '{print NF}')
      log "no cached mmcv wheel in $wheel_dir: building mmcv $MMCV_VERSION with CPU and CUDA ops for $arch_list" \
          "on $(nproc) cores (about $((25 * n_arch)) min on 2 cores; roughly 4-8 min per architecture on 16)"
    else
      # a GPU hidden from the build keeps mmcv's setup.py from compiling CUDA kernels on its own
      build_env+=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)
      log "no cached mmcv wheel in $wheel_dir: building mmcv $MMCV_VERSION with CPU ops (about 11 min on 2 cores)"
    fi
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    pip download --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers refuse anything below C++20; mmcv 2.1.0's setup.py hard-codes c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    grep -q 'c++20' "$src/setup.py" || { echo "[install] could not raise mmcv's C++ standard" >&2; exit 1; }
    started=$SECONDS
    (cd "$src" && env "${build_env[@]}" "$py" -m pip wheel --no-build-isolation --no-deps -q . -w "$build/dist")
    log "built mmcv in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"
    mkdir -p "$wheel_dir"
    built=$(ls "$build"/dist/mmcv-*.whl)
    # copy then rename: a half-copied wheel never appears under its final name
    cp "$built" "$wheel_dir/.partial.whl" && mv "$wheel_dir/.partial.whl" "$wheel_dir/$(basename "$built")"
    wheel="$wheel_dir/$(basename "$built")"
  fi
  log "installing cached $wheel"
  # the CPU and CUDA wheels share a file name and version: only a forced install swaps one for the other
  pip install --no-deps --force-reinstall "$wheel"
  log "installing the OpenMMLab stack and tools"
  pip install -r requirements/runtime.txt -r requirements/tests.txt
  pip install --no-deps --no-build-isolation -e .
  echo "$stamp_key" > "$stamp"
fi

log "checking mmcv ops"
MMCV_WITH_CUDA_BUILD="$with_cuda" MMCV_WHEEL_DIR="$wheel_dir" "$py" - <<'PY' || exit 1
import os
import shutil
import subprocess
import sys

import torch


def fail(message):
    print(f'[install] ERROR: {message}', file=sys.stderr)
    sys.exit(1)


try:
    import mmcv
    import mmdet
    import mmengine

    import mmdet_custom.register  # noqa: F401  (the registration every config runs)
    from mmdet_custom.utils.device import OpsCheckError, check_mmcv_ops, cuda_problem, mmcv_has_cuda_kernels
except ImportError as e:
    fail(f'{e}: mmcv.ops (nms, RoIAlign) are missing or broken: mmcv was built without its compiled ops. Delete the '
         f'cached wheel under $MMDET_CUSTOM_CACHE/wheels and run \'make install\' again.')
wheel_dir = os.environ['MMCV_WHEEL_DIR']
hidden = os.environ.get('CUDA_VISIBLE_DEVICES', 'unset').strip() in ('', '-1')
listed = not hidden and shutil.which('nvidia-smi') is not None and 'GPU ' in subprocess.run(
    ['nvidia-smi', '-L'], capture_output=True, text=True).stdout
checked = ['cpu']
try:
    check_mmcv_ops('cpu')
    if os.environ['MMCV_WITH_CUDA_BUILD'] == '1' and not mmcv_has_cuda_kernels():
        fail(f'mmcv was to be built with CUDA ops but the installed mmcv._ext has no CUDA kernels: delete {wheel_dir} '
             f'and run \'MMCV_WITH_CUDA=1 make install\' again')
    if torch.cuda.is_available() or listed:
        problem = cuda_problem()
        if problem:
            fail(f'nvidia-smi lists a GPU but torch cannot use it: {problem}')
        check_mmcv_ops('cuda')
        checked.append(f'cuda ({torch.cuda.get_device_name(0)})')
except OpsCheckError as e:
    fail(f'{e} (cached wheel folder: {wheel_dir})')
print(f'[install] ok: torch {torch.__version__}, mmcv {mmcv.__version__} (ops: nms, RoIAlign, DCNv2 on '
      f'{" and ".join(checked)}), mmdet {mmdet.__version__}, mmengine {mmengine.__version__}')
PY
