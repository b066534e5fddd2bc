"""The definitions live in the repository, and every pointer to them resolves: each
link of the docs reaches a file and a heading, each command names a script of the
suite and flags its parser takes, and the tables of cases, modules and measurements
say what the registry, the tree and the records say."""
import argparse
import ast
import contextlib
import functools
import glob
import importlib
import io
import json
import os
import re

import pytest
from conftest import ROOT, load_script
from docs_text import RUNNERS, code_blocks, commands, inline_commands, pages, read, section
from docs_text import anchors, links, tables

from common import cases
from common import tables as table_columns

METRICS = os.path.join(ROOT, "docs/METRICS.md")
PAGES = pages()


def sources():
    for folder, _, files in os.walk(ROOT):
        if ".venv" in folder or ".git" in folder:
            continue
        for name in files:
            if name.endswith((".py", ".sh", ".md")):
                yield os.path.join(folder, name)


def test_every_mention_of_the_definitions_points_at_docs_metrics():
    with open(METRICS) as f:
        assert f.readline().startswith("# ")
    for path in sources():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for m in re.finditer(r"[\w./]*METRICS\.md", text):
            # a path from the file (a link) or from the repository root (a mention)
            targets = {os.path.normpath(os.path.join(start, m.group()))
                       for start in (os.path.dirname(path), ROOT)}
            assert METRICS in targets, \
                f"{os.path.relpath(path, ROOT)}: {m.group()} is not docs/METRICS.md"


def test_every_table_column_and_record_figure_is_defined():
    with open(METRICS) as f:
        text = f.read()
    names = set(table_columns.TRAIN_COLUMNS) | set(table_columns.INFER_COLUMNS) - {"bs"}
    names |= {"e2e_time", "compile_s", "build_s", "latency_b1_ms", "flops_per_image", "mfu",
              "tflops", "energy_per_image_j", "power_mean_w", "why_empty", "fix_hp"}
    assert not {n for n in names if n not in text}


def test_readme_starts_a_vendor_with_device_dataset_synthetic_then_real_data():
    readme = PAGES["README.md"]
    steps = ["python -m common.device", "python -m common.make_dataset",
             "train.py --synthetic", "--data-dir /tmp/tiny", "--data-dir /data/imagenet"]
    where = [readme.find(s) for s in steps]
    assert -1 not in where and where == sorted(where)
    assert where[0] < readme.find("## Two commands")


def test_the_readme_is_a_front_door():
    readme = PAGES["README.md"]
    assert len(readme.splitlines()) <= 200
    assert re.findall(r"^## (.+)$", readme, re.M) == [
        "Quick start on a new chip", "Two commands", "The cases", "How to read a row",
        "Where to read more", "Layout"]
    # the two commands, and no other
    blocks = [body for lang, body in code_blocks(section(readme, "Two commands"))]
    assert [words for _, words in commands(blocks[0])] == [["bash", "run_all.sh"],
                                                            ["bash", "tests/run.sh"]]
    further = section(readme, "Where to read more")
    assert {t for t, _ in links(further)} >= {p for p in PAGES if p != "README.md"}


@pytest.mark.parametrize("page", PAGES)
def test_every_link_reaches_a_file_and_its_heading(page):
    text = PAGES[page]
    for target, anchor in links(text):
        path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
        assert os.path.exists(os.path.join(ROOT, path)), f"{page}: ({target}) is no file"
        if anchor:
            assert anchor in anchors(read(path)), f"{page}: {path} has no heading #{anchor}"


def doc_commands():
    """(page, environment, words) of every command the docs show, and each code block
    not marked as shell that holds one (a command there would escape the checks)."""
    found, unmarked = [], []
    for page, text in PAGES.items():
        for lang, body in code_blocks(text):
            if lang in ("bash", "sh"):
                found += [(page, env, words) for env, words in commands(body)]
            elif re.search(rf"^({'|'.join(RUNNERS)}) ", body, re.M):
                unmarked.append(f"{page}:\n{body}")
        for span in inline_commands(text):
            found += [(page, env, words) for env, words in commands(span)]
    return found, unmarked


FOUND, UNMARKED = doc_commands()
DOC_COMMANDS = [c for c in FOUND if c[2][0] in RUNNERS]


def test_every_command_of_the_docs_is_found():
    assert UNMARKED == []
    unset = [f"{page}: {' '.join(words)}" for page, _, words in FOUND if words[0][0] == "$"]
    assert unset == []
    scripts = {words[1] for _, _, words in DOC_COMMANDS}
    runners = {words[0] for _, _, words in DOC_COMMANDS}
    assert len(DOC_COMMANDS) > 40 and {"run_all.sh", "common/slurm.sbatch"} <= scripts
    assert runners == {"python", "torchrun", "bash", "sbatch"}


@pytest.mark.parametrize("page, env, words", DOC_COMMANDS,
                         ids=[f"{p}: {' '.join(w)[:70]}" for p, _, w in DOC_COMMANDS])
def test_every_command_runs_a_script_of_the_suite_with_flags_it_takes(page, env, words):
    runner, *rest = words
    if runner == "torchrun":
        launched = parse(torchrun_parser(), rest)
        rest = [*(["-m"] if launched.module else []), launched.training_script,
                *launched.training_script_args]
    if runner in ("bash", "sbatch"):
        rest = shell_script(rest, env)
    if rest is not None:
        python_command(rest)


@functools.cache
def torchrun_parser():
    from torch.distributed.run import get_args_parser
    return get_args_parser()


def shell_script(args, env):
    """The python command a shell script hands its arguments to, or None; checks the
    script is there and reads every variable the command sets."""
    path = os.path.join(ROOT, args[0])
    assert os.path.isfile(path), f"{args[0]}: no such script"
    text = read(args[0])
    text += "".join(read(p) for p in re.findall(r"^source .*?(common/\w+\.sh)", text, re.M))
    module = re.search(r'-m (common\.\w+) "\$@"', text)
    if module:
        text += read(module.group(1).replace(".", "/") + ".py")
    unread = [name for name in env if not re.search(rf"\b{name}\b", text)]
    assert not unread, f"{args[0]} reads no {', '.join(unread)}"
    if module:
        return ["-m", module.group(1), *args[1:]]
    if re.search(r'python3? "\$@"', text):
        return args[1:]
    assert len(args) == 1, f"{args[0]} hands {args[1:]} to nothing this test can check"
    return None


def python_command(args):
    """`X.py flags` or `-m common.X flags`: the file exists and its parser takes the
    flags. A module of another package (pytest, torch's) is not the suite's."""
    if args[0] == "-m":
        if not args[1].startswith("common."):
            return
        path, flags = args[1].replace(".", "/") + ".py", args[2:]
    else:
        path, flags = args[0], args[1:]
    assert os.path.isfile(os.path.join(ROOT, path)), f"{path}: no such file"
    tree = ast.parse(read(path))
    if not any(isinstance(n, ast.FunctionDef) and n.name == "get_args_parser" for n in tree.body):
        assert not flags, f"{path} has no get_args_parser() to check {flags} against"
        return
    parse(script_parser(path), flags)


@functools.cache
def script_parser(path):
    if path.startswith("common/"):
        return importlib.import_module(path[:-3].replace("/", ".")).get_args_parser()
    return load_script(path).get_args_parser()


def parse(parser, flags):
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args(flags)
        except SystemExit as e:
            assert e.code in (0, None), f"{' '.join(flags)}: {said.getvalue().strip()}"
    return argparse.Namespace()  # --help, answered


def test_the_cases_table_is_the_registry():
    rows = [row for _, rows in tables(section(PAGES["README.md"], "The cases")) for row in rows]
    assert rows[0] == ["model", "scripts", "training recipe (defaults)", "inference weights"]
    assert len(rows[1:]) == len(cases.MODELS)
    for row, model in zip(rows[1:], cases.MODELS):
        title, scripts, recipe, weights = row
        assert title == model.title
        assert re.findall(r"`([^`]+)`", scripts) == [model.script(k) for k in cases.KINDS]
        assert weights == f"`{model.infer_weights}`"
        assert model.train_weights is None or f"`{model.train_weights}`" in recipe


def test_every_table_of_the_models_names_each_model_once():
    seen = 0
    for page, text in PAGES.items():
        for _, rows in tables(text):
            if rows[0][0] == "model":
                assert [r[0] for r in rows[1:]] == [m.title for m in cases.MODELS], page
                seen += 1
    assert seen >= 4  # the README's cases, and recipes.md's sizes, differences, FLOPs


def test_the_module_map_names_every_module_of_common():
    layout = section(PAGES["README.md"], "Layout")
    names = [os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "common", "*"))
             if p.endswith((".py", ".sh", ".sbatch")) and not p.endswith("__init__.py")]
    assert [n for n in names if not re.search(rf"^\s+{re.escape(n)} ", layout, re.M)] == []
    assert [f for f in cases.folders() if f"{f}/" not in layout] == []


def test_every_test_the_docs_name_is_there():
    """`test_x.py::test_y, ::test_z`: the file is there and holds each test named after
    it on the line; a test named alone is in some file."""
    every_file = glob.glob("test_*.py", root_dir=os.path.join(ROOT, "tests"))
    named = 0
    for page, text in PAGES.items():
        for line in text.splitlines():
            current = None
            for word in re.findall(r"test_\w+(?:\.py)?", line):
                if word.endswith(".py"):
                    current = word
                    assert os.path.isfile(os.path.join(ROOT, "tests", word)), f"{page}: {word}"
                    continue
                where = [current] if current else every_file
                assert any(f"def {word}(" in read(f"tests/{f}") for f in where), \
                    f"{page}: no test {word} in {' '.join(where)}"
                named += 1
    assert named > 30


def latest_bench(comparison):
    """The newest bench record under results/cpu-2core/ that ran `comparison`."""
    found = [p for p in sorted(glob.glob("results/cpu-2core/bench-*.json", root_dir=ROOT))
             if comparison in json.loads(read(p))["settings"]["only"]]
    return found[-1]


def test_the_performance_page_shows_the_latest_record_of_each_comparison():
    text = PAGES["docs/performance.md"]
    shown = set()
    for start, rows in tables(text):
        if rows[0][0] != "comparison":
            continue
        named = re.findall(r"results/cpu-2core/bench-[\w-]+\.json", text[:start])
        assert named, "a bench table that names no record"
        record = json.loads(read(named[-1]))
        _, printed = next(tables(record["table"] + "\n"))
        for row in rows[1:]:
            assert row in printed, f"{named[-1]} has no row {row[0]}"
            comparison = re.match(r"\w+", row[0]).group()
            assert named[-1] == latest_bench(comparison), \
                f"{row[0]}: {latest_bench(comparison)} is newer than {named[-1]}"
            shown.add(comparison)
    assert shown >= {"harness", "loader", "models", "engine", "train_compile"}
