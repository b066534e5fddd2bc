# Sourced by run_all.sh and tests/run.sh: sets PY to a Python that has what
# requirements.txt names. A Python that already has torch and torchvision (a vendor's
# SDK image) is used as it is; otherwise .venv is made and requirements.txt installed.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# has_modules PYTHON MODULE...: whether each is installed. Looked up, not imported:
# importing torch takes seconds, and this runs before every batch and test run.
has_modules() {
  "$1" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' \
    "${@:2}" >/dev/null 2>&1
}

if [ -x "$ROOT/.venv/bin/python" ] && has_modules "$ROOT/.venv/bin/python" torch torchvision; then
  PY=$ROOT/.venv/bin/python
elif has_modules python3 torch torchvision; then
  PY=python3
else
  echo "setup: python3 has no torch/torchvision; installing requirements.txt into $ROOT/.venv" >&2
  python3 -m venv "$ROOT/.venv" || { echo "setup: python3 -m venv failed; install python3-venv" >&2; exit 1; }
  PY=$ROOT/.venv/bin/python
fi
if ! has_modules "$PY" torch torchvision numpy tabulate wcwidth; then
  "$PY" -m pip install -q -r "$ROOT/requirements.txt" || { echo "setup: pip install -r requirements.txt failed" >&2; exit 1; }
fi
export PY
