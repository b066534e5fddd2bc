#!/usr/bin/env bash
# The full-size GPU runs the suite's issues ask for, in one go on one device; the records
# and the rendered tables land in results/<device label>/ to be committed with the command
# and device they came from (both are in every record).
#
#   bash results/gpu_checks.sh            # all of it (not yet timed on a GPU: split it where
#                                         # device time is short)
#   bash results/gpu_checks.sh train      # or: infer, real, bench
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
LABEL=$("$PY" -c "from common.device import select; print(select().label.replace(' ', '_'))")
OUT=${OUT:-results/$LABEL}
WHAT=${1:-all}
FAILED=0
run() { echo "+ $*"; "$@" || { echo "FAILED: $*" >&2; FAILED=1; }; }

# a rank stopped mid-run on two devices: NCCL, under the shim's settings, must end the
# other in one line naming it (torchrun then ends the stopped one, after its 30 s grace)
hung_rank() {
  local dir=$OUT/hung-rank agent pid
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
}

# throughput runs: one batch per step (ViT's recipe would accumulate up to 4096 images)
STEPS=(--synthetic-steps 100 --max-steps 100 --warmup-steps 20 --print-freq 20 --grad-accum 1)
if [ "$WHAT" = all ] || [ "$WHAT" = train ]; then
  # ResNet50 training at 224, bs 256, channels-last: fp32 (no TF32), tf32, amp
  for p in fp32 tf32 amp; do
    run "$PY" resnet50/train.py --synthetic --batch-size 256 --precision "$p" --channels-last \
      "${STEPS[@]}" --out "$OUT/train"
  done
  # the four training cases at 224, amp, the largest batch that fits, where the time goes
  for script in resnet50/train.py mobilenetv2/train.py vit/train.py bit/train.py; do
    run "$PY" "$script" --synthetic --image-size 224 --precision amp --batch-size auto \
      --profile "${STEPS[@]}" --out "$OUT/train"
  done
fi
if [ "$WHAT" = all ] || [ "$WHAT" = infer ]; then
  # ResNet50 inference at bs 256, fp16 and fp32; the other three models fp16
  for p in fp16 fp32; do
    run "$PY" resnet50/infer.py --synthetic --batch-size 256 --precision "$p" --channels-last \
      --synthetic-batches 100 --out "$OUT/infer"
  done
  run "$PY" mobilenetv2/infer.py --synthetic --batch-size 256 --precision fp16 --channels-last \
    --synthetic-batches 100 --out "$OUT/infer"
  run "$PY" vit/infer.py --synthetic --batch-size 256 --precision fp16 \
    --synthetic-batches 50 --out "$OUT/infer"
  run "$PY" bit/infer.py --synthetic --batch-size 64 --precision fp16 \
    --synthetic-batches 20 --out "$OUT/infer"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = real ]; then
  # where figures went wrong before: real JPEGs with a last, partial batch (13 x 8 = 104
  # images in batches of 32 leave 8), on one device and on all of them; TensorRT at
  # fp32 (TF32 off) and fp16; FSDP under amp on two devices or more
  DATA=$OUT/odd-data
  [ -d "$DATA" ] || run "$PY" -m common.make_dataset "$DATA" --classes 8 --train-per-class 16 \
    --val-per-class 13 --size 256
  NDEV=$("$PY" -c "from common.device import local_device_count; print(local_device_count())")
  for p in fp32 fp16; do
    run "$PY" resnet50/infer.py --data-dir "$DATA" --batch-size 32 --precision "$p" \
      --channels-last --workers 4 --out "$OUT/real"
  done
  run "$PY" -m torch.distributed.run --nproc-per-node "$NDEV" resnet50/infer.py \
    --data-dir "$DATA" --batch-size 8 --precision fp16 --channels-last --workers 4 \
    --out "$OUT/real"
  if "$PY" -c "import torch_tensorrt" 2>/dev/null; then
    for p in fp32 fp16; do
      run "$PY" resnet50/infer.py --data-dir "$DATA" --batch-size 32 --precision "$p" \
        --engine tensorrt --channels-last --workers 4 --out "$OUT/real"
    done
  else
    echo "skipped: --engine tensorrt (torch_tensorrt does not import)"
  fi
  if [ "$NDEV" -ge 2 ]; then
    run "$PY" -m torch.distributed.run --nproc-per-node "$NDEV" bit/train.py --data-dir "$DATA" \
      --fsdp --precision amp --batch-size 4 --image-size 224 --max-steps 20 --warmup-steps 5 \
      --workers 4 --out "$OUT/real"
    run hung_rank
  else
    echo "skipped: bit/train.py --fsdp --precision amp and a hung rank (need two devices or more)"
  fi
fi
if [ "$WHAT" = all ] || [ "$WHAT" = bench ]; then
  # our overheads against the references, at full size
  run "$PY" -m common.bench --out "$OUT/bench"
fi
"$PY" -m common.report "$OUT" | tee "$OUT/tables.md"
exit $FAILED
