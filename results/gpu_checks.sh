#!/usr/bin/env bash
# The suite's checks on one accelerator, in one command; the records, tables.md rendered
# from them and timings.txt land in OUT (default results/<device label>/), to be committed
# with the command and device they came from (both are in every record).
#
#   bash results/gpu_checks.sh quick   # fits one short slot: in order of value, each step
#                                      # planned in seconds, none started past the deadline
#   bash results/gpu_checks.sh full    # every check at full size, untimed
#
# GPU_CHECKS_S (default 480 for quick) is the deadline, counted from this script's start:
# the checks are over by then. The last 15 s are kept for stopping a step and for the
# tables: no step starts that its planned seconds would carry past that, and one still
# running then is stopped (SIGTERM, then SIGKILL after 10 s). On a CPU, quick rehearses
# every step at small sizes.
# The plan, each step's expected seconds and how they were estimated: common/gpu_plan.py.
# Exit: 0 every step ran and passed; 1 a step failed or was stopped; 3 none failed, but
# some were skipped at the deadline; 2 a wrong mode, GPU_CHECKS_S or OUT.
set -u
export GPU_CHECKS_START
GPU_CHECKS_START=$(date +%s.%N)
# a relative OUT is the caller's, not the repository root's
case ${OUT:-} in "" | /*) ;; *) export OUT="$PWD/$OUT" ;; esac
cd "$(dirname "$0")/.."
source common/setup_env.sh
exec "$PY" -m common.gpu_checks "$@"
