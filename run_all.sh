#!/usr/bin/env bash
# Run every benchmark case and print the result tables.
#
#   bash run_all.sh                                  # quick: small generated dataset, small images
#   DATA_DIR=/data/imagenet bash run_all.sh          # the real cases, every device of this node
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 DATA_DIR=/data/imagenet bash run_all.sh  # on each node
#
#   NNODES=2 RDZV_ENDPOINT=10.0.0.1:29500 DATA_DIR=/data/imagenet bash run_all.sh  # same on each
#   REPEAT=5 OUT=runs/rep5 bash run_all.sh          # each case 5 times, --seed 1 to 5
#
# Environment: DATA_DIR, NPROC (devices per node; default all), NNODES, NODE_RANK,
# MASTER_ADDR, MASTER_PORT (passed to torchrun), RDZV_ENDPOINT and RDZV_ID (a c10d
# rendezvous instead of node ranks; each case is its own rendezvous), OUT (record directory),
# TABLE_LANG (en|zh), CASES (e.g. "resnet50_train vit_infer"), EXTRA_ARGS (appended to
# every case), WEIGHTS_DIR (the published weights a case takes, by the file names of
# common/cases.py: `python -m common.cases` lists each case with its script and weights;
# a missing file means random weights, speed only), REPEAT (runs of each case, with
# --seed SEED0, SEED0+1, ... SEED0+REPEAT-1; SEED0 defaults to 1, so REPEAT=3 runs seeds
# 1, 2, 3; each writes its own record, and the report shows each group as one row and
# the spread). Started again with the same settings and OUT, a REPEAT run skips every
# repeat whose finished record is in OUT; one that was cut resumes from its checkpoint.
set -u
cd "$(dirname "$0")"
EXTRA_ARGS=${EXTRA_ARGS:-}
SEED0=${SEED0:-1}
# settings that cannot run are said before anything starts
if [ -n "${REPEAT:-}" ]; then
  # at most 9 digits each: bash's arithmetic stays exact, the last seed within --seed's range
  if ! [[ $REPEAT =~ ^[1-9][0-9]{0,8}$ ]]; then
    echo "run_all: REPEAT=$REPEAT: give REPEAT a count of runs, a whole number from 1 to 999999999" >&2
    exit 2
  fi
  if ! [[ $SEED0 =~ ^[0-9]{1,9}$ ]]; then
    echo "run_all: SEED0=$SEED0: give SEED0 the first seed, a whole number from 0 to 999999999" >&2
    exit 2
  fi
  if [[ " $EXTRA_ARGS " =~ " --seed" ]]; then
    echo "run_all: EXTRA_ARGS holds --seed, which REPEAT sets for each run; set SEED0 instead" >&2
    exit 2
  fi
fi
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
  local rdzv argv=("$@" "${DATA_ARGS[@]}" --out "$OUT" --lang "$TABLE_LANG" ${SEED:+--seed "$SEED"})
  # shellcheck disable=SC2206  # EXTRA_ARGS is a list of flags
  argv+=($EXTRA_ARGS)
  # a repeat whose finished record is in OUT (the same command) is not run again
  if [ -n "${REPEAT:-}" ] &&
     "$PY" -m common.repeats "$OUT" "${NNODES}x${NPROC}" -- "${argv[@]}"; then
    echo "=== $CASE, $REPEAT_NOTE: its record is in $OUT already; not run again"
    return 0
  fi
  if [ -n "${RDZV_ENDPOINT:-}" ]; then
    # c10d rendezvous: the identical command on every node; one rendezvous per case and seed
    rdzv=(--rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT"
          --rdzv-id "${RDZV_ID:-run_all}-$CASE${SEED:+-seed$SEED}")
  else
    rdzv=(--node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT")
  fi
  stop_if_asked  # a signal during the test above
  "$PY" -m torch.distributed.run --nnodes "$NNODES" "${rdzv[@]}" --nproc-per-node "$NPROC" \
    "${argv[@]}"
}
# a case: its script, with the weights file the registry names for it where WEIGHTS_DIR
# holds one ('-': the case takes none)
run_case() {
  local script=$1 weights=$2
  set --
  if [ "$weights" != - ] && [ -n "${WEIGHTS_DIR:-}" ]; then
    if [ -f "$WEIGHTS_DIR/$weights" ]; then
      set -- --weights "$WEIGHTS_DIR/$weights"
    else
      echo "=== weights: no $WEIGHTS_DIR/$weights: random weights, speed only"
    fi
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
# CASES and WEIGHTS_DIR are checked before the first case, not found wrong hours later
for CASE in ${CASES:-}; do
  if ! awk -v want="$CASE" '$1 == want { found = 1 } END { exit !found }' <<<"$CASE_LINES"; then
    echo "run_all: CASES: no case '$CASE'; CASES takes: $ALL_CASES" >&2
    exit 2
  fi
done
if [ -n "${WEIGHTS_DIR:-}" ] && [ ! -d "$WEIGHTS_DIR" ]; then
  echo "run_all: WEIGHTS_DIR=$WEIGHTS_DIR: not a directory; set it to the folder that holds the weights files (python -m common.cases names them)" >&2
  exit 2
fi
FAILED=()
# Ctrl-C, SIGTERM or SIGHUP reach the case's run too, which stops at its next step with a
# checkpoint; run_all then stops there instead of starting the next run
STOPPED=
for sig in INT TERM HUP; do trap "STOPPED=$sig" "$sig"; done
stop_if_asked() {
  [ -z "$STOPPED" ] && return
  local c on= rest=
  for c in ${CASES:-$ALL_CASES}; do
    [ "$c" = "$CASE" ] && on=1
    [ -n "$on" ] && rest+="${rest:+ }$c"
  done
  if [ -n "${REPEAT:-}" ]; then
    echo "run_all: stopped by SIG$STOPPED during $CASE, $REPEAT_NOTE; the same command goes" \
         "on from there (a repeat with its finished record in OUT is not run again, the cut" \
         "one resumes from its checkpoint)" >&2
  else
    echo "run_all: stopped by SIG$STOPPED during $CASE; to go on, run it again with" \
         "CASES=\"$rest\" (a cut training run resumes from its checkpoint)" >&2
  fi
  exit $((128 + $(kill -l "$STOPPED")))
}
echo "run_all: $MODE mode, ${NNODES}x${NPROC}, records in $OUT"
# one run of CASE (with --seed SEED where SEED is set): its log, and a row with the reason
# where it ended before its record
run_once() {
  local script=$1 weights=$2 log=$OUT/logs/$CASE${SEED:+-seed$SEED}.stderr rc before reason
  echo "=== $CASE${REPEAT_NOTE:+, $REPEAT_NOTE}"
  mkdir -p "$OUT/logs"
  before=$(records)
  # the tee ignores the job's signals: it ends with the case's stderr, so the lines a
  # stopping run prints after Ctrl-C reach the log and the terminal, and the case is the
  # one child a signal stops
  run_case "$script" "$weights" 2> >(trap '' INT TERM HUP; exec tee "$log" >&2)
  rc=$?
  wait $! 2>/dev/null  # the tee, so the log is whole before it is read
  # bash skips its INT trap when the child caught SIGINT and exited by itself (torchrun
  # does): the run's own line then says which signal stopped it
  [ -n "$STOPPED" ] || [ $rc -eq 0 ] || STOPPED=$(sed -nE 's/.*stopped by SIG(INT|TERM|HUP) at step.*/\1/p' "$log" | tail -n 1)
  stop_if_asked
  if [ $rc -ne 0 ]; then
    echo "=== $CASE${REPEAT_NOTE:+, $REPEAT_NOTE} FAILED (exit $rc)"
    FAILED+=("$CASE${SEED:+ (--seed $SEED)}")
    # a case that ended before writing its record still gets a row, with its reason
    if [ "$NODE_RANK" = 0 ] && [ "$(records)" = "$before" ]; then
      # the suite's own one-line error (torchrun's summary repeats it after
      # "traceback : "), else the last line naming an error, whole
      reason=$(grep -hoE "(^|traceback : )error: .*" "$log" | tail -n 1)
      reason=${reason#traceback : }
      [ -n "$reason" ] || reason=$(grep -h "error:" "$log" | tail -n 1)
      [ -n "$reason" ] || reason=$(grep -v '^\s*$' "$log" | tail -n 1)
      "$PY" -m common.report --failed-case "$CASE" --reason "${reason:-exit $rc}" \
        --config "${NNODES}x${NPROC}" "$OUT" >/dev/null
    fi
  fi
}

for CASE in ${CASES:-$ALL_CASES}; do
  read -r _ script weights < <(awk -v want="$CASE" '$1 == want' <<<"$CASE_LINES")
  SEED= REPEAT_NOTE=
  if [ -z "${REPEAT:-}" ]; then
    run_once "$script" "$weights"
    continue
  fi
  for ((i = 0; i < REPEAT; i++)); do
    SEED=$((SEED0 + i))
    REPEAT_NOTE="repeat $((i + 1)) of $REPEAT (--seed $SEED)"
    run_once "$script" "$weights"
  done
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
