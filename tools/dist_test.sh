#!/usr/bin/env bash
# Distributed testing with torchrun and mmengine's `pytorch` launcher (as mmdet's tools/dist_test.sh).
#
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py flags ...]
#
# e.g. tools/dist_test.sh configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py work_dirs/.../best.pth 8 --max-per-img 1000
# Environment as for tools/dist_train.sh: NNODES, NODE_RANK, MASTER_ADDR, PORT, PYTHON. Each process runs its
# share of the test images; rank 0 collects the predictions and evaluates.
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py flags ...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")"/test.py \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch \
    "${@:4}"
