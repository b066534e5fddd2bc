"""--decode: the device path gives the host path's batches (the CPU standing in for the
device), sends what its decoder does not take to the host, and a run says where and by
what its images were decoded."""
import os
import pathlib

import numpy as np
import pytest
import torch
import torchvision
from conftest import run_script
from PIL import Image
from test_images import odd_images, picture, with_odd_images
from test_resnet50 import only_record

from common import compare, data, decode, device, kinds, make_dataset, report, scaling, tables
from common.dist import Run
from common.errors import UserError

CPU = device.select("cpu")
LIBRARIES = [lib.name for lib in decode.installed()]


def cpu_run():
    return Run(0, 0, 1, 1, CPU)


def batches(root, split, transform, decoding, workers=0, skip_bad=False):
    """Every batch of a split's loader, as tensors on the cpu (epoch 1 for training)."""
    folder = data.image_folder(root, split, transform)
    if split == "train":
        loader = data.train_loader(folder, 4, workers, cpu_run(), seed=7, skip_bad=skip_bad,
                                   decoding=decoding)
        loader.sampler.set_epoch(1)
    else:
        loader = data.eval_loader(folder, 4, workers, cpu_run(), decoding)
    return [tuple(t.cpu() for t in batch) for batch in loader], loader


def on(library_name):
    """The device path with `library_name` decoding on the cpu."""
    return decode.Decoding("device", "device", "test", library_name, "cpu")


HOST = decode.Decoding("host", "host", "test")
TRANSFORMS = {"train": data.train_transform(32, randaugment_magnitude=9),
              "val": data.eval_transform(32)}


def only(monkeypatch, *names):
    """The host path with only these libraries installed (PIL after them); the device
    path still finds any library by name."""
    every = decode.installed()
    monkeypatch.setattr(decode, "installed", lambda: tuple(l for l in every if l.name in names))
    monkeypatch.setattr(decode, "library", lambda name: next(l for l in every if l.name == name))


@pytest.mark.parametrize("name", LIBRARIES)
@pytest.mark.parametrize("split", ["train", "val"])
def test_the_same_images_give_the_same_crops_on_both_paths(dataset, monkeypatch, name, split):
    """Training's random crop, flip and RandAugment too: the device path draws them
    from the same seeded generator, so a resumed run gets them as well."""
    only(monkeypatch, name)
    host, _ = batches(dataset, split, TRANSFORMS[split], HOST)
    device_side, loader = batches(dataset, split, TRANSFORMS[split], on(name))
    assert isinstance(loader, decode.DeviceDecodedLoader) and len(host) == len(device_side)
    for (a, y), (b, z) in zip(host, device_side):
        assert torch.equal(a, b) and torch.equal(y, z)


@pytest.mark.skipif(len(LIBRARIES) < 2, reason="needs torchcodec and torchvision.io both")
def test_two_decoders_give_crops_within_one_level(dataset, monkeypatch):
    """torchcodec in the workers against torchvision.io on the device: both wrap
    libjpeg-turbo; where IDCTs differ, a crop may differ by one level of 255."""
    only(monkeypatch, "torchcodec")
    host, _ = batches(dataset, "val", TRANSFORMS["val"], HOST)
    device_side, _ = batches(dataset, "val", TRANSFORMS["val"], on("torchvision"))
    for (a, _), (b, _) in zip(host, device_side):
        assert (a.int() - b.int()).abs().max() <= 1


def jpeg_variants(folder):
    """JPEGs of every kind the device decoders must leave to the host, and two they take."""
    rgb = picture(1)
    rgb.save(folder / "plain.jpg", quality=90)
    rgb.save(folder / "progressive.jpg", progressive=True)
    rgb.convert("L").save(folder / "gray.jpg")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    turned = rgb.getexif()
    turned[0x0112] = 6  # turned 90 degrees; today's rule (torchvision, PIL) does not turn it
    rgb.save(folder / "exif_turned.jpg", exif=turned)
    raw = (folder / "plain.jpg").read_bytes()
    # bytes after the end marker: read by every decoder on the host, left to them
    (folder / "trailing_bytes.jpg").write_bytes(raw + b"\0\0 thumbnail")
    return {"plain.jpg", "progressive.jpg"}


def test_only_plain_jpegs_go_to_the_device_decoder(tmp_path):
    taken = jpeg_variants(tmp_path)
    odd_images(tmp_path)  # 16-bit, palette, alpha, GIF, TIFF, BMP
    found = {name for name in os.listdir(tmp_path)
             if decode.device_takes(decode.read_encoded(str(tmp_path / name)))}
    assert found == taken


def test_a_jpeg_turned_by_exif_reads_as_today_whichever_library(tmp_path):
    jpeg_variants(tmp_path)
    with Image.open(tmp_path / "exif_turned.jpg") as f:
        unturned = torch.from_numpy(np.array(f.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(decode.read_image(str(tmp_path / "exif_turned.jpg")), unturned)


@pytest.fixture
def mixed(tmp_path):
    """Two classes: JPEGs, and every other kind of image among them."""
    root, folders = with_odd_images(tmp_path, "n00000001", train_per_class=6,
                                    val_per_class=6)
    for folder in folders:
        jpeg_variants(folder)
    return root


def test_a_mixed_batch_is_the_host_paths_batch(mixed):
    """PNG, CMYK, grayscale, 16-bit, palette and alpha images in the same batches as
    the JPEGs the device decodes: one worker hands them over, the batches are equal."""
    name = LIBRARIES[0]
    for split in ("train", "val"):
        host, _ = batches(mixed, split, TRANSFORMS[split], HOST, workers=1)
        device_side, _ = batches(mixed, split, TRANSFORMS[split], on(name), workers=1)
        assert len(host) == len(device_side) > 2
        for (a, y), (b, z) in zip(host, device_side):
            assert torch.equal(a, b) and torch.equal(y, z)


def test_a_jpeg_the_device_decoder_fails_on_goes_the_host_path(mixed, monkeypatch):
    """The batch's call fails whole; the JPEG it failed on is found and decoded on the
    host, in the main process, the others on the device."""
    real = decode.library(LIBRARIES[0])
    refused = decode.read_encoded(os.path.join(mixed, "val", "n00000001", "plain.jpg"))
    calls = []

    def decode_jpegs(raws, dev):
        calls.append(len(raws))
        if any(torch.equal(raw, refused) for raw in raws):
            raise RuntimeError("the device decoder refuses it")
        return real.decode_jpegs(raws, dev)
    fussy = decode.Library("fussy", "1", real.decode, decode_jpegs, real.turns_by_exif)
    monkeypatch.setattr(decode, "library", lambda name: fussy)
    host, _ = batches(mixed, "val", TRANSFORMS["val"], HOST)
    device_side, _ = batches(mixed, "val", TRANSFORMS["val"], on("fussy"))
    for (a, _), (b, _) in zip(host, device_side):
        assert torch.equal(a, b)
    assert 1 in calls and max(calls) > 1  # one by one only where the batch failed


def no_quantisation_tables(path):
    """A JPEG whose header the sniffing takes but which no decoder can decode."""
    raw, out, i = path.read_bytes(), bytearray(b"\xff\xd8"), 2
    while raw[i + 1] != 0xDA:
        length = int.from_bytes(raw[i + 2:i + 4], "big")
        if raw[i + 1] != 0xDB:
            out += raw[i:i + 2 + length]
        i += 2 + length
    path.write_bytes(bytes(out + raw[i:]))
    assert decode.device_takes(decode.read_encoded(str(path)))


def test_an_image_no_decoder_reads_is_skipped_as_on_the_host(mixed):
    folder = pathlib.Path(mixed) / "train" / "n00000000"
    no_quantisation_tables(folder / sorted(os.listdir(folder))[1])
    host, host_loader = batches(mixed, "train", TRANSFORMS["train"], HOST, skip_bad=True)
    device_side, loader = batches(mixed, "train", TRANSFORMS["train"], on(LIBRARIES[0]),
                                  skip_bad=True)
    assert host_loader.dataset.bad.value == loader.dataset.bad.value == 1
    for (a, y), (b, z) in zip(host, device_side):
        assert torch.equal(a, b) and torch.equal(y, z)


def test_a_bad_image_on_the_device_path_ends_in_one_line_naming_it(tmp_path):
    root = make_dataset.write(str(tmp_path / "data"), classes=2, train_per_class=8,
                              val_per_class=2, size=40)
    folder = tmp_path / "data" / "train" / "n00000001"
    bad = folder / sorted(os.listdir(folder))[2]
    no_quantisation_tables(bad)
    proc = run_script(["resnet50/train.py", "--data-dir", root, "--image-size", 32,
                       "--batch-size", 4, "--workers", 1, "--warmup-steps", 1,
                       "--decode", "device", "--out", tmp_path / "out"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: cannot be decoded (broken data stream when reading image file); "
        f"replace or delete it (or pass --skip-bad-images)"]


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(num_classes=4).state_dict(), path)
    return path


def test_eval_accuracy_is_the_same_on_both_paths(dataset, resnet_weights, tmp_path):
    """resnet50/infer.py on the generated dataset: the same top-1 and top-5 whichever
    path decoded it; each record says which, and auto on a CPU chose the host."""
    records = {}
    for mode in ("auto", "device"):
        proc = run_script(["resnet50/infer.py", "--data-dir", dataset, "--weights",
                           resnet_weights, "--engine", "eager", "--image-size", 32,
                           "--batch-size", 3, "--workers", 1, "--latency-calls", 2,
                           "--warmup-batches", 1, "--decode", mode, "--out", tmp_path / mode])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert sum(line.startswith("decode: ") for line in proc.stdout.splitlines()) == 1
        records[mode] = only_record(tmp_path / mode)
    auto, on_device = records["auto"], records["device"]
    for key in ("acc_val", "acc_infer", "acc5_val", "acc5_infer"):
        assert auto["figures"][key] == on_device["figures"][key] is not None
    assert auto["decode"]["mode"] == "host" and auto["decode"]["device_decoder"] is None
    assert "on a cpu the device is the main process" in auto["decode"]["why"]
    assert on_device["decode"]["mode"] == "device"
    assert on_device["decode"]["device_decoder"] == f"{decode.installed()[0]} on cpu"
    assert on_device["decode"]["host_decoder"] == decode.host_decoders()
    assert "decoded on the device" in tables.infer_row(on_device)[0]
    assert "decoded on the device" not in tables.infer_row(auto)[0]


class FakeAccelerator:
    """What decode.resolve asks of a shim Device; its 'device' is the meta device."""
    type, label, torch_device, decoding_frees_the_host = "cuda", "H100", torch.device("meta"), True

    def __init__(self, decoders=("torchcodec", "torchvision")):
        self.decoders = decoders

    def jpeg_decoders(self):
        return self.decoders


def fake_library(name, works=True):
    def decode_jpegs(raws, dev):
        if not works:
            raise RuntimeError("decode_jpegs_cuda: torchvision not compiled with nvJPEG support")
        return [torch.empty(3, 64, 64, dtype=torch.uint8, device=dev) for _ in raws]
    return decode.Library(name, "9.9", None, decode_jpegs, False)


def test_auto_takes_the_first_device_decoder_that_works(monkeypatch):
    libs = (fake_library("torchcodec", works=False), fake_library("torchvision"))
    monkeypatch.setattr(decode, "installed", lambda: libs)
    plan = decode.resolve("auto", FakeAccelerator())
    assert (plan.mode, plan.library, plan.device) == ("device", "torchvision", "meta")
    monkeypatch.setattr(decode, "installed", lambda: libs[:1])
    plan = decode.resolve("auto", FakeAccelerator())
    assert plan.mode == "host" and plan.why == (
        "auto: torchcodec 9.9 on cuda: decode_jpegs_cuda: torchvision not compiled with "
        "nvJPEG support")
    with pytest.raises(UserError, match=r"^--decode device: no JPEG decoder runs on H100 "
                                        r"\(cuda\); use --decode host \(or auto\)$"):
        decode.resolve("device", FakeAccelerator(decoders=()))


def test_the_shim_says_which_libraries_decode_on_a_device(monkeypatch):
    assert kinds.KINDS[0].jpeg_decoders == ("torchcodec", "torchvision")
    monkeypatch.setattr(torch.version, "hip", "6.2")
    rocm = device.Device.__new__(device.Device)
    rocm.type, rocm.kind = "cuda", kinds.KINDS[0]
    assert rocm.jpeg_decoders() == ("torchvision",)  # rocJPEG builds only; probed at start
    assert not CPU.decoding_frees_the_host and CPU.jpeg_decoders()


def test_without_torchcodec_a_run_decodes_with_torchvision(dataset, monkeypatch):
    only(monkeypatch, "torchvision")
    plan = decode.resolve("device", CPU)
    assert plan.record()["device_decoder"] == f"torchvision {torchvision.__version__} on cpu"
    assert plan.record()["host_decoder"].startswith(f"torchvision {torchvision.__version__}, "
                                                    f"then PIL")
    host, _ = batches(dataset, "val", TRANSFORMS["val"], HOST)
    device_side, _ = batches(dataset, "val", TRANSFORMS["val"], plan)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(host, device_side))


def test_rows_decoded_apart_are_kept_apart(tmp_path):
    """The scaling table and --compare set a device-decoded row beside no host one;
    older records and the seeds' decoded on the host."""
    seed = report.load_records([os.path.join(os.path.dirname(__file__), "..", "results",
                                             "reference")])[0]
    ours = {**seed, "decode": {"mode": "device"}}
    ours.pop("reference")
    assert scaling.decode_mode(seed) == "host" and scaling.decode_mode(ours) == "device"
    assert compare.differences(ours, seed) == ["decode"]
    assert compare.hints(ours, [seed]) == [
        "the seed's row decoded its images on the host: run with --decode host"]
    assert scaling.like_with_like(ours) != scaling.like_with_like({**ours, "decode": None})
    synthetic = {**ours, "data_source": "synthetic"}
    assert scaling.decode_mode(synthetic) is None


def test_a_device_decoded_loader_stays_one_when_rebatched(dataset):
    """--batch-size auto rebatches, and an empty shard's stand-in batch is made the
    loader's way: both still come out decoded on the device."""
    _, loader = batches(dataset, "val", TRANSFORMS["val"], on(LIBRARIES[0]))
    again = data.rebatched(loader, 2, cpu_run())
    assert isinstance(again, decode.DeviceDecodedLoader) and len(again) == 10
    images, labels = data.batch_of(again, [0])
    host_images, host_labels = data.batch_of(batches(dataset, "val", TRANSFORMS["val"],
                                                     HOST)[1], [0])
    assert torch.equal(images, host_images) and torch.equal(labels, host_labels)
