"""The registry of the suite's models: each named once, with what the suite needs of it.

A model is a folder holding `train.py` and `infer.py` (the cases), and one entry here:
the name its records carry, the published weights its cases take by file name under
WEIGHTS_DIR, the goal of its engine in the bench, and the training step the GPU check
runs. run_all.sh, common/bench.py, common/gpu_plan.py, the tests' parameter lists and
the README's tables read this list or are checked against it, so a fifth model is its
folder plus one entry. No torch here: the shell scripts ask it before torch loads.

    python -m common.cases            # the run_all.sh cases, one a line: case script weights
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("train", "infer")  # a case is <folder>_<kind>, run by <folder>/<kind>.py


@dataclass(frozen=True)
class GpuStep:
    """The training step of `results/gpu_checks.sh quick`: a throughput run under amp at
    the seeds' per-device batch, `warmup` untimed then `timed` optimizer steps, planned
    at `planned_s` on one H100/H200-class device (the estimate beside the entry) and at
    `cpu_s` on the 2-core CPU that rehearses it at small sizes with `cpu_flags`."""
    batch: int
    warmup: int
    timed: int
    planned_s: float
    cpu_s: float
    cpu_flags: tuple = ()


@dataclass(frozen=True)
class Model:
    folder: str                 # <folder>/train.py and <folder>/infer.py
    name: str                   # what its records (and their tables) call it
    title: str                  # how a person writes it
    infer_weights: str          # published weights its inference case serves (WEIGHTS_DIR)
    engine_goal: float          # bench: the engine's rate over eager's it should reach
    gpu: GpuStep
    train_weights: str | None = None  # what its training case fine-tunes from, if anything

    def script(self, kind):
        return f"{self.folder}/{kind}.py"

    def case(self, kind):
        return f"{self.folder}_{kind}"

    def weights(self, kind):
        return self.train_weights if kind == "train" else self.infer_weights


MODELS = (
    # seed 001's engine gave 2-2.7x over eager on an A100; the others a serving engine's 1.5x.
    # GPU estimates: images x FLOPs per image (a training step three forwards) over a stated
    # share of the H200's fp16 peak (989.4 TFLOP/s), below what the seeds' A100 rows reached,
    # plus about 15 s of start-up a script
    Model("resnet50", "resnet50", "ResNet50", "resnet50-0676ba61.pth", 2.5,
          # 60 x 256 images x 24.5 GFLOP at 5% of the fp16 peak: 7.6 s
          GpuStep(256, 10, 50, 25, 5)),
    Model("mobilenetv2", "mobilenetv2", "MobileNetV2", "mobilenet_v2-b0353104.pth", 1.5,
          # bs 256, seed 002's 1x1 row; depthwise convolutions are memory-bound, far from
          # any peak: 60 x 256 images at about 3,000 img/s, 5.1 s
          GpuStep(256, 10, 50, 22, 4)),
    Model("vit", "vit_b_16", "ViT-B/16", "vit_b_16-c867db91.pth", 1.5,
          # 30 x 256 images x 105.4 GFLOP at 15% of the fp16 peak (the seed's A100 amp row
          # is 23% of its 312): 5.5 s
          GpuStep(256, 5, 25, 25, 6)),
    Model("bit", "BiT-M-R152x2", "BiT-M-R152x2", "BiT-M-R152x2-ILSVRC2012.npz", 1.5,
          # bs 16 at 480 px: 25 x 16 images x 1,262 GFLOP at 10% of the fp16 peak (the
          # seed's A100 row is 23% of its tf32 156): 5.1 s, and 20 s to make 236M weights;
          # the CPU rehearses it as R50x1, whose weights take a second, not 12
          GpuStep(16, 5, 20, 30, 5, cpu_flags=("--model", "BiT-M-R50x1")),
          train_weights="BiT-M-R152x2.npz"),
)


def folders():
    return tuple(m.folder for m in MODELS)


def by_folder(folder):
    found = next((m for m in MODELS if m.folder == folder), None)
    if found is None:
        raise KeyError(f"{folder}: no such model; the models are {', '.join(folders())}")
    return found


def cases():
    """(case name, Model, kind) of every case, the training cases first, as run_all.sh
    runs them."""
    return [(m.case(kind), m, kind) for kind in KINDS for m in MODELS]


def scripts():
    """Every entry script of the models, <folder>/<kind>.py."""
    return [m.script(kind) for _, m, kind in cases()]


def case_model(case_name):
    """(Model, kind) of a run_all.sh case name such as 'vit_train'."""
    for name, model, kind in cases():
        if name == case_name:
            return model, kind
    raise KeyError(f"{case_name}: no such case; the cases are "
                   f"{' '.join(name for name, _, _ in cases())}")


def main(argv=None):
    argparse.ArgumentParser(description="Print the run_all.sh cases, one a line: the case, "
                                        "its script, and the weights file it takes from "
                                        "WEIGHTS_DIR ('-' for none).").parse_args(argv)
    for name, model, kind in cases():
        print(name, model.script(kind), model.weights(kind) or "-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
