"""Evaluate a seeded tiny model on DATA/val and write the figures (rank 0):
    torchrun --nproc_per_node N eval_shards.py DATA OUT.json
Used by test_data.py to show the accuracy is the same on 1 and N ranks."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from common import data, dist
from common.evaluate import evaluate

data_dir, out = sys.argv[1], sys.argv[2]
run = dist.setup("cpu")
torch.manual_seed(0)
# a fixed random net whose predictions are spread over the classes
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
val = data.image_folder(data_dir, "val", data.eval_transform(32))
loader = data.eval_loader(val, batch_size=3, workers=0, run=run)
normalize = data.normalizer(data.IMAGENET_MEAN, data.IMAGENET_STD, run.device.torch_device)
result = evaluate(model, loader, run, normalize)
result["shard_sizes"] = dist.sum_all(run, [len(loader.sampler) if r == run.rank else 0
                                           for r in range(run.world_size)])
if run.is_main:
    with open(out, "w") as f:
        json.dump(result, f)
dist.teardown(run)
