"""How much of the device's speed the suite's figures keep: our code against references,
both sides run in this process tree, alternating, in `--repeat` rounds (medians).

    python -m common.bench                      # every comparison, sizes for this device
    python -m common.bench --only loader models # some of: harness loader decode models engine
    python -m common.bench --only engine --models resnet50
    python -m common.bench --image-size 224 --batch-size 256 --precision amp

    harness  resnet50/train.py --synthetic p_core / a bare loop (forward, loss, backward,
             optimizer step) of the same model, batch, precision and device    goal >= 0.98
    loader   images/s of our training loader (uint8 crops in the workers, normalised as
             a batch on the device) / the classic PIL + ToTensor + Normalize loader, on
             the same generated ~500x375 JPEGs with the same workers             goal >= 1.5
    decode   images/s of our training loader's batches ready on the device, the JPEGs
             decoded on the device (--decode device) / in the workers (--decode host),
             the same JPEGs, workers and crops                          reported, no goal
    models   our ViT-B/16 / torchvision vit_b_16 and our BiT-M-R152x2 / timm's
             resnetv2_152x2_bit, a training step and an inference step          goal >= 1.0
    engine   each <folder>/infer.py: the engine's rate against eager's in the same run
             (p_infer_core / p_val_core), with the build time, and the room the device
             leaves: its matmul rate over the FLOP/s eager already reaches
                                        goal: the model's engine_goal (common/cases.py)
    train_compile  each <folder>/train.py --synthetic: p_core with --compile / without,
             and after how many steps the compile time is paid back        reported, no goal

Each round runs both sides back to back, so a round's ratio compares them on the
machine as it was then; the table gives the range of those ratios beside the ratio of
the medians. A verdict is `met` only when every round reaches the goal, `NOT met` when
none does, and `within noise` when the rounds fall on both sides of it: on a shared or
throttling machine that is the honest answer. The table is printed and written with
the settings to `--out` as JSON.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from common import cases
from common.errors import UserError
from common.files import check_writable, write_json
from common.flags import Parser, non_negative_int, positive_int
from common.precision import PRECISIONS, choices_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPARISONS = ("harness", "loader", "decode", "models", "engine", "train_compile")
MODELS = cases.folders()  # a model is named by its folder here, in rows and flags


def defaults_for(dev_type):
    """Sizes that finish in minutes: full size on an accelerator, small on a CPU."""
    if dev_type == "cpu":
        return dict(image_size=64, batch_size=16, model_batch_size=4, precision="fp32",
                    channels_last=False, steps=30, model_steps=6, warmup=2, loader_batches=40,
                    matmul_size=2048)
    return dict(image_size=224, batch_size=256, model_batch_size=64, precision="amp",
                channels_last=True, steps=50, model_steps=20, warmup=10, loader_batches=30,
                matmul_size=8192)


def get_args_parser():
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
               allow_abbrev=False)
    p.add_argument("--only", nargs="+", choices=COMPARISONS, default=list(COMPARISONS))
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                   help="the models of the engine and train_compile comparisons")
    p.add_argument("--repeat", type=positive_int, default=5,
                   help="rounds of each comparison (medians and the range of their ratios)")
    p.add_argument("--workers", type=non_negative_int, default=os.cpu_count() or 1,
                   help="loader workers, the same for both loaders (default: %(default)s)")
    # the sizes depend on the device, known only once torch is loaded: filled in by main
    cpu, accelerator = defaults_for("cpu"), defaults_for("accelerator")
    for key, value in cpu.items():
        kind = type(value)
        sizes = f"default: {value} on a CPU, {accelerator[key]} on an accelerator"
        if kind is bool:
            p.add_argument(f"--{key.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                           default=None, help=sizes)
        elif key == "precision":
            p.add_argument("--precision", choices=choices_for("training"), default=None,
                           help=sizes)
        else:
            p.add_argument(f"--{key.replace('_', '-')}", default=None, help=sizes,
                           type=non_negative_int if key == "warmup" else positive_int)
    p.add_argument("--out", default="runs", help="directory for the JSON result")
    p.add_argument("--bare-loop", help=argparse.SUPPRESS)  # the reference side of `harness`
    p.add_argument("--engine-pays", nargs=2, metavar=("MODEL", "IMAGES"),
                   help="print compile or eager, and why, for a pass over IMAGES images "
                        "of MODEL here (run_all.sh's quick mode asks)")
    return p


if __name__ == "__main__":  # flags first: --help and a mistyped flag answer before torch loads
    args = get_args_parser().parse_args()

import torch
import torchvision
from tabulate import tabulate

from common import device, optim
from common.bench_input import decode, loader  # noqa: F401  (comparisons main() finds by name)
from common.bench_rounds import alternate, row, timed_rate


# 1. harness overhead

def bare_loop(image_size, batch_size, precision, channels_last, steps, warmup):
    """images/s of the plainest ResNet50 training loop on a batch made once on the device:
    forward, loss, backward, optimizer step, timed from a synchronised start to a
    synchronised end."""
    dev = device.select()
    precision = PRECISIONS[precision]  # the flags carry its name
    dev.set_precision(precision)
    dev.tune_for_fixed_shapes()  # as dist.start does for our side
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=1000).to(dev.torch_device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch_size, 3, image_size, image_size, device=dev.torch_device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch_size,), device=dev.torch_device)
    # the implementation our scripts pick, so that the ratio is the harness's alone
    optimizer = optim.make(torch.optim.SGD, model.parameters(), "auto", dev, lr=0.1,
                           momentum=0.9, weight_decay=1e-4)
    scaler = dev.grad_scaler(precision)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with dev.autocast(precision):
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return timed_rate(step, steps, warmup, dev, batch_size)


def _python(*args, timeout=1800, cold_cache_in=None):
    """Run a script of the suite; `cold_cache_in`: a fresh directory for inductor's
    on-disk cache, so that a compilation is timed as a machine's first, not served from
    an earlier run's cache."""
    env = None
    if cold_cache_in is not None:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cold_cache_in, "inductor")}
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def _record(out_dir):
    (name,) = [f for f in os.listdir(out_dir) if f.endswith(".json")]
    with open(os.path.join(out_dir, name)) as f:
        return json.load(f)


def harness(a):
    flags = dict(image_size=a.image_size, batch_size=a.batch_size, precision=a.precision,
                 channels_last=a.channels_last, steps=a.steps, warmup=a.warmup)

    def ours():
        with tempfile.TemporaryDirectory() as out:
            _python("resnet50/train.py", "--synthetic", "--image-size", a.image_size,
                    "--batch-size", a.batch_size, "--precision", a.precision,
                    "--channels-last" if a.channels_last else "--no-channels-last",
                    "--synthetic-steps", a.steps + a.warmup, "--max-steps", a.steps + a.warmup,
                    "--warmup-steps", a.warmup, "--monitor-interval", 0, "--out", out)
            return _record(out)["figures"]["p_core"]

    def bare():
        out = _python("-m", "common.bench", "--bare-loop", json.dumps(flags))
        return json.loads(out.strip().splitlines()[-1])["images_per_s"]
    mine, ref = alternate(a.repeat, ours, bare)
    return [row("harness: resnet50/train.py p_core / bare loop", mine, ref, "img/s", 0.98,
                f"ResNet50 {a.precision} bs {a.batch_size} at {a.image_size} px")]


# 3. our hand-written models against their references

def step_rate(model, x, y, train, steps, warmup, dev, precision):
    """images/s of training steps (SGD) or inference calls of `model` on one batch."""
    if train:
        model.train()
        optimizer = optim.make(torch.optim.SGD, model.parameters(), "auto", dev, lr=1e-3,
                               momentum=0.9)

        def step():
            with dev.autocast(precision):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.inference_mode(), dev.autocast(precision):
                model(x)
    return timed_rate(step, steps, warmup, dev, x.shape[0])


def reference_models(image_size):
    """(name, ours, ours as its infer.py runs it, reference or None, why there is none)"""
    from bit.model import bit, fold_weight_standardization
    from vit.model import vit_b_16
    pairs = [("ViT-B/16 vs torchvision vit_b_16", lambda: vit_b_16(image_size=image_size),
              lambda m: m, lambda: torchvision.models.vit_b_16(image_size=image_size), "")]
    try:
        import timm
        ref, why = (lambda: timm.create_model("resnetv2_152x2_bit", pretrained=False)), ""
    except ImportError:
        ref, why = None, "timm is not installed (pip install timm)"
    pairs.append(("BiT-M-R152x2 vs timm resnetv2_152x2_bit", lambda: bit("BiT-M-R152x2"),
                  fold_weight_standardization, ref, why))
    return pairs


def models(a):
    dev = device.select()
    precision = PRECISIONS[a.precision]
    dev.set_precision(precision)
    dev.tune_for_fixed_shapes()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.model_batch_size, 3, a.image_size, a.image_size, generator=g)
    y = torch.randint(0, 1000, (a.model_batch_size,), generator=g)
    x, y = x.to(dev.torch_device), y.to(dev.torch_device)
    rows = []
    for name, make_ours, for_inference, make_ref, why in reference_models(a.image_size):
        for train in (True, False):
            what = f"models: {name}, {'training step' if train else 'inference'}"
            if make_ref is None:
                rows.append(row(what, None, None, "img/s", 1.0, why))
                continue
            torch.manual_seed(0)
            ours_m, ref_m = make_ours(), make_ref().to(dev.torch_device)
            ours_m = (ours_m if train else for_inference(ours_m)).to(dev.torch_device)

            def run_ours(m=ours_m, t=train):
                return step_rate(m, x, y, t, a.model_steps, a.warmup, dev, precision)

            def run_ref(m=ref_m, t=train):
                return step_rate(m, x, y, t, a.model_steps, a.warmup, dev, precision)
            mine, ref = alternate(a.repeat, run_ours, run_ref)
            rows.append(row(what, mine, ref, "img/s", 1.0,
                            f"{a.precision} bs {a.model_batch_size} at {a.image_size} px"))
            del ours_m, ref_m
    return rows


# 4. the inference engine against eager

def matmul_rate(dev, dtype, n, calls=5, per_call=4):
    """FLOP/s of this device's n x n matmul in `dtype`: the fastest of `calls` timings,
    after one untimed, of `per_call` matmuls between two synchronisations (on an
    accelerator one matmul is microseconds, too short to time alone). About the rate a
    model's arithmetic runs at when nothing else costs: a convolution kernel can pass it
    by a few per cent, not by the factors an engine's goal is stated in."""
    a = torch.randn(n, n, device=dev.torch_device).to(dtype)
    b = torch.randn(n, n, device=dev.torch_device).to(dtype)
    times = []
    for _ in range(calls + 1):
        dev.synchronize()
        t0 = time.perf_counter()
        for _ in range(per_call):
            a @ b
        dev.synchronize()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 * per_call / min(times[1:])


def engine_bound(flops_per_image, eager_rate, ceiling):
    """How far eager is from the matmul rate: its share of it, and the speed-up over
    eager that rate leaves room for (rate / eager's FLOP/s) for an engine doing the
    same arithmetic."""
    eager = flops_per_image * eager_rate
    return {"eager_share": eager / ceiling, "bound": ceiling / eager}


def _engine_run(a, model, precision):
    """The record's figures of one <model>/infer.py run: an eager pass, then the engine
    built and its pass, back to back in one process."""
    with tempfile.TemporaryDirectory() as out:
        _python(f"{model}/infer.py", "--synthetic", "--image-size", a.image_size,
                "--batch-size", a.batch_size, "--precision", precision,
                "--synthetic-batches", a.steps, "--repeat", 1,
                "--latency-calls", 5, "--monitor-interval", 0, "--out", out,
                cold_cache_in=out)
        return _record(out)["figures"]


def engine(a):
    """Per model, `--repeat` runs of its infer.py (a round each: both passes of a run
    see the machine as it was then), with the build time and the matmul bound."""
    dev = device.select()
    # fp32, and fp16 as seed 001 serves it, where the device has it
    precisions = [p for p in ("fp32", "fp16") if p in dev.supported_precisions()]
    dev.set_precision(PRECISIONS["fp32"])  # the rate of fp32 as the scripts run it: no tf32
    ceilings = {p: matmul_rate(dev, PRECISIONS[p].model_dtype, a.matmul_size)
                for p in precisions}
    rows = []
    for model in a.models:
        for precision in precisions:
            runs = [_engine_run(a, model, precision) for _ in range(a.repeat)]
            r = row(f"engine: {model}/infer.py compile / eager",
                    [f["p_infer_core"] for f in runs], [f["p_val_core"] for f in runs],
                    "img/s", cases.by_folder(model).engine_goal)
            build_s = statistics.median(f["build_s"] for f in runs)
            bound = engine_bound(runs[0]["flops_per_image"], r["reference"],
                                 ceilings[precision])
            r["note"] = (f"{precision} bs {a.batch_size} at {a.image_size} px; build "
                         f"{build_s:.0f} s; {_engine_words(runs[0].get('engine_options') or {})}"
                         f"; eager at {bound['eager_share']:.0%} of the {precision} matmul "
                         f"rate ({ceilings[precision] / 1e9:.0f} GFLOP/s), room for about "
                         f"{bound['bound']:.2f}x")
            r.update(model=model, precision=precision, build_s=build_s,
                     matmul_flops=ceilings[precision], **bound)
            rows.append(r)
    return rows


# 5. --compile for training against eager

def train_compile(a):
    """p_core of each train.py with --compile against without, one round of each (a
    compilation takes minutes on a cpu), and the steps it takes to pay its compile time
    back (none where it is not faster)."""
    rows = []
    steps = a.model_steps * 2
    for model in a.models:
        def side(*flags, model=model):
            with tempfile.TemporaryDirectory() as out:
                _python(f"{model}/train.py", "--synthetic", "--image-size", a.image_size,
                        "--batch-size", a.model_batch_size, "--precision", a.precision,
                        "--synthetic-steps", steps + a.warmup, "--max-steps", steps + a.warmup,
                        "--warmup-steps", a.warmup, "--monitor-interval", 0, "--out", out,
                        # a throughput run: no accumulation up to a recipe's global batch
                        "--grad-accum", 1, *flags, cold_cache_in=out)
                return _record(out)["figures"]
        eager, compiled = side(), side("--compile")
        saved = a.model_batch_size / eager["p_core"] - a.model_batch_size / compiled["p_core"]
        pays = (f"paid back after {compiled['compile_s'] / saved:.0f} steps" if saved > 0
                else "never paid back: not faster")
        rows.append(row(f"train_compile: {model}/train.py --compile / eager",
                        compiled["p_core"], eager["p_core"], "img/s", None,
                        f"{a.precision} bs {a.model_batch_size} at {a.image_size} px, {steps} "
                        f"steps; compile {compiled['compile_s']:.0f} s, {pays}"))
        rows[-1].update(model=model, compile_s=compiled["compile_s"])
    return rows


def _load(path):
    with open(path) as f:
        return json.load(f)


def engine_pays(model, images, results=os.path.join(ROOT, "results")):
    """("compile" or "eager", why) for one inference pass over `images` images of
    `model` on this device: the engine only where building it costs less than it saves,
    as the newest engine bench of a device of this label under `results` measured it."""
    label = device.select().label
    files = sorted(glob.glob(os.path.join(glob.escape(results), "*", "bench-*.json")),
                   key=os.path.basename)
    rows = [r for b in map(_load, files) if b["device"]["label"] == label for r in b["rows"]
            if r.get("model") == model and r.get("precision") == "fp32" and r["ratio"]
            and r.get("build_s") is not None]
    if not rows:
        return "eager", f"no engine bench of a {label} under {results} to weigh its build against"
    r = rows[-1]
    saved = images / r["reference"] - images / r["ours"]
    if r["build_s"] < saved:
        return "compile", f"building ({r['build_s']:.0f} s) saves {saved:.0f} s on {images} images"
    return "eager", (f"building the engine took {r['build_s']:.0f} s here and would save "
                     f"{max(saved, 0):.1f} s on {images} images")


def _engine_words(options):
    return ", ".join(f"{k} {v}" for k, v in options.items() if k != "backend")


def main(argv=None, args=None):
    p = get_args_parser()
    a = args or p.parse_args(argv)
    if a.engine_pays:
        model, images = a.engine_pays
        if model not in cases.folders() or not images.isdigit():
            p.error(f"--engine-pays {model} {images}: give a model ({', '.join(cases.folders())}) "
                    f"and a whole number of images")
        print(*engine_pays(model, int(images)))
        return 0
    if not a.bare_loop:
        try:
            check_writable(a.out)  # before minutes of measuring, not after
        except UserError as e:
            p.error(str(e))
    if a.bare_loop:
        print(json.dumps({"images_per_s": bare_loop(**json.loads(a.bare_loop))}))
        return 0
    dev = device.select()
    for key, value in defaults_for(dev.type).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    rows = []
    for name in a.only:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        rows += globals()[name](a)
    num = lambda v: "" if v is None else f"{v:.3g}" if v < 100 else f"{v:.0f}"  # noqa: E731
    spread = lambda r: (f"{min(r):.2f}-{max(r):.2f}" if len(r) > 1 else "")  # noqa: E731
    table = tabulate([[r["comparison"], num(r["ours"]), num(r["reference"]), r["unit"],
                       "" if r["ratio"] is None else f"{r['ratio']:.3f}", spread(r["rounds"]),
                       "" if r["goal"] is None else f">= {r['goal']}", r["verdict"], r["note"]]
                      for r in rows],
                     headers=["comparison", "ours", "reference", "unit", "ratio", "rounds",
                              "goal", "verdict", "settings / why empty"],
                     tablefmt="github", disable_numparse=True)
    print(f"\n{dev.label} ({dev.name}), torch {torch.__version__}, median of {a.repeat}\n")
    print(table)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(a.out, f"bench-{dev.label.replace(' ', '_')}-{stamp}.json")
    write_json({"case": "bench", "device": {"name": dev.name, "label": dev.label},
                "torch": torch.__version__, "settings": vars(a), "rows": rows,
                "command": " ".join([sys.executable, "-m", "common.bench",
                                     *(argv or sys.argv[1:])]),
                "table": table}, path)
    print(f"\nresult: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(args=args))
