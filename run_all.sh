#!/usr/bin/env bash
# Run every benchmark case and print the result tables.
#
#   bash run_all.sh                                  # quick: small generated dataset, small images
#   DATA_DIR=/data/imagenet bash run_all.sh          # the real cases, every device of this node
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 DATA_DIR=/data/imagenet bash run_all.sh  # on each node
#
#   NNODES=2 RDZV_ENDPOINT=10.0.0.1:29500 DATA_DIR=/data/imagenet bash run_all.sh  # same on each
#
# Environment: DATA_DIR, NPROC (devices per node; default all), NNODES, NODE_RANK,
# MASTER_ADDR, MASTER_PORT (passed to torchrun), RDZV_ENDPOINT and RDZV_ID (a c10d
# rendezvous instead of node ranks; each case is its own rendezvous), OUT (record directory),
# TABLE_LANG (en|zh), CASES (e.g. "resnet50_train vit_infer"), EXTRA_ARGS (appended to
# every case), WEIGHTS_DIR (the published weights a case takes, by the file names of
# common/cases.py: `python -m common.cases` lists each case with its script and weights;
# a missing file means random weights, speed only).
set -u
cd "$(dirname "$0")"
source common/setup_env.sh

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
# the device's type and count, asked of one start of torch
read -r DEVICE_TYPE DEVICE_COUNT < <("$PY" -c "from common.device import select
d = select(); print(d.type, d.device_count())")
NPROC=${NPROC:-$DEVICE_COUNT}
OUT=${OUT:-runs/$(date +%Y%m%d-%H%M%S)}
TABLE_LANG=${TABLE_LANG:-en}
EXTRA_ARGS=${EXTRA_ARGS:-}
# OUT is written before the first case runs, not found unwritable after it
if ! mkdir -p "$OUT/logs" || ! probe=$(mktemp "$OUT/.probe.XXXXXX") || ! rm -f "$probe"; then
  echo "run_all: OUT=$OUT: cannot be written (the reason is above); set OUT to a directory you can write to" >&2
  exit 2
fi

if [ -n "${DATA_DIR:-}" ]; then
  MODE=real
  DATA_ARGS=(--data-dir "$DATA_DIR")
  TRAIN_ARGS=()
  INFER_ARGS=()
else
  # quick mode: a generated JPEG dataset and a few steps at a small image size
  MODE=quick
  QUICK_DATA=runs/quick-data
  QUICK_VAL_PER_CLASS=16
  if [ ! -d "$QUICK_DATA" ]; then
    # written aside and renamed: an interrupted write is never taken for the dataset, and
    # the agents of a two-node run on one machine do not write into each other's files
    mkdir -p runs
    tmp=$(mktemp -d runs/.quick-data.XXXXXX)
    "$PY" -m common.make_dataset "$tmp" --classes 4 --train-per-class 64 \
      --val-per-class "$QUICK_VAL_PER_CLASS" --size 80 || exit 1
    mv -T "$tmp" "$QUICK_DATA" 2>/dev/null || rm -rf "$tmp"  # the other agent was first
  fi
  DATA_ARGS=(--data-dir "$QUICK_DATA" --image-size 64 --batch-size 8 --workers 1)
  # no accumulation: ViT's recipe would accumulate 512 of these batches to reach 4096
  TRAIN_ARGS=(--max-steps 12 --warmup-steps 2 --print-freq 4 --grad-accum 1)
  INFER_ARGS=(--latency-calls 20 --warmup-batches 2)
fi

# the records in OUT: "$OUT" quoted is the folder as it is spelt, where a pattern made of
# it (compgen -G "$OUT/*.json") would take runs[1] for runs1
records() {
  local f n=0
  for f in "$OUT"/*.json; do [ -e "$f" ] && n=$((n + 1)); done
  echo "$n"
}

launch() {
  local rdzv
  if [ -n "${RDZV_ENDPOINT:-}" ]; then
    # c10d rendezvous: the identical command on every node; one rendezvous per case
    rdzv=(--rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "${RDZV_ID:-run_all}-$CASE")
  else
    rdzv=(--node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT")
  fi
  # shellcheck disable=SC2086  # EXTRA_ARGS is a list of flags
  "$PY" -m torch.distributed.run --nnodes "$NNODES" "${rdzv[@]}" --nproc-per-node "$NPROC" \
    "$@" "${DATA_ARGS[@]}" --out "$OUT" --lang "$TABLE_LANG" $EXTRA_ARGS
}
# a case: its script, with the weights file the registry names for it where WEIGHTS_DIR
# holds one ('-': the case takes none)
run_case() {
  local script=$1 weights=$2
  set --
  if [ "$weights" != - ] && [ -n "${WEIGHTS_DIR:-}" ] && [ -f "$WEIGHTS_DIR/$weights" ]; then
    set -- --weights "$WEIGHTS_DIR/$weights"
  fi
  case $script in
    */train.py) launch "$script" "$@" "${TRAIN_ARGS[@]}" ;;
    *) infer "$script" "$@" ;;
  esac
}
infer() {
  local script=$1
  shift
  if [ "$MODE" = quick ] && [ "$DEVICE_TYPE" = cpu ]; then
    # building an engine on a cpu takes up to minutes: only where it costs less than it
    # saves on the quick run's images, as this device's engine bench under results/ measured
    local engine why
    read -r engine why < <("$PY" -m common.bench --engine-pays "${script%%/*}" \
                           $((4 * QUICK_VAL_PER_CLASS)))
    engine=${engine:-eager}
    echo "=== engine: $engine (${why:-its bench could not be read})"
    set -- "$@" --engine "$engine"
  fi
  launch "$script" "$@" "${INFER_ARGS[@]}"
}

# the cases, from the registry of the models (common/cases.py): "case script weights"
if ! CASE_LINES=$("$PY" -m common.cases); then
  echo "run_all: python -m common.cases failed (the reason is above)" >&2
  exit 1
fi
ALL_CASES=$(awk '{ printf "%s%s", sep, $1; sep = " " }' <<<"$CASE_LINES")
FAILED=()
echo "run_all: $MODE mode, ${NNODES}x${NPROC}, records in $OUT"
for CASE in ${CASES:-$ALL_CASES}; do
  echo "=== $CASE"
  script=
  read -r _ script weights < <(awk -v want="$CASE" '$1 == want' <<<"$CASE_LINES")
  if [ -z "$script" ]; then
    echo "=== $CASE: no such case; CASES takes: $ALL_CASES" >&2
    FAILED+=("$CASE")
    continue
  fi
  mkdir -p "$OUT/logs"
  before=$(records)
  run_case "$script" "$weights" 2> >(tee "$OUT/logs/$CASE.stderr" >&2)
  rc=$?
  wait $! 2>/dev/null  # the tee, so the log is whole before it is read
  if [ $rc -ne 0 ]; then
    echo "=== $CASE FAILED (exit $rc)"
    FAILED+=("$CASE")
    # a case that ended before writing its record still gets a row, with its reason
    if [ "$NODE_RANK" = 0 ] && [ "$(records)" = "$before" ]; then
      # the suite's own one-line error (torchrun's summary repeats it after
      # "traceback : "), else the last line naming an error, whole
      reason=$(grep -hoE "(^|traceback : )error: .*" "$OUT/logs/$CASE.stderr" | tail -n 1)
      reason=${reason#traceback : }
      [ -n "$reason" ] || reason=$(grep -h "error:" "$OUT/logs/$CASE.stderr" | tail -n 1)
      [ -n "$reason" ] || reason=$(grep -v '^\s*$' "$OUT/logs/$CASE.stderr" | tail -n 1)
      "$PY" -m common.report --failed-case "$CASE" --reason "${reason:-exit $rc}" \
        --config "${NNODES}x${NPROC}" "$OUT" >/dev/null
    fi
  fi
done

echo
if [ "$(records)" -gt 0 ]; then
  "$PY" -m common.report "$OUT" --lang "$TABLE_LANG"
elif [ ${#FAILED[@]} -eq 0 ]; then
  echo "run_all: the records are on the node of global rank 0"
fi
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "run_all: failed: ${FAILED[*]}" >&2
  exit 1
fi
echo "run_all: all cases passed"
