"""The definitions live in the repository, and every pointer to them resolves."""
import os
import re

from conftest import ROOT

from common import tables

METRICS = os.path.join(ROOT, "docs/METRICS.md")


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
            target = os.path.normpath(os.path.join(os.path.dirname(path), m.group()))
            assert m.group().endswith("docs/METRICS.md") and (
                os.path.isfile(target) or os.path.isfile(os.path.join(ROOT, m.group()))), \
                f"{os.path.relpath(path, ROOT)}: {m.group()} does not resolve"


def test_every_table_column_and_record_figure_is_defined():
    with open(METRICS) as f:
        text = f.read()
    names = set(tables.TRAIN_COLUMNS) | set(tables.INFER_COLUMNS) - {"bs"}
    names |= {"e2e_time", "compile_s", "build_s", "latency_b1_ms", "flops_per_image", "mfu",
              "tflops", "energy_per_image_j", "power_mean_w", "why_empty", "fix_hp"}
    assert not {n for n in names if n not in text}


def test_readme_starts_a_vendor_with_device_dataset_synthetic_then_real_data():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    steps = ["python -m common.device", "python -m common.make_dataset",
             "train.py --synthetic", "--data-dir /tmp/tiny", "--data-dir /data/imagenet"]
    where = [readme.find(s) for s in steps]
    assert -1 not in where and where == sorted(where)
    assert where[0] < readme.find("## Two commands")
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        if not link.startswith("http"):
            assert os.path.exists(os.path.join(ROOT, link)), link
    assert os.path.isfile(os.path.join(ROOT, "results", "README.md"))
