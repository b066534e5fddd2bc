"""The input-path comparisons of common.bench: our loader against the classic one, and
the JPEGs decoded on the device against in the workers, on the same generated photos."""
from __future__ import annotations

import os
import tempfile
import time

import torch.utils.data as tud
import torchvision

from common import data, device, dist, make_dataset
from common.bench_rounds import alternate, row
from common.decode import resolve as resolve_decoding
from common.errors import UserError


def classic_loader(root, batch_size, workers, pin):
    """The loader most ImageNet scripts use: float tensors normalised in the workers."""
    from torchvision import transforms as T
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(data.IMAGENET_MEAN, data.IMAGENET_STD)])
    return tud.DataLoader(torchvision.datasets.ImageFolder(root, tf), batch_size=batch_size,
                          shuffle=True, num_workers=workers, pin_memory=pin, drop_last=True,
                          persistent_workers=workers > 0)


def loader_rate(loader, batches, finish=lambda images: images):
    """images/s over `batches` batches, timed from the first batch on (worker start-up
    is left out, the same for both loaders)."""
    it = iter(loader)
    next(it)
    t0, images = time.perf_counter(), 0
    for _ in range(batches):
        x, _ = next(it)
        finish(x)
        images += x.shape[0]
    return images / (time.perf_counter() - t0)


def _photos(root, a):
    """Enough ~500x375 JPEGs (the size of a typical ImageNet photo) for a side's batches."""
    n = a.batch_size * (a.loader_batches + 1)
    make_dataset.write(root, classes=4, train_per_class=-(-n // 4), val_per_class=0, size=440)


def loader(a):
    run = dist.Run(0, 0, 1, 1, device.select())
    dev = run.device
    with tempfile.TemporaryDirectory() as root:
        _photos(root, a)
        normalize = data.normalizer(data.IMAGENET_MEAN, data.IMAGENET_STD, dev.torch_device)

        def ours(normalised=False):
            dataset = data.image_folder(root, "train", data.train_transform(224))
            ld = data.train_loader(dataset, a.batch_size, a.workers, run)

            def finish(x):  # what our loader leaves to the device: copy and normalise
                x = x.to(dev.torch_device, non_blocking=True)
                if normalised:
                    normalize(x)
                dev.synchronize()
            return loader_rate(ld, a.loader_batches, finish)

        def classic():
            ld = classic_loader(os.path.join(root, "train"), a.batch_size, a.workers,
                                dev.pin_memory)

            def finish(x):
                x.to(dev.torch_device, non_blocking=True)
                dev.synchronize()
            return loader_rate(ld, a.loader_batches, finish)
        mine, mine_normalised, ref = alternate(a.repeat, ours, lambda: ours(True), classic)
    setting = f"{a.workers} workers, batch {a.batch_size}, 224 px crops of ~500x375 JPEGs"
    return [row("loader: ours / PIL + ToTensor + Normalize", mine, ref, "img/s", 1.5, setting),
            # the classic loader normalises in its workers, ours on the device: on a cpu
            # that is the main process, beside the workers
            row("loader + normalising on the device / the same", mine_normalised, ref, "img/s",
                None, f"{setting}; on {dev.type}")]


def decode(a):
    """Our training loader with the JPEGs decoded on the device against in the workers:
    images/s of batches ready on the device (decoded, cropped, copied), the same crops
    on both sides. On a CPU the device side decodes in the main process."""
    run = dist.Run(0, 0, 1, 1, device.select())
    dev = run.device
    what = "decode: on the device / on the host"
    try:
        on_device = resolve_decoding("device", dev)
    except UserError as e:
        return [row(what, None, None, "img/s", None, str(e))]
    with tempfile.TemporaryDirectory() as root:
        _photos(root, a)

        def side(decoding):
            dataset = data.image_folder(root, "train", data.train_transform(224))
            ld = data.train_loader(dataset, a.batch_size, a.workers, run, decoding=decoding)

            def finish(x):  # on the device already from the device side: its work done
                x.to(dev.torch_device, non_blocking=True)
                dev.synchronize()
            return loader_rate(ld, a.loader_batches, finish)
        on_host = resolve_decoding("host", dev)
        mine, ref = alternate(a.repeat, lambda: side(on_device), lambda: side(on_host))
    return [row(what, mine, ref, "img/s", None,
                f"{a.workers} workers, batch {a.batch_size}, 224 px crops of ~500x375 JPEGs; "
                f"{on_device.record()['device_decoder']}")]
