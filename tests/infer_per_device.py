"""Run the inference passes of a model whose every batch takes the same 20 ms, with a
peak of 1 TFLOP/s given for the test, and write the record's figures (rank 0):
    torchrun --nproc_per_node N infer_per_device.py OUT.json
Used by test_infer.py to show that latency, TFLOP/s and MFU are per device."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from common import cli, data, dist, infer_loop, record


class FixedTime(torch.nn.Module):
    """A small convolution, then a wait: 20 ms a batch whatever the rank count."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        time.sleep(0.02)
        return self.conv(x).mean(dim=(2, 3))


out = sys.argv[1]
args = cli.infer_parser("test").parse_args(
    ["--synthetic", "--synthetic-batches", "6", "--batch-size", "4", "--image-size", "16",
     "--num-classes", "4", "--engine", "eager", "--warmup-batches", "1",
     "--latency-calls", "3", "--monitor-interval", "0", "--device", "cpu"])
run = dist.start(args)
run.device.peak = lambda precision, given=None: (1e12, "test")  # a cpu has no data-sheet peak
loader, _, normalize = data.val_inputs(args, run, None)
figures = infer_loop.run_inference(run, args, FixedTime(), loader, normalize)
rec = record.infer_record(run, args, "fixed", figures, None)
if run.is_main:
    with open(out, "w") as f:
        json.dump({"world_size": run.world_size, **rec["figures"]}, f, default=str)
dist.teardown(run)
