"""common/setup_env.sh on a machine whose python3 has torch and torchvision and no
network: a missing optional package is named once and done without; a missing required
one is installed where pip can, else named with the fix; without torch, .venv is made.

python3 here is a wrapper around this Python that hides the modules listed in a file
from find_spec, and whose pip fails as it does with no network (or, asked to, installs
by taking the package off that list)."""
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

HIDE = """import importlib.util, os
_find = importlib.util.find_spec
def find_spec(name, package=None):
    with open(os.environ["HIDDEN_MODULES"]) as f:
        return None if name in f.read().split() else _find(name, package)
importlib.util.find_spec = find_spec
"""
PYTHON3 = """#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = venv ]; then  # a .venv whose python is this one
  mkdir -p "$3/bin" && cp "$0" "$3/bin/python" && exit 0
fi
if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "${*:3}" >>"$FAKE/pip-calls"
  if [ -n "${PIP_INSTALLS:-}" ]; then
    for spec in "${@:5}"; do sed -i "/^${spec%%>*}\\$/d" "$HIDDEN_MODULES"; done
    exit 0
  fi
  echo "WARNING: Retrying ... [Errno 101] Network is unreachable" >&2
  echo "ERROR: No matching distribution found for ${*: -1}" >&2
  exit 1
fi
exec REAL_PYTHON "$@"
"""


@pytest.fixture
def machine(tmp_path):
    """A copy of setup_env.sh and requirements.txt with no .venv beside them, and the
    python3 described above first on PATH."""
    root = tmp_path / "suite"
    (root / "common").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "common", "setup_env.sh"), root / "common")
    shutil.copy(os.path.join(ROOT, "requirements.txt"), root)
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "site").mkdir()
    (fake / "site" / "sitecustomize.py").write_text(HIDE)
    python3 = fake / "bin" / "python3"
    python3.write_text(PYTHON3.replace("REAL_PYTHON", sys.executable))
    python3.chmod(0o755)

    def source(*hidden, pip_installs=False):
        (fake / "hidden").write_text("\n".join(hidden) + "\n")
        env = {**os.environ, "PATH": f"{fake / 'bin'}:{os.environ['PATH']}", "FAKE": str(fake),
               "PYTHONPATH": str(fake / "site"), "HIDDEN_MODULES": str(fake / "hidden")}
        env.pop("PIP_INSTALLS", None)
        if pip_installs:
            env["PIP_INSTALLS"] = "1"
        proc = subprocess.run(["bash", "-c", 'set -eu; source "$1"; echo "PY=$PY"', "-",
                               str(root / "common" / "setup_env.sh")], env=env,
                              capture_output=True, text=True, timeout=60)
        calls = fake / "pip-calls"
        pip = calls.read_text().splitlines() if calls.exists() else []
        if calls.exists():
            calls.unlink()
        return proc, pip
    source.root = root
    return source


def test_a_missing_optional_package_is_named_once_and_done_without(machine):
    proc, pip = machine("wcwidth")
    assert proc.returncode == 0 and proc.stdout == "PY=python3\n"
    assert proc.stderr == ("setup: python3 has no wcwidth (optional: Chinese table cells line "
                           "up with it in a terminal (tabulate reads it)); going on without it\n")
    assert pip == []  # no install tried: with no network it would only fail, slowly


def test_a_missing_required_package_without_network_is_one_line_with_the_fix(machine):
    proc, pip = machine("numpy", "tabulate", "wcwidth")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (
        "setup: python3 lacks numpy tabulate and pip could not install them (ERROR: No "
        "matching distribution found for tabulate>=0.9); install them where PyPI is reachable, "
        "or from wheels brought here: python3 -m pip install 'numpy>=1.22' 'tabulate>=0.9'\n")
    assert pip == ["install -q numpy>=1.22 tabulate>=0.9"]


def test_a_missing_required_package_is_installed_where_pip_can(machine):
    proc, pip = machine("tabulate", pip_installs=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "PY=python3\n", "")
    assert pip == ["install -q tabulate>=0.9"]


def test_without_torch_a_venv_gets_requirements_txt(machine):
    proc, pip = machine("torch")
    venv = machine.root / ".venv"
    assert proc.returncode == 1 and (venv / "bin" / "python").exists()
    assert pip == [f"install -q -r {machine.root / 'requirements.txt'}"]
    assert proc.stderr.splitlines() == [
        f"setup: python3 has no torch/torchvision; installing requirements.txt into {venv}",
        "WARNING: Retrying ... [Errno 101] Network is unreachable",
        f"ERROR: No matching distribution found for {machine.root / 'requirements.txt'}",
        f"setup: pip install -r requirements.txt into {venv} failed (the reason is above)"]
