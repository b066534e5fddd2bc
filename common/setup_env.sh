# Sourced by run_all.sh, tests/run.sh and results/gpu_checks.sh: sets PY to a Python that
# has what requirements.txt requires. A Python that already has torch and torchvision (a
# vendor's SDK image, a machine with no network) is used as it is: a required package it
# lacks is installed where the network allows, else named with the fix (exit 1); an
# optional one (marked "# optional:" in requirements.txt) is named once and done without.
# A python3 without torch gets .venv, with requirements.txt installed into it.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# has_modules PYTHON MODULE...: whether each is installed. Looked up, not imported:
# importing torch takes seconds, and this runs before every batch and test run.
has_modules() {
  "$1" -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))' \
    "${@:2}" >/dev/null 2>&1
}

# missing_modules PYTHON MODULE...: those it lacks, on one line (all of them if it cannot run)
missing_modules() {
  "$1" -c 'import importlib.util as u, sys; print(*[m for m in sys.argv[1:] if u.find_spec(m) is None])' \
    "${@:2}" 2>/dev/null || echo "${@:2}"
}

if [ -x "$ROOT/.venv/bin/python" ] && has_modules "$ROOT/.venv/bin/python" torch torchvision; then
  PY=$ROOT/.venv/bin/python
elif has_modules python3 torch torchvision; then
  PY=python3
else
  echo "setup: python3 has no torch/torchvision; installing requirements.txt into $ROOT/.venv" >&2
  python3 -m venv "$ROOT/.venv" || { echo "setup: python3 -m venv failed; install python3-venv" >&2; exit 1; }
  PY=$ROOT/.venv/bin/python
  "$PY" -m pip install -q -r "$ROOT/requirements.txt" ||
    { echo "setup: pip install -r requirements.txt into $ROOT/.venv failed (the reason is above)" >&2; exit 1; }
fi

# requirements.txt's lines, by what they are; a package's name there is its module's name
REQUIRED=()
OPTIONAL=()  # "name|what it adds"
while IFS= read -r line || [ -n "$line" ]; do
  spec=${line%%#*}
  spec=${spec//[[:space:]]/}
  [ -n "$spec" ] || continue
  case $line in
    *"# optional:"*) OPTIONAL+=("${spec%%[<>=!~;[]*}|${line#*# optional: }") ;;
    *) REQUIRED+=("$spec") ;;
  esac
done <"$ROOT/requirements.txt"

read -r -a missing <<<"$(missing_modules "$PY" "${REQUIRED[@]%%[<>=!~;[]*}")"
if [ ${#missing[@]} -gt 0 ]; then
  specs=()
  for spec in "${REQUIRED[@]}"; do
    for name in "${missing[@]}"; do [ "${spec%%[<>=!~;[]*}" = "$name" ] && specs+=("'$spec'"); done
  done
  pip_log=$(mktemp)
  if ! "$PY" -m pip install -q "${specs[@]//\'/}" >"$pip_log" 2>&1; then
    echo "setup: $PY lacks ${missing[*]} and pip could not install them ($(grep -v '^\s*$' "$pip_log" | tail -n 1)); install them where PyPI is reachable, or from wheels brought here: $PY -m pip install ${specs[*]}" >&2
    rm -f "$pip_log"
    exit 1
  fi
  rm -f "$pip_log"
fi
for entry in ${OPTIONAL[@]+"${OPTIONAL[@]}"}; do
  if ! has_modules "$PY" "${entry%%|*}"; then
    echo "setup: $PY has no ${entry%%|*} (optional: ${entry#*|}); going on without it" >&2
  fi
done
export PY
