"""How the code is laid out: imports run one way (entry script -> loop, record -> clocks,
checkpoint, monitor -> dist, exits -> device -> flags, recipe, tables), a model folder needs only itself and common/,
no function of common/ is too long to hold in one's head, and flags are read as args.x."""
import ast
import glob
import os

import pytest
from conftest import ROOT

from common import cases

PACKAGES = ("common", *cases.folders())
# each layer imports only from the layers after it, never from one before
LAYERS = [(*(script[:-3].replace("/", ".") for script in cases.scripts()),
           "common.report", "common.bench", "common.gpu_checks"),
          ("common.scripts",),
          ("common.train_loop", "common.infer_loop", "common.record"),
          ("common.clocks", "common.checkpoint", "common.monitor", "common.evaluate"),
          ("common.dist", "common.exits"),
          ("common.device",),
          # no torch: the shim's data, the registry, the flags, the recipe's arithmetic, the
          # tables, the generated dataset (a record says whether it trained on one)
          ("common.kinds", "common.cases", "common.cli", "common.recipe", "common.tables",
           "common.columns", "common.spread",
           "common.make_dataset")]
LONGEST_FUNCTION = 60  # lines


def modules():
    """{module name: path} of every module of the suite (tests aside)."""
    found = {}
    for package in PACKAGES:
        for path in glob.glob(os.path.join(ROOT, package, "*.py")):
            found[f"{package}.{os.path.basename(path)[:-3]}"] = path
    return found


def imports(path, known):
    """The suite's modules that `path` imports anywhere, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
            found.update(n for n in names if n in known)
            if node.module in known:
                found.add(node.module)
    return found


def graph():
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycle(g):
    """One import cycle of the graph as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(g[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(g):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def reach(g, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in g[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back():
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found)


@pytest.mark.parametrize("lower", range(1, len(LAYERS)))
def test_imports_run_down_the_layers(lower):
    g = graph()
    above = {m for layer in LAYERS[:lower] for m in layer}
    for module in LAYERS[lower]:
        upward = reach(g, module) & above
        assert not upward, f"{module} imports {sorted(upward)}, which sit above it"


def test_a_model_folder_needs_only_itself_and_common():
    for module, imported in graph().items():
        package = module.split(".")[0]
        if package == "common":
            continue  # common.bench measures the models: it is no part of a copied case
        for other in imported:
            assert other.split(".")[0] in (package, "common"), f"{module} imports {other}"
            assert not other.endswith((".train", ".infer")), \
                f"{module} imports the entry script {other}"


def test_every_function_of_common_is_short():
    for path in glob.glob(os.path.join(ROOT, "common", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                assert lines <= LONGEST_FUNCTION, \
                    f"{os.path.basename(path)}:{node.lineno} {node.name} is {lines} lines"


def test_common_reads_flags_as_args_x():
    """A flag read with getattr(args, name, default) would hide a mistyped name."""
    for path in glob.glob(os.path.join(ROOT, "common", "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
                first = node.args[0]
                assert not (isinstance(first, ast.Name) and first.id == "args"), \
                    f"{os.path.basename(path)}:{node.lineno} reads a flag with getattr"
