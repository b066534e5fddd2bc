#!/usr/bin/env bash
# The test command: installs what the suite and its tests need, then runs pytest.
#   bash tests/run.sh [pytest args]
set -eu
source "$(dirname "$0")/../common/setup_env.sh"
if ! has_modules "$PY" pytest timm matplotlib torchcodec mlperf_logging; then
  "$PY" -m pip install -q -r "$ROOT/tests/requirements.txt"
fi
cd "$ROOT/tests"
exec "$PY" -m pytest -q "$@"
