#!/usr/bin/env bash
# `make gpu-check`: what a lent GPU machine should prove, in order of value, inside a time budget.
#
#   scripts/gpu_check.sh          # GPU_CHECK_BUDGET=480 (seconds), GPU_CHECK_DIR=work_dirs/gpu_check
#
# Steps, each under `timeout` with at most what is left of the budget; once the budget is spent the rest are skipped.
# Expected times on one H100 with 16 cores (estimates: no GPU has run this yet):
#   1. install       `make install`: on a bare machine builds mmcv's CUDA wheel for the local GPU (about 50 CPU-minutes
#                    per architecture: roughly 4-8 min on 16 cores; the build time is printed), seconds when the wheel
#                    cache holds it (MMDET_CUSTOM_CACHE); then the check runs nms, RoIAlign and DCNv2 on CUDA
#   2. cuda-tests    pytest -m cuda tests/test_cuda.py: custom modules, assigner, AMP steps of the full model and R50
#                    at 800 px, the 1,239-object dense step, whole-scene inference, tools/test.py (about 1-2 min)
#   3. bench-models  tools/benchmarks/bench_models.py --device cuda: R50, the full model, the light variants; AMP
#                    training img/s (optim_wrapper.type=AmpOptimWrapper), latency at 100 and 1000 detections, peak
#                    CUDA memory (about 2-3 min: one process per model)
#   4. bench-dense   tools/benchmarks/bench_dense.py --device cuda at 1,239 and 3,000 objects (about 2-3 min)
#   5. bench-scene   tools/benchmarks/bench_scene.py --device cuda (needs sahi and ../shared/data; skipped without)
#   6. dist-train    2 processes through tools/dist_train.sh (torchrun, NCCL) on the smoke data, when 2 GPUs are
#                    visible (about 1 min)
# The default budget covers the install with a cached wheel and the first steps; a build from source leaves little
# for the benchmarks (raise GPU_CHECK_BUDGET, or carry the wheel cache). No network is used after `make install`
# (offline, make install needs a wheelhouse: PIP_NO_INDEX=1 PIP_FIND_LINKS=<folder>).
# Writes $GPU_CHECK_DIR/report.md and report.json (what ran, passed, failed or was skipped, seconds, GPU) and one
# log per step beside them. Exit code: 0 when every step that ran passed, 1 otherwise, 2 without a GPU.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
VENV="${VENV:-$here/.venv}"
OUT="${GPU_CHECK_DIR:-$here/work_dirs/gpu_check}"
BUDGET="${GPU_CHECK_BUDGET:-480}"
log() { printf '[gpu-check] %s\n' "$*"; }
die() { printf '[gpu-check] error: %s\n' "$*" >&2; exit 2; }

# ---- a GPU, or stop at once ----------------------------------------------------------------------------------------
if [ "${CUDA_VISIBLE_DEVICES+set}" = set ] && case "$CUDA_VISIBLE_DEVICES" in ''|-1) true ;; *) false ;; esac; then
  die "no GPU visible (CUDA_VISIBLE_DEVICES='$CUDA_VISIBLE_DEVICES' hides every GPU): gpu-check is for a machine" \
      "with an NVIDIA GPU; the CPU suite is 'make test'"
fi
command -v nvidia-smi >/dev/null 2>&1 || die "no GPU visible (nvidia-smi not found): gpu-check is for a machine with" \
  "an NVIDIA GPU and its driver; the CPU suite is 'make test'"
listed=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
[ "${listed:-0}" -gt 0 ] || die "no GPU visible (nvidia-smi lists none): gpu-check is for a machine with an NVIDIA" \
  "GPU; the CPU suite is 'make test'"
gpus=$listed
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  asked=$(printf '%s' "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c . || true)
  [ "$asked" -lt "$gpus" ] && gpus=$asked
fi
case "$BUDGET" in ''|*[!0-9]*) die "GPU_CHECK_BUDGET must be a number of seconds, got '$BUDGET'" ;; esac

mkdir -p "$OUT"
rm -f "$OUT"/report.md "$OUT"/report.json "$OUT"/steps.tsv "$OUT"/*.log "$OUT"/bench_*.md "$OUT"/bench_*.json
gpu_info=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1)
printf '%s\t%s\t%s\t%s\n' gpus "$gpus" "$gpu_info" "$BUDGET" > "$OUT/steps.tsv"
started=$SECONDS
log "$gpus GPU(s): $gpu_info; budget ${BUDGET}s; report in $OUT"

record() {  # name status seconds note
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$OUT/steps.tsv"
  log "$1: $2 (${3}s) $4"
  write_report
}

write_report() {
  python3 - "$OUT" <<'PY'
import json
import os
import sys

out = sys.argv[1]
rows = [line.rstrip('\n').split('\t') for line in open(os.path.join(out, 'steps.tsv'))]
_, gpus, gpu, budget = rows[0]
steps = [dict(step=r[0], status=r[1], seconds=int(r[2]), note=r[3],
              log=f'{r[0]}.log' if os.path.exists(os.path.join(out, f'{r[0]}.log')) else None) for r in rows[1:]]
report = dict(gpus=int(gpus), gpu=gpu, budget_s=int(budget), seconds=sum(s['seconds'] for s in steps), steps=steps,
              passed=all(s['status'] != 'failed' for s in steps))
with open(os.path.join(out, 'report.json.tmp'), 'w') as f:
    json.dump(report, f, indent=1)
os.replace(os.path.join(out, 'report.json.tmp'), os.path.join(out, 'report.json'))
lines = ['# GPU check', '', f'{gpus} GPU(s): {gpu}; budget {budget} s, used {report["seconds"]} s.', '',
         '| step | status | seconds | note | log |', '| --- | --- | ---: | --- | --- |']
lines += [f'| {s["step"]} | {s["status"]} | {s["seconds"]} | {s["note"]} | {s["log"] or ""} |' for s in steps]
for name in ('bench_models.md', 'bench_dense.md'):  # the benchmarks' own tables, when they were written
    if os.path.exists(os.path.join(out, name)):
        lines += ['', f'## {name}', '', open(os.path.join(out, name)).read().strip()]
with open(os.path.join(out, 'report.md.tmp'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
os.replace(os.path.join(out, 'report.md.tmp'), os.path.join(out, 'report.md'))
PY
}

# run_step NAME CAP_SECONDS COMMAND...: runs under timeout with min(CAP, what is left), records the outcome
run_step() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET - (SECONDS - started)))
  if [ "$left" -lt 30 ]; then
    record "$name" skipped 0 "budget spent (${BUDGET}s)"
    return 1
  fi
  local limit=$((cap < left ? cap : left)) t0=$SECONDS rc
  log "$name: $* (limit ${limit}s)"
  timeout --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  tail -n 5 "$OUT/$name.log" | sed "s/^/[gpu-check]   /"
  case $rc in
    0) record "$name" passed $((SECONDS - t0)) "" ;;
    124|137) record "$name" failed $((SECONDS - t0)) "timed out after ${limit}s" ; return 1 ;;
    *) record "$name" failed $((SECONDS - t0)) "exit code $rc (see the log)" ; return 1 ;;
  esac
}

skip() { record "$1" skipped 0 "$2"; }
trap 'record interrupted skipped $((SECONDS - started)) "stopped by a signal"; exit 1' INT TERM

# ---- 1. install (builds the CUDA wheel when the cache has none) ----------------------------------------------------
if ! run_step install "$BUDGET" make --no-print-directory install VENV="$VENV"; then
  for s in cuda-tests bench-models bench-dense bench-scene dist-train; do skip "$s" "install did not pass"; done
  exit 1
fi
py="$VENV/bin/python"
grep -m1 'built mmcv in' "$OUT/install.log" | sed 's/^/[gpu-check] /' || log "install: mmcv wheel taken from the cache"

# ---- 2. the cuda tests ---------------------------------------------------------------------------------------------
run_step cuda-tests 300 "$py" -m pytest tests/test_cuda.py -m cuda -rs -q -p no:cacheprovider

# ---- 3. models: R50, full model, light variants; AMP training, latency at 100 / 1000 detections, CUDA memory --------
models=("R50 (stock mmdet)=configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py"
        "full model=configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py"
        "full model +fast=configs/cbam/mask-rcnn_effb0-cbam_attn-fpn_anchors_1x_isaid.py+fast")
for config in configs/light/*.py; do models+=("light $(basename "$config" .py)=$config"); done
run_step bench-models 240 "$py" tools/benchmarks/bench_models.py "${models[@]}" --device cuda --data random \
  --repeats 1 --warmup 2 --steps 5 --dets 100 1000 --cfg-options optim_wrapper.type=AmpOptimWrapper \
  --out-md "$OUT/bench_models.md" --out-json "$OUT/bench_models.json"

# ---- 4. dense scenes --------------------------------------------------------------------------------------------
run_step bench-dense 240 "$py" tools/benchmarks/bench_dense.py --device cuda --objects 1239 3000 --timeout 120 \
  --out-md "$OUT/bench_dense.md" --out-json "$OUT/bench_dense.json"

# ---- 5. whole scenes (SceneInferencer on the GPU vs SAHI) ----------------------------------------------------------
shared="${MMDET_CUSTOM_SHARED_DATA:-$here/../shared/data}"
if ! "$py" -c 'import sahi' >/dev/null 2>&1; then
  skip bench-scene "sahi is not installed (requirements/bench.txt)"
elif [ ! -d "$shared/isaid_devkit" ]; then
  skip bench-scene "no iSAID images at $shared/isaid_devkit (MMDET_CUSTOM_SHARED_DATA)"
else
  run_step bench-scene 180 "$py" tools/benchmarks/bench_scene.py --device cuda --skip-quality --model-size 3000 \
    --repeats 1 --batch-size 4 --num-workers 4 --work-dir "$OUT/bench_scene"
fi

# ---- 6. two processes with torchrun --------------------------------------------------------------------------------
if [ "$gpus" -lt 2 ]; then
  skip dist-train "$gpus GPU visible: the 2-process run needs 2"
else
  data="$OUT/dist/data/"
  run_step dist-train 180 bash -c "set -e
    '$py' -m mmdet_custom.converters.smoke '$OUT/dist/raw' --train 8 --val 2 --size 512
    '$py' tools/dataset_converters/isaid.py '$OUT/dist/raw' '$data' --splits train val --patch-size 256 --overlap 64
    PYTHON='$py' PORT=\${PORT:-29517} tools/dist_train.sh configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py 2 \
      --work-dir '$OUT/dist/work' --cfg-options train_cfg.max_iters=20 train_cfg.val_interval=20 \
      train_dataloader.dataset.data_root='$data' val_dataloader.dataset.data_root='$data' \
      test_dataloader.dataset.data_root='$data' val_evaluator.ann_file='${data}annotations/instances_val.json' \
      test_evaluator.ann_file='${data}annotations/instances_val.json'"
fi

trap - INT TERM
failed=$(cut -f2 "$OUT/steps.tsv" | grep -c '^failed$' || true)
log "done in $((SECONDS - started))s: $OUT/report.md"
[ "$failed" -eq 0 ]
