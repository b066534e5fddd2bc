"""Every image is used or reported: files the loader will not read are counted at the
scan, every decodable image becomes 8-bit RGB, and one that cannot names its path on
every rank and worker."""
import os

import numpy as np
import pytest
import torch
from conftest import run_script
from PIL import Image
from test_reliability import spoil

from common import data, flags, make_dataset


def picture(seed=0, w=40, h=30):
    return Image.fromarray(make_dataset.class_image(np.random.default_rng(seed), 1, 4, w, h))


def odd_images(folder):
    """Decodable files whose pixels are not 8-bit RGB as they are stored."""
    rgb = picture()
    ramp = (np.arange(30 * 40).reshape(30, 40) * 54).astype(np.uint16)  # up to 64746
    Image.fromarray(ramp).save(folder / "gray16.png")
    rgb.convert("P").save(folder / "palette.png")
    rgb.convert("RGBA").save(folder / "alpha.png")
    rgb.convert("LA").save(folder / "gray_alpha.png")
    rgb.save(folder / "anim.gif", save_all=True, append_images=[rgb.rotate(90)])
    rgb.convert("CMYK").save(folder / "cmyk.tiff")
    Image.fromarray(ramp).save(folder / "gray16.tiff")
    rgb.save(folder / "plain.bmp")
    return ramp


def with_odd_images(tmp_path, class_folder, **sizes):
    """A generated dataset (2 classes) with odd_images in one class folder of each
    split; (its root, those two folders)."""
    root = make_dataset.write(str(tmp_path / "data"), classes=2, size=40, **sizes)
    folders = [tmp_path / "data" / split / class_folder for split in ("train", "val")]
    for folder in folders:
        odd_images(folder)
    return root, folders


def test_every_decodable_image_becomes_8_bit_rgb(tmp_path):
    ramp = odd_images(tmp_path)
    for name in os.listdir(tmp_path):
        image = data.read_image(str(tmp_path / name))
        assert image.dtype == torch.uint8 and image.shape == (3, 30, 40), name
    for name in ("gray16.png", "gray16.tiff"):  # scaled to 8 bits, not clipped at 255
        image = data.read_image(str(tmp_path / name))
        assert torch.equal(image[0], torch.from_numpy((ramp >> 8).astype(np.uint8))), name
    with Image.open(tmp_path / "anim.gif") as gif:  # the first frame, as PIL shows it
        first = torch.from_numpy(np.array(gif.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(data.read_image(str(tmp_path / "anim.gif")), first)


def test_unread_files_are_counted_and_odd_images_are_used(tmp_path):
    root, folders = with_odd_images(tmp_path, "n00000000", train_per_class=8,
                                    val_per_class=3)
    for folder in folders:
        (folder / "notes.txt").write_text("not an image")
        (folder / "photo.heic").write_bytes(b"\0" * 10)
    (tmp_path / "data" / "val" / "n00000001" / "scan.HEIC").write_bytes(b"\0" * 10)
    proc = run_script(["resnet50/train.py", "--data-dir", root, "--image-size", 32,
                       "--batch-size", 4, "--workers", 1, "--max-steps", 2, "--warmup-steps", 1,
                       "--out", tmp_path / "out"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "will not be read" in line]
    assert warnings == [
        f"warning: {root}/train: 2 files in class folders will not be read (1 .heic, 1 .txt); "
        f"only .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp .gif files are images here: convert "
        f"or move the others",
        f"warning: {root}/val: 3 files in class folders will not be read (2 .heic, 1 .txt); "
        f"only .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp .gif files are images here: convert "
        f"or move the others"]
    assert "over 14 images" in proc.stdout  # 3 + 3 JPEGs and the 8 odd images of val


def test_a_bad_image_inside_a_batch_names_its_path_on_either_rank(tmp_path):
    """Two ranks, one loader worker each: the image that fails is in rank 1's shard,
    in the middle of a batch; its error names it, and no rank prints a traceback."""
    root = make_dataset.write(str(tmp_path / "data"), classes=2, train_per_class=8,
                              val_per_class=4, size=40)
    folder = os.path.join(root, "val", "n00000001")
    bad = os.path.join(folder, sorted(os.listdir(folder))[1])  # index 5: rank 1's third
    spoil(bad, "garbage")
    proc = run_script(["resnet50/infer.py", "--data-dir", root, "--image-size", 32,
                       "--batch-size", 3, "--workers", 1, "--engine", "eager",
                       "--latency-calls", 2, "--out", tmp_path / "out"], nproc=2)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors[0] == (f"error: {bad}: cannot be decoded (cannot identify image file); replace "
                         f"or delete it (every validation image counts, none is skipped)")
    # rank 0, left waiting in a collective, says only that; torchrun's summary follows
    assert errors[1:] in ([], ["error: rank 0: another rank ended (its error is above), so "
                               "this one stops too"]), errors
    assert not [line for line in proc.stderr.splitlines() if line.startswith("[rank")]


def test_bad_image_with_the_default_workers_ends_in_one_line_and_no_traceback(tmp_path):
    root = make_dataset.write(str(tmp_path / "data"), classes=2, train_per_class=8,
                              val_per_class=3, size=40)
    folder = os.path.join(root, "train", "n00000001")
    bad = os.path.join(folder, sorted(os.listdir(folder))[2])
    spoil(bad, "truncated")
    proc = run_script(["resnet50/train.py", "--data-dir", root, "--image-size", 32,
                       "--batch-size", 4, "--warmup-steps", 1, "--out", tmp_path / "out"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: cannot be decoded (Truncated File Read); replace or delete it (or "
        f"pass --skip-bad-images)"]


@pytest.mark.parametrize("cores, ranks, workers", [(2, 1, 2), (2, 2, 1), (1, 4, 1), (64, 1, 8),
                                                   (64, 4, 8), (64, 16, 4)])
def test_default_workers_share_the_cores_of_a_node(monkeypatch, cores, ranks, workers):
    monkeypatch.setattr(flags.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
    assert flags.default_workers() == workers
