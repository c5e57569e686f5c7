#!/usr/bin/env bash
# Distributed training with torchrun and mmengine's `pytorch` launcher (as mmdet's tools/dist_train.sh).
#
#   tools/dist_train.sh CONFIG GPUS [tools/train.py flags ...]
#
# One machine, 8 GPUs:     tools/dist_train.sh configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py 8 --auto-scale-lr
# Two machines, 8 GPUs each: the same command on both, with the node's rank; MASTER_ADDR is node 0's address or host
# name, reachable from node 1, PORT a free port there:
#   node 0: NNODES=2 NODE_RANK=0 MASTER_ADDR=node0.example PORT=29500 tools/dist_train.sh CONFIG 8 --auto-scale-lr
#   node 1: NNODES=2 NODE_RANK=1 MASTER_ADDR=node0.example PORT=29500 tools/dist_train.sh CONFIG 8 --auto-scale-lr
# Environment: NNODES (default 1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500; give each concurrent job on
# a machine its own), PYTHON (the interpreter, default `python`). Without GPUs the processes use the gloo backend
# on CPUs (see mmdet_custom/apis/distributed.py); GPUS is then the number of processes.
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py flags ...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
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
    "$(dirname "$0")"/train.py \
    "$CONFIG" \
    --launcher pytorch "${@:3}" &
# SIGTERM / SIGINT: passed on to torchrun, which passes them on to every rank; the ranks finish the iteration, rank 0
# saves a checkpoint and last_checkpoint, and each exits with 75 (EX_TEMPFAIL). torchrun itself then exits with 1, so
# the script exits with 75 after such a signal (rerun it with --resume auto), otherwise with torchrun's code.
TORCHRUN=$!
SIGNALLED=
trap 'SIGNALLED=1; kill -TERM "$TORCHRUN" 2>/dev/null' TERM
trap 'SIGNALLED=1; kill -INT "$TORCHRUN" 2>/dev/null' INT
while :; do
    wait "$TORCHRUN"
    CODE=$?
    kill -0 "$TORCHRUN" 2>/dev/null || break  # wait returns early when a trapped signal arrives
done
if [ -n "$SIGNALLED" ] && [ "$CODE" -ne 0 ]; then
    exit 75
fi
exit "$CODE"
