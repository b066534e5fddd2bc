#!/usr/bin/env bash
# The test command: installs what the suite and its tests need, then runs pytest.
#   bash tests/run.sh [pytest args]
# The tests run in TEST_WORKERS pytest-xdist processes (default: the cores, at most 4):
# most tests wait on a script they started, and one process leaves the other cores idle.
# TEST_WORKERS=0, or -n 0 among the args, runs them in this one process.
set -eu
source "$(dirname "$0")/../common/setup_env.sh"
if ! has_modules "$PY" pytest xdist timm matplotlib torchcodec mlperf_logging; then
  "$PY" -m pip install -q -r "$ROOT/tests/requirements.txt"
fi
cores=$(nproc 2>/dev/null || echo 1)
workers=${TEST_WORKERS:-$((cores < 4 ? cores : 4))}
case $workers in
  ''|*[!0-9]*) echo "tests/run.sh: TEST_WORKERS=$workers: give a count, e.g. TEST_WORKERS=2 (0: one process)" >&2; exit 2 ;;
esac
cd "$ROOT/tests"
exec "$PY" -m pytest -q -n "$workers" "$@"
