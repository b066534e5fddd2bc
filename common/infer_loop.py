"""The two inference passes of docs/METRICS.md, batch-1 latency, and the engines.

1. validation: the eager model in eval() and inference mode -> p_val_whole, p_val_core
2. inference: the engine (torch.compile by default, TensorRT where it imports, or
   eager) -> p_infer_whole, p_infer_core

Each pass goes over every validation image once (across ranks), after untimed warm-up
batches. *_whole is images over the wall time of the pass, loading included; *_core is
images over the summed device time from input-on-device to output-ready. Building the
engine (compilation) is timed on its own and is in neither.
"""
from __future__ import annotations

import contextlib
import sys
import time

import torch

from common import data, dist, history, left_behind, monitor, progress
from common.clocks import CoreTimer, percentiles, rate
from common.errors import UserError
from common.evaluate import Accuracy
from common.flops import flops_per_image, per_device_rate

ENGINES = ("compile", "tensorrt", "eager")


def _mark_step():
    # cuda graphs reuse output memory between calls; say where a new call begins. Only a
    # compiled engine has them, and the compiler has loaded its cuda-graph module by its
    # second call: an eager pass is spared the seconds that the module takes to load
    if "torch._inductor.cudagraph_trees" not in sys.modules:
        return
    mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    if mark is not None:
        mark()


def compile_mode_for(run, compile_mode=None):
    """--compile-mode, or the fastest for the device as the shim knows it: max-autotune
    (autotuned kernels, CUDA graphs, which batch-1 latency needs most) on CUDA; the
    default elsewhere, where autotuning costs minutes of build for little (see the
    README)."""
    return compile_mode or run.device.kind.compile_mode


def _freezing_supported():
    return hasattr(getattr(torch, "_inductor", None), "config") and \
        hasattr(torch._inductor.config, "freezing")


def engine_options(engine, run, *, compile_mode=None, freeze=True):
    """What the engine runs with, for the record: backend, mode, weight freezing, TF32."""
    if engine == "compile":
        options = {"backend": "inductor", "mode": compile_mode_for(run, compile_mode),
                   "freezing": bool(freeze)}
        if freeze and not _freezing_supported():
            options.update(freezing=False, freezing_note=f"torch {torch.__version__} has no "
                                                         f"inductor freezing: weights stay inputs")
        return options
    if engine == "tensorrt":
        # tensorrt allows tf32 unless told not to: fp32 means fp32 there too
        return {"backend": "torch_tensorrt",
                "enabled_precisions": str(run.precision.model_dtype),
                "disable_tf32": not run.precision.tf32}
    if engine == "eager":
        return {"backend": "eager"}
    raise UserError(f"--engine {engine}: unknown; choose one of {', '.join(ENGINES)}")


def build_engine(model, engine, run, *, compile_mode=None, freeze=True):
    """(the model as the engine runs it, its options). Compilation itself happens on the
    first calls, which must run inside building(options)."""
    options = engine_options(engine, run, compile_mode=compile_mode, freeze=freeze)
    if engine == "eager":
        return model, options
    if engine == "compile":
        return torch.compile(model, mode=options["mode"], dynamic=False), options
    try:
        import torch_tensorrt  # noqa: F401  (registers the backend)
    except ImportError:
        raise UserError("--engine tensorrt: torch_tensorrt does not import here; "
                        "install it or use --engine compile") from None
    return torch.compile(model, backend="torch_tensorrt", dynamic=False,
                         options={"enabled_precisions": {run.precision.model_dtype},
                                  "disable_tf32": options["disable_tf32"]}), options


def building(options):
    """The settings in force while the engine compiles, and only then: inductor's weight
    freezing (weights become constants: convolution weights pre-packed, batch norms
    folded), which a serving engine can do as inference weights never change."""
    if options.get("freezing"):
        return torch._inductor.config.patch(freezing=True)
    return contextlib.nullcontext()


def _prepare(normalize, dtype):
    return lambda images: normalize(images).to(dtype)


def warm_up(model, run, prep, image_size, sizes, calls):
    """`calls` untimed calls at each batch size, on blank images made here and copied as
    the loader's are: every shape a pass will see meets its first call (cudnn's algorithm
    search, a compilation) here, and no loader iteration is left behind with batches
    queued that the timed pass would first have to wait for."""
    with torch.inference_mode():
        for bs in sizes:
            blank = torch.zeros(bs, 3, image_size, image_size, dtype=torch.uint8)
            (x,) = data.to_device((blank,), run)
            for _ in range(calls):
                _mark_step()
                model(prep(x))


def timed_pass(model, loader, run, prep, warmup_batches, image_size, repeat=1, name="pass"):
    """One (or `repeat`) pass(es) over the loader: exact top-1/top-5 (common/evaluate.py)
    and the clocks."""
    dev = run.device
    run.phase = f"the end of the {name}"  # where its collectives are
    warm_up(model, run, prep, image_size, sorted(batch_sizes(loader)), warmup_batches)
    timer = CoreTimer(dev)
    accuracy = Accuracy(dev.torch_device)
    # the pass's line starts with its clock, after the warm-up batches
    tick = progress.pass_progress(run, name, progress.images_in(loader, run) * repeat)
    dev.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(repeat):
            for batch in loader:
                x, labels = data.to_device(batch, run)
                timer.begin()
                _mark_step()
                logits = model(prep(x))
                timer.end()
                accuracy.add(logits, labels)
                tick(accuracy.images * run.world_size)
    core = timer.total()
    dev.synchronize()
    t1 = time.perf_counter()
    whole = t1 - t0
    top1, top5, n = accuracy.over_ranks(run)
    whole, core = dist.max_all(run, [whole, core])
    tick(n, final=True)
    return {"images": n, "whole_s": whole, "core_s": core, "window": (t0, t1),
            "timed_batches": len(timer.step_times),
            "p_whole": rate(n, whole), "p_core": rate(n, core), "top1": top1, "top5": top5,
            **accuracy.hits,
            "batch_core_ms": {k: v * 1000 for k, v in percentiles(timer.step_times).items()}}


def batch1_latency(model, run, prep, image_size, calls, warmup=10):
    """p50/p90/p99 in ms of single-image calls, each timed from a synchronised start
    to a synchronised finish."""
    dev = run.device
    x = torch.randint(0, 256, (1, 3, image_size, image_size), dtype=torch.uint8,
                      device=dev.torch_device)
    times = []
    with torch.inference_mode():
        for i in range(warmup + calls):
            dev.synchronize()
            t0 = time.perf_counter()
            _mark_step()
            model(prep(x))
            dev.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return percentiles(times)


def batch_sizes(loader):
    """Every batch size this rank's loader yields (full, and the last partial one):
    none for an empty shard, one partial batch for a shard smaller than a batch."""
    n = len(loader.sampler) if getattr(loader, "sampler", None) is not None else None
    bs = getattr(loader, "batch_size", None)
    if n is None or bs is None:
        return {next(iter(loader))[0].shape[0]}
    return ({bs} if n >= bs else set()) | ({n % bs} if n % bs else set())


def seed_latency(p_infer_core, loader, run):
    """{latency_s}: the seed's time one image costs on one device at full batch, devices
    / p_infer_core. A run where some rank's shard holds less than one full batch has no
    such time: the figure is empty, and latency_why_empty says why."""
    images = len(loader.dataset) if getattr(loader, "dataset", None) is not None else None
    smallest = None if images is None else images // run.world_size  # ShardSampler's least
    if smallest is not None and smallest < loader.batch_size:
        return {"latency_s": None, "latency_why_empty": (
            f"no full batch on every rank: {images} images over {run.world_size} ranks "
            f"leave {smallest} on the smallest shard, under --batch-size {loader.batch_size}")}
    per_device = per_device_rate(p_infer_core, run.world_size)
    return {"latency_s": 1.0 / per_device if per_device else None}


def run_inference(run, args, model, loader, normalize):
    """Both passes and the batch-1 latency; returns the figures of the record. A rank
    that hangs leaves the others a record without figures and one line each
    (common/left_behind.py): a collective would wait for it again."""
    try:
        return _passes(run, args, model, loader, normalize)
    except Exception as e:
        if not (run.distributed and run.device.is_collective_timeout(e)):
            raise
        lost = left_behind.after_timeout(run, args.dist_timeout, run.phase)
        return {"status": "incomplete", "left_behind": lost.record(),
                "error": lost.line("an inference run keeps no state: the same command "
                                   "runs it again"),
                "why_empty": f"a collective timed out at {lost.waited_at}: the figures "
                             f"over every rank could not be gathered"}


def _passes(run, args, model, loader, normalize):
    """What run_inference measures, while every rank answers."""
    dev = run.device
    dtype = run.precision.model_dtype
    model = model.to(device=dev.torch_device, dtype=dtype).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prep = _prepare(normalize, dtype)
    flops = flops_per_image(model, args.image_size)
    dev.reset_peak_memory()
    mon = monitor.start(run, args)
    started = time.perf_counter()  # the history's clock

    progress.header(run, args, "inference", progress.loader_words(args, val=loader),
                    f"validation pass eager, inference pass through engine '{args.engine}'")
    val = timed_pass(model, loader, run, prep, args.warmup_batches, args.image_size,
                     args.repeat, name="validation pass (eager)")

    # build: compile for every shape the timed pass and the latency calls will use
    shapes = sorted(batch_sizes(loader) | {1})
    dist.print0(run, f"engine '{args.engine}': building for batches of {shapes} ...")
    run.phase = f"the build of engine '{args.engine}'"
    dev.synchronize()
    t0 = time.perf_counter()
    engine, options = build_engine(model, args.engine, run, compile_mode=args.compile_mode,
                                   freeze=args.freeze)
    with building(options):
        warm_up(engine, run, prep, args.image_size, shapes, 2)
    dev.synchronize()
    build_s = time.perf_counter() - t0
    (build_s,) = dist.max_all(run, [build_s])
    dist.print0(run, f"engine '{args.engine}': built in {build_s:.1f} s")

    infer = timed_pass(engine, loader, run, prep, args.warmup_batches, args.image_size,
                       args.repeat, name=f"inference pass ({args.engine})")
    latency = batch1_latency(engine, run, prep, args.image_size, args.latency_calls)
    memory = dist.memory_figures(run)
    monitor.stop(mon)
    # each pass over its own window; perf_counter windows mean nothing in a record
    windows = {"val": val.pop("window"), "infer": infer.pop("window")}
    passes = {name: monitor.summary(run, mon, windows[name], p["images"], args)
              for name, p in (("val", val), ("infer", infer))}
    timeline = {"monitor": history.monitor_series(mon, started),
                **{f"{name}_s": history.window_s(w, started) for name, w in windows.items()}}
    return {
        "images": val["images"] // args.repeat, "build_s": build_s, "engine": args.engine,
        "engine_options": options, **engine_against_eager(args.engine, val, infer),
        "flops_per_image": flops,
        "p_val_whole": val["p_whole"], "p_val_core": val["p_core"],
        "p_infer_whole": infer["p_whole"], "p_infer_core": infer["p_core"],
        **seed_latency(infer["p_core"], loader, run),  # on the engine
        "latency_b1_ms": latency,
        "acc_val": val["top1"], "acc_infer": infer["top1"],
        "acc5_val": val["top5"], "acc5_infer": infer["top5"],
        "val_pass": val, "infer_pass": infer,
        **memory, "monitor": passes, "history": timeline,
    }


def engine_against_eager(engine, val, infer):
    """The engine's speed over eager's (core rates of the same run), and a word when the
    engine is the slower: it is never silently so."""
    if engine == "eager" or not val["p_core"] or not infer["p_core"]:
        return {"engine_speedup": None, "engine_slower": None}
    speedup = infer["p_core"] / val["p_core"]
    slower = (f"engine slower than eager: {infer['p_core']:.1f} against "
              f"{val['p_core']:.1f} img/s" if speedup < 1 else None)
    return {"engine_speedup": speedup, "engine_slower": slower}
