#!/usr/bin/env bash
# The main job: data -> iSAID patches -> train -> test (segm AP table). Called by `make demo [DATA=<raw iSAID>]`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
py="$VENV/bin/python"
DATA="${DATA:-}"
DEMO_DIR=work_dirs/demo          # the demo config reads its data from work_dirs/demo/data
CONFIG=configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py
rm -rf "$DEMO_DIR/data" "$DEMO_DIR/raw"
mkdir -p "$DEMO_DIR"
if [ -z "$DATA" ]; then
  echo "[demo] generating the smoke dataset (aerial-like shapes in the iSAID raw layout, NOT real data)"
  "$py" -m mmdet_custom.converters.smoke "$DEMO_DIR/raw" --train 16 --val 4 --size 512
  "$py" tools/dataset_converters/isaid.py "$DEMO_DIR/raw" "$DEMO_DIR/data" --splits train val \
      --patch-size 256 --overlap 64
else
  echo "[demo] converting real iSAID from $DATA (800x800 patches, overlap 200)"
  "$py" tools/dataset_converters/isaid.py "$DATA" "$DEMO_DIR/data" --splits train val
fi
echo "[demo] training $CONFIG"
"$py" tools/train.py "$CONFIG" --work-dir "$DEMO_DIR"
ckpt=$(ls -t "$DEMO_DIR"/iter_*.pth | head -n1)
echo "[demo] testing $ckpt"
"$py" tools/test.py "$CONFIG" "$ckpt" --work-dir "$DEMO_DIR"
echo "[demo] metrics written to $DEMO_DIR/test_metrics.json"
