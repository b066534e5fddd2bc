#!/usr/bin/env bash
# A rank stopped mid-run on two devices: under the shim's settings for the backend (NCCL's
# on NVIDIA), the other rank must end in one line naming it, with no traceback; torchrun
# then ends the stopped one after its 30 s grace. common/gpu_plan.py's full set runs it.
#
#   bash results/hung_rank.sh OUT_DIR
set -u
cd "$(dirname "$0")/.."
source common/setup_env.sh
dir=${1:?give the folder for its record and log}
mkdir -p "$dir"
"$PY" -m torch.distributed.run --nproc-per-node 2 resnet50/train.py --synthetic \
  --batch-size 32 --image-size 64 --max-steps 100000 --print-freq 10 --dist-timeout 20 \
  --checkpoint-every 100steps --out "$dir" >"$dir/log" 2>&1 &
agent=$!
until grep -q "step 300/" "$dir/log" || ! kill -0 "$agent" 2>/dev/null; do sleep 0.5; done
for pid in $(pgrep -P "$agent"); do
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qx RANK=1 && kill -STOP "$pid"
done
wait "$agent"
grep -E "^error: rank 0: a collective at .* timed out: rank 1 did not answer; the last checkpoint" \
  "$dir/log" && ! grep -q Traceback <(sed '/failed (exitcode/,$d' "$dir/log")
