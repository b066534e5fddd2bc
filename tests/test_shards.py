"""Validation shards of any size: every rank runs its passes whatever its shard holds,
down to none, and the figures and accuracy stay exact (an empty shard adds no image)."""
import pytest
import torch
import torchvision
from conftest import run_script
from test_resnet50 import only_record

from common import data, device, infer_loop, make_dataset
from common.dist import Run
from common.evaluate import evaluate
from common.weights import load_weights


def top1_on_one_process(root, weights, classes):
    """The validation top-1 of these weights, one process, every image once."""
    model = load_weights(torchvision.models.mobilenet_v2(num_classes=classes), weights).eval()
    run = Run(0, 0, 1, 1, device.select("cpu"))
    val = data.image_folder(root, "val", data.eval_transform(32))
    normalize = data.normalizer(data.IMAGENET_MEAN, data.IMAGENET_STD, "cpu")
    return evaluate(model, data.eval_loader(val, 4, 0, run), run, normalize)["top1"]


@pytest.mark.parametrize("images, ranks, batch, full_batches", [
    (2, 3, 2, False),  # fewer images than ranks: one shard is empty, the others partial
    (5, 2, 2, True),   # not a multiple of ranks x batch: shards of 3 and 2
])
def test_every_shard_size_runs_and_counts_each_image_once(tmp_path, images, ranks, batch,
                                                          full_batches):
    root = make_dataset.write(str(tmp_path / "data"), classes=images, train_per_class=1,
                              val_per_class=1, size=40)
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(torchvision.models.mobilenet_v2(num_classes=images).state_dict(), weights)
    proc = run_script(["mobilenetv2/infer.py", "--data-dir", root, "--weights", weights,
                       "--image-size", 32, "--batch-size", batch, "--workers", 0,
                       "--engine", "eager", "--latency-calls", 2, "--warmup-batches", 1,
                       "--monitor-interval", 0, "--out", tmp_path / "out"], nproc=ranks)
    assert proc.returncode == 0, proc.stderr[-3000:]
    f = only_record(tmp_path / "out")["figures"]
    assert f["images"] == f["val_pass"]["images"] == f["infer_pass"]["images"] == images
    # the record's rank (0) holds the largest shard: its timed batches, each pass
    shard = -(-images // ranks)
    assert f["val_pass"]["timed_batches"] == f["infer_pass"]["timed_batches"] == -(-shard // batch)
    assert f["acc_val"] == f["acc_infer"] == pytest.approx(
        top1_on_one_process(root, weights, images))
    assert f["p_val_core"] >= f["p_val_whole"] > 0 and f["p_infer_core"] > 0
    if full_batches:
        assert f["latency_s"] == pytest.approx(ranks / f["p_infer_core"])
    else:  # the seed's latency is at full batch: no rank had one
        assert f["latency_s"] is None
        assert f["latency_why_empty"] == (f"no full batch on every rank: {images} images over "
                                          f"{ranks} ranks leave {images // ranks} on the "
                                          f"smallest shard, under --batch-size {batch}")


@pytest.mark.parametrize("shard, batch, sizes", [(0, 4, set()), (3, 4, {3}), (4, 4, {4}),
                                                 (9, 4, {4, 1})])
def test_a_shard_warms_up_only_the_batches_it_will_run(shard, batch, sizes):
    loader = torch.utils.data.DataLoader(range(shard), batch_size=batch)
    assert infer_loop.batch_sizes(loader) == sizes
