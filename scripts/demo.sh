#!/usr/bin/env bash
# The main job: data -> iSAID patches -> train -> test (segm AP table). Called by `make demo [DATA=<raw iSAID>]`.
# DEMO_CONFIG and DEMO_DIR choose the config and the work dir; the config's data paths are pointed at
# $DEMO_DIR/data (--data-root), where this script writes the patches. Default config: the smoke config (256 px) on
# the smoke dataset; with DATA, the real-data config, which keeps iSAID's scale (random 256 px crops of the 800 px
# patches) and has anchors for its small objects: at 256 px no anchor of the smoke config reaches a real vehicle.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
py="$VENV/bin/python"
DATA="${DATA:-}"
DEMO_DIR="${DEMO_DIR:-work_dirs/demo}"
if [ -n "$DATA" ]; then
  CONFIG="${DEMO_CONFIG:-configs/mask_rcnn/mask-rcnn_r18_fpn_anchors_crop256_300i_isaid.py}"
else
  CONFIG="${DEMO_CONFIG:-configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py}"
fi
data_root="$DEMO_DIR/data/"
mkdir -p "$DEMO_DIR"
if [ -z "$DATA" ]; then
  echo "[demo] generating the smoke dataset (aerial-like shapes in the iSAID raw layout, NOT real data)"
  rm -rf "$DEMO_DIR/raw"   # written by the generator below on the previous run
  "$py" -m mmdet_custom.converters.smoke "$DEMO_DIR/raw" --train 16 --val 4 --size 512
  "$py" tools/dataset_converters/isaid.py "$DEMO_DIR/raw" "$DEMO_DIR/data" --splits train val \
      --patch-size 256 --overlap 64
else
  echo "[demo] converting real iSAID from $DATA (800x800 patches, overlap 200)"
  "$py" tools/dataset_converters/isaid.py "$DATA" "$DEMO_DIR/data" --splits train val
fi
echo "[demo] training $CONFIG"
"$py" tools/train.py "$CONFIG" --work-dir "$DEMO_DIR" --data-root "$data_root"
# the checkpoint the run saved last (CheckpointHook writes last_checkpoint after a complete, atomic save); an
# absolute path that no longer exists (work dir moved) is looked up in the work dir
ckpt=$(cat "$DEMO_DIR/last_checkpoint")
[ -f "$ckpt" ] || ckpt="$DEMO_DIR/$(basename "$ckpt")"
echo "[demo] testing $ckpt"
"$py" tools/test.py "$CONFIG" "$ckpt" --work-dir "$DEMO_DIR" --data-root "$data_root"
echo "[demo] metrics written to $DEMO_DIR/test_metrics.json"
