"""What results/gpu_checks.sh runs: the quick plan, each step with its expected seconds
and how they were estimated, and the full set; what each step's records must show.

The quick plan runs in order of value: ResNet50 training (the seeds' 1x1 class),
ResNet50 inference eager then through the engine (seed 001), the other training cases,
real JPEGs with a partial last batch, and the input path decoding on the host and on
the device. On a CPU the same steps run at the smallest sizes that still take each
one's code path: a rehearsal of the commands, not a measurement.

How the seconds were estimated, for one H200 SXM (an H100 SXM has the same arithmetic;
dense peaks from the data sheet: tf32 494.7, fp16 989.4 TFLOP/s). A step is its start-up
plus its work. Start-up (python, torch, the device's context, the model, its FLOP count
on the meta device, cuDNN's search in the first steps, the record) is planned at 15 s a
script: the suite has never run on a GPU, so this is a first guess, for the first run's
timings.txt to replace. Work is images x FLOPs per image (forward: ResNet50 8.18 G,
MobileNetV2 0.60 G, ViT-B/16 35.13 G, BiT-M-R152x2 420.7 G at 480 px; a training step
is three forwards) over a stated share of the peak; a training step's estimate stands
beside its model's entry in common/cases.py (`GpuStep`). Each share is set below the one the
seeds' A100 rows reached: the H200's peaks are 3.2x the A100's but its memory bandwidth
only 2.4x, and the memory-bound layers (normalisations, activations) gain only the
latter. An engine build is planned at 25 s for each batch shape it compiles (inductor's
compile of a frozen torchvision ResNet50 for one shape is of that order on a 16-core
host; reduce-overhead adds no autotuning search), and infer.py builds one for the full
batch, one for a last partial batch, and one for batch 1. The CPU figures were measured
on a 2-core CPU.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from common import cases
from common.deadline import Step

PY = sys.executable

# a precision the device lacks runs as the nearest it has: tf32 is fp32 with a shorter
# mantissa, bf16 the other 16-bit float (a CPU has only fp32 and bf16)
STAND_INS = {"tf32": "fp32", "amp": "bf16", "fp16": "bf16"}
# the engine's compile mode, as quick builds it: the shim's max-autotune times candidate
# kernels for minutes per batch shape; reduce-overhead keeps its CUDA graphs (most of a
# batch-1 call's time is launch overhead) without that search; default is neither
QUICK_COMPILE_MODES = {"max-autotune": "reduce-overhead", "max-autotune-no-cudagraphs": "default"}
# the CPU rehearsal's inference sizes; training runs there at 32 px, batch 2, 1 + 2 steps
SMALL_INFER = ["--image-size", 32, "--warmup-batches", 1, "--latency-calls", 2]


class Plan:
    """The steps for one device (as the probe in common/gpu_checks.py saw it), their
    records under `out`, the datasets they write under `data`."""

    def __init__(self, dev, out, data):
        self.dev, self.out, self.data = dev, out, data
        self.cpu = dev["type"] == "cpu"
        self.stand_ins = {}  # precision planned -> precision run, where they differ
        self.compile_mode = QUICK_COMPILE_MODES.get(dev["compile_mode"], dev["compile_mode"])

    def seconds(self, device_s, cpu_s):
        """A step's expected seconds: on an H100/H200-class device, or on a CPU."""
        return cpu_s if self.cpu else device_s

    def precision(self, name):
        if name in self.dev["precisions"]:
            return name
        self.stand_ins[name] = STAND_INS.get(name, name)
        return self.stand_ins[name]

    def settings(self, mode):
        """What timings.txt says of the sizes, engines and precisions this device got."""
        lines = []
        if self.cpu:
            lines.append("a CPU rehearsal at small sizes (32 px, batch 2, 1 warm-up and 2 "
                         "timed steps, BiT as BiT-M-R50x1), engines eager (a build takes "
                         "about 40 s on a CPU); the seconds planned are a 2-core CPU's")
        elif mode == "quick":
            lines.append(f"engines: --compile-mode {self.compile_mode}; the shim's "
                         f"{self.dev['compile_mode']} would time candidate kernels for "
                         f"minutes per batch shape")
        stood_in = "; ".join(f"{a} ran as {b}" for a, b in self.stand_ins.items())
        lines.append(f"precisions: {self.dev['label']} runs {', '.join(self.dev['precisions'])}"
                     f": {stood_in}" if stood_in else "precisions: as planned")
        return lines

    def folder(self, name):
        return os.path.join(self.out, name)

    def engine(self):
        if self.cpu:  # a build takes about 40 s on a CPU, half the rehearsal's deadline
            return ["--engine", "eager"]
        return ["--engine", "compile", "--compile-mode", self.compile_mode]

    def quick(self):
        odd, photos = os.path.join(self.data, "odd-data"), os.path.join(self.data, "photo-data")
        resnet50 = cases.by_folder("resnet50")
        return [
            # a. ResNet50 training, 224 px, bs 256 (the seeds' 1x1 class), its registry
            # step under tf32 too: 60 steps x 256 = 15,360 images x 24.5 GFLOP = 377 TFLOP.
            # tf32 at 8% of its peak (39.6 TFLOP/s; the seeds' A100 row, 799 img/s, is
            # 12.6% of the A100's 156): 9.5 s
            self.train(resnet50, "tf32"),
            self.train(resnet50, "amp"),
            # b. ResNet50 inference, bs 256, eager then the engine (seed 001): 2 passes x
            # (30 + 5 warm-up) batches x 256 = 17,920 images x 8.18 GFLOP = 147 TFLOP. fp16
            # at 10% of its peak (99 TFLOP/s; the seed's A100 eager fp16, 4,391 img/s, is
            # 11.5% of its 312): 1.5 s; the engine for batches 256 and 1: 2 x 25 s
            self.infer_synthetic("fp16", self.seconds(70, 5), build_s=50),
            # tf32 at 8% of its peak (39.6 TFLOP/s): 3.7 s; the build as fp16's
            self.infer_synthetic("tf32", self.seconds(70, 5), build_s=50),
            # c. the other training cases under amp, each its registry step (estimated
            # there, beside the model)
            *(self.train(m, "amp") for m in cases.MODELS if m is not resnet50),
            # d. real JPEGs with a last batch of 1: 5 classes x 13 = 65 images in batches of
            # 32, 32 and 1; 70 small JPEGs to write: 3 s
            self.dataset("odd-data", 5, 13, 40 if self.cpu else 256, self.seconds(3, 2)),
            # fp32, strict, so that eager and the engine agree to the last bit; the engine
            # for batches 32 and 1 (1 is batch-1 latency's too): 2 x 25 s
            self.real_pass(odd, 65, self.seconds(70, 6), build_s=50),
            # e. the input path: 8 x 65 = 520 JPEGs of about 500x375, written at 16 ms
            # each (as on a 2-core CPU): 8.3 s
            self.dataset("photo-data", *((2, 4) if self.cpu else (8, 64)), 440,
                         self.seconds(10, 2)),
            # eager, both passes, 4 repeats: 2 x 4 x 512 = 4,096 images decoded by 8
            # workers at ~250 img/s each (the loader bench here: 645 img/s on 2): 2 s,
            # and the workers' start: 3 s
            self.decode_pass(photos, "host", self.seconds(20, 6)),
            self.decode_pass(photos, "device", self.seconds(20, 6)),
            # the bench's comparison writes its own 128 x 9 = 1,152 such JPEGs (18 s) and
            # decodes 2 rounds x 2 sides x 8 batches x 128 = 4,096 of them (2 s)
            self.bench("bench-decode", ["--only", "decode", *(
                ["--repeat", 1, "--batch-size", 4, "--loader-batches", 2, "--workers", 1]
                if self.cpu else ["--repeat", 2, "--batch-size", 128, "--loader-batches", 8])],
                self.seconds(35, 8)),
        ]

    def full(self):
        """The full set, untimed: every precision and model at full size, the batch
        searches and profiles, every engine, all devices where there are several."""
        train = self.folder("train")
        # throughput runs: one batch per step (ViT's recipe would accumulate up to 4096)
        steps = ["--synthetic-steps", 100, "--max-steps", 100, "--warmup-steps", 20,
                 "--print-freq", 20, "--grad-accum", 1, "--out", train]
        found = [self.step(f"resnet50-train-{p}", "train", "resnet50/train.py", "--synthetic",
                           "--batch-size", 256, "--precision", self.precision(p),
                           *steps) for p in ("fp32", "tf32", "amp")]
        # the four cases at 224 under amp, the largest batch that fits, where the time goes
        found += [self.step(f"{m}-train-amp-auto", "train", f"{m}/train.py", "--synthetic",
                            "--image-size", 224, "--precision", self.precision("amp"),
                            "--batch-size", "auto", "--profile", *steps)
                  for m in cases.folders()]
        for model, p, batch, batches in (("resnet50", "fp16", 256, 100),
                                         ("resnet50", "fp32", 256, 100),
                                         ("mobilenetv2", "fp16", 256, 100),
                                         ("vit", "fp16", 256, 50), ("bit", "fp16", 64, 20)):
            found.append(self.step(
                f"{model}-infer-{p}", "infer", f"{model}/infer.py", "--synthetic",
                "--batch-size", batch, "--precision", self.precision(p),
                "--synthetic-batches", batches, "--out", self.folder("infer")))
        photos = os.path.join(self.data, "photo-data")
        return found + self.full_real() + [
            self.dataset("photo-data", 8, 256, 440, None),
            self.decode_pass(photos, "host", None), self.decode_pass(photos, "device", None),
            self.bench("bench", [], None)]  # our overheads against the references, full size

    def full_real(self):
        """Where figures went wrong before: real JPEGs with a last, partial batch (8 x 13
        = 104 images in batches of 32 leave 8), on one device and on all of them;
        TensorRT at fp32 (TF32 off) and fp16; FSDP under amp, and a rank that hangs, on
        two devices or more."""
        odd, out = os.path.join(self.data, "odd-data"), self.folder("real")
        ndev = self.dev["count"]
        infer = ["resnet50/infer.py", "--data-dir", odd, "--workers", 4,
                 "--out", out]
        every_device = ["-m", "torch.distributed.run", "--nproc-per-node", ndev]
        no_trt = ("" if importlib.util.find_spec("torch_tensorrt")
                  else "torch_tensorrt is not installed")
        found = [self.dataset("odd-data", 8, 13, 256, None, train_per_class=16)]
        found += [self.step(f"resnet50-real-{p}", "real", *infer, "--batch-size", 32,
                            "--precision", self.precision(p), needs=("odd-data",))
                  for p in ("fp32", "fp16")]
        found.append(self.step(f"resnet50-real-fp16-x{ndev}", "real", *every_device, *infer,
                               "--batch-size", 8, "--precision", self.precision("fp16"),
                               needs=("odd-data",)))
        found += [self.step(f"resnet50-real-tensorrt-{p}", "real", *infer, "--batch-size", 32,
                            "--precision", p, "--engine", "tensorrt", needs=("odd-data",),
                            not_here=no_trt) for p in ("fp32", "fp16")]
        found.append(self.step(
            "bit-train-fsdp-amp", "real", *every_device, "bit/train.py", "--data-dir", odd,
            "--fsdp", "--precision", self.precision("amp"), "--batch-size", 4, "--image-size",
            224, "--max-steps", 20, "--warmup-steps", 5, "--workers", 4, "--out", out,
            needs=("odd-data",), not_here="" if ndev >= 2 else "needs two devices or more"))
        # a rank stopped mid-run: the other must end in one line naming it, no traceback
        found.append(Step("hung-rank", ["bash", "results/hung_rank.sh", self.folder("hung-rank")],
                          None, not_here="" if ndev >= 2 else "needs two devices or more"))
        return found

    # the steps

    def step(self, name, records, *argv, planned=None, build_s=None, check=None, **kw):
        """A step of the suite's scripts whose records go to the folder `records`."""
        return Step(name, [PY, *argv], planned, build_s=build_s, records=self.folder(records),
                    check=check or record_ok, **kw)

    def train(self, model, precision):
        """A throughput run of the model's GPU step (common/cases.py): one batch per
        optimizer step, its warm-up steps, then its timed ones."""
        gpu, flags = model.gpu, []
        batch, warmup, timed = gpu.batch, gpu.warmup, gpu.timed
        if self.cpu:
            batch, warmup, timed = 2, 1, 2
            flags = ["--image-size", 32, *gpu.cpu_flags]
        steps = warmup + timed
        return self.step(f"{model.folder}-train-{precision}", "train", model.script("train"),
                         "--synthetic", "--batch-size", batch,
                         "--precision", self.precision(precision), *flags,
                         "--synthetic-steps", steps, "--max-steps", steps,
                         "--warmup-steps", warmup, "--print-freq", max(1, timed // 5),
                         "--grad-accum", 1, "--out", self.folder("train"),
                         planned=self.seconds(gpu.planned_s, gpu.cpu_s))

    def infer_synthetic(self, precision, planned, build_s):
        sizes = (["--batch-size", 2, "--synthetic-batches", 2, *SMALL_INFER] if self.cpu
                 else ["--batch-size", 256, "--synthetic-batches", 30])
        return self.step(f"resnet50-infer-{precision}", "infer", "resnet50/infer.py",
                         "--synthetic", "--precision", self.precision(precision),
                         *sizes, *self.engine(), "--out", self.folder("infer"),
                         planned=planned, build_s=None if self.cpu else build_s)

    def real_pass(self, data, images, planned, build_s):
        """resnet50/infer.py on real JPEGs: both passes must count every image once and
        agree on the accuracy (kept in the record even with random weights)."""
        return self.step("resnet50-real-fp32", "real", "resnet50/infer.py", "--data-dir", data,
                         "--batch-size", 32, "--precision", "fp32",
                         *(["--workers", 1, *SMALL_INFER] if self.cpu else ["--workers", 4]),
                         *self.engine(), "--out", self.folder("real"), planned=planned,
                         build_s=None if self.cpu else build_s, needs=("odd-data",),
                         check=lambda records: record_ok(records) or passes_agree(records, images))

    def decode_pass(self, data, where, planned):
        """Both passes eager: what differs is where the JPEGs are decoded."""
        return self.step(f"decode-{where}", "decode", "resnet50/infer.py", "--data-dir", data,
                         "--decode", where, "--precision", self.precision("fp16"),
                         "--engine", "eager",
                         *(["--batch-size", 4, "--repeat", 1, "--workers", 1, *SMALL_INFER]
                           if self.cpu else ["--batch-size", 256, "--repeat", 4]),
                         "--out", self.folder("decode"), planned=planned, needs=("photo-data",))

    def dataset(self, name, classes, val_per_class, size, planned, train_per_class=1):
        return Step(name, [PY, "-m", "common.make_dataset", os.path.join(self.data, name),
                           "--classes", classes, "--train-per-class", train_per_class,
                           "--val-per-class", val_per_class, "--size", size], planned)

    def bench(self, name, flags, planned):
        return self.step(name, "bench", "-m", "common.bench", *flags, "--out",
                         self.folder("bench"), planned=planned,
                         check=lambda records: None if records else "wrote no record")


# what a step's records must show for it to pass

def record_ok(records):
    """Why the records of a step that exited 0 do not show a finished run, or None."""
    if not records:
        return "wrote no record"
    for rec in records:
        if rec.get("status") != "ok":
            return f"its record is {rec.get('status')}: {rec.get('error') or rec.get('why')}"
        f = rec.get("figures") or {}
        rates = [f.get(k) for k in ("p_core", "p_train", "p_whole")]
        # docs/METRICS.md: a record where p_core >= p_train >= p_whole fails shows a defect
        if rec.get("case") == "train" and None not in rates and \
                not rates[0] >= rates[1] >= rates[2]:
            return "p_core >= p_train >= p_whole fails: {:.1f}, {:.1f}, {:.1f}".format(*rates)
    return None


def passes_agree(records, images):
    """Why the eager and the engine pass of the record disagree, or None: each counts
    every image once, with the same top-1 (kept in the record even with random weights)."""
    figures = records[-1]["figures"]
    val, infer = figures["val_pass"], figures["infer_pass"]
    if val["images"] != images or infer["images"] != images:
        return (f"of {images} images, the eager pass counted {val['images']} and the engine "
                f"pass {infer['images']}")
    if val["top1"] != infer["top1"]:
        return (f"figures.val_pass.top1 {val['top1']:.4f} (eager) and figures.infer_pass.top1 "
                f"{infer['top1']:.4f} (engine) differ on the same {images} images")
    return None
