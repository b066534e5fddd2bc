"""Where images are decoded (--decode), by which library, and the batches the device
finishes.

    host    the loader's workers decode every image into uint8 and crop it (the
            presets of data.py): the path the seeds' runs took
    device  the workers read each file; a JPEG the device's decoder takes travels
            encoded, with its sample's key, and the main process decodes the batch's
            JPEGs in one call on the device (nvJPEG on NVIDIA), then crops each there
            under the same seeded CPU generator as the host path: the same crops (to
            one level of 255 on a GPU, where torchvision resizes uint8 through float32;
            exactly on a CPU, which resizes uint8 natively on both paths).
            Every other image (PNG, WebP, GIF, TIFF, BMP, grayscale, CMYK or YCCK,
            12-bit, lossless or arithmetic-coded JPEGs, a JPEG without its end marker or
            turned by its EXIF orientation) takes the host path inside the same batch,
            as does one the device decoder fails on (in the main process, from the file)
    auto    device where the device has a decoder that works, host elsewhere; on a CPU
            host, as the "device" there is the main process, which would take the
            decoding off the workers

Libraries, in order: TorchCodec's image decoders (torchcodec >= 0.16; torchvision's
are deprecated in their favour since 0.29), torchvision.io, and PIL for what neither
reads. Which device types have a decoder is the device shim's to say.
"""
from __future__ import annotations

import functools
import importlib.metadata
import io
import os
import re
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.utils.data as tud
from PIL import Image
from torchvision.transforms import v2

from common.errors import UserError



@dataclass(frozen=True)
class Library:
    name: str
    version: str
    decode: Callable          # encoded bytes (1-D uint8 tensor) -> [N]CHW RGB, 8 or 16 bits
    decode_jpegs: Callable    # (list of encoded JPEGs, torch.device) -> list of CHW uint8 RGB
    turns_by_exif: bool       # applies a JPEG's EXIF orientation, which today's rule does not

    def __str__(self):
        return f"{self.name} {self.version}"


def _torchcodec():
    try:  # its image decoders came with 0.16; its core library may fail to load
        from torchcodec.decoders import decode_image, decode_jpeg
    except (ImportError, OSError, RuntimeError):
        return None
    return Library("torchcodec", importlib.metadata.version("torchcodec"),
                   lambda raw: decode_image(raw, mode="RGB", output_dtype="auto"),
                   lambda raws, dev: decode_jpeg(raws, mode="RGB", device=dev),
                   turns_by_exif=True)


def _torchvision():
    try:  # deprecated since torchvision 0.29, in favour of torchcodec
        import torchvision
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg
    except ImportError:
        return None
    # a list of JPEGs in one call since 0.19; nvJPEG where the build has it
    return Library("torchvision", torchvision.__version__,
                   lambda raw: decode_image(raw, mode=ImageReadMode.RGB),
                   lambda raws, dev: decode_jpeg(raws, mode=ImageReadMode.RGB, device=dev),
                   turns_by_exif=False)


@functools.cache
def installed():
    """The image libraries here that decode into tensors, in the order they are used."""
    return tuple(lib for lib in (_torchcodec(), _torchvision()) if lib is not None)


def library(name):
    return next(lib for lib in installed() if lib.name == name)


def host_decoders():
    """What the host path decodes with, in words: the libraries in turn, then PIL."""
    return ", then ".join([*map(str, installed()), f"PIL {Image.__version__}"])


# reading and decoding on the host: today's rules

def read_encoded(path):
    """The file's bytes as a 1-D uint8 tensor, read straight into it."""
    raw = torch.empty(os.path.getsize(path), dtype=torch.uint8)
    with open(path, "rb") as f:
        f.readinto(memoryview(raw.numpy()))
    return raw


def read_image(path):
    """An image file as a uint8 (3, H, W) tensor, 8-bit RGB whatever the file holds
    (16-bit, palette, alpha, grayscale, CMYK; the first frame of an animation; a JPEG's
    EXIF orientation is not applied). The tensor libraries decode JPEG, PNG, WebP and
    GIF straight into a tensor, about 1.25x faster than PIL here, and resizing that
    tensor is about 2x faster than resizing a PIL image; PIL reads what they cannot
    (TIFF, BMP, ...), and its error is the one reported for a file none can decode."""
    raw = read_encoded(path)
    for lib in installed():
        if lib.turns_by_exif and exif_turned(raw):
            continue
        try:
            return eight_bit(lib.decode(raw))
        except (RuntimeError, ValueError):
            continue
    with open(path, "rb") as f:
        return v2.functional.pil_to_tensor(_pil_rgb(Image.open(f)))


def eight_bit(image):
    if image.ndim == 4:  # the frames of an animated GIF: the first, as PIL reads it
        image = image[0]
    if image.dtype == torch.uint16:  # a 16-bit PNG: its top 8 bits, 65535 -> 255
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def _pil_rgb(image):
    """8-bit RGB from a PIL image of any mode; PIL's own convert() would clip 16- and
    32-bit grayscale at 255 instead of scaling it."""
    if image.mode.startswith("I;16") or image.mode == "I":
        levels = np.asarray(image, dtype=np.int64) >> 8
        image = Image.fromarray(np.clip(levels, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def decoder_said(error):
    """A decoder's complaint, short, without the file object PIL puts in it."""
    said = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r" ?<_io\.\w+ (name=[^>]*|object at 0x[0-9a-f]+)>", "", said)[:100]


# what a JPEG holds, from its markers: what decides which decoder may take it

class JpegHeader(NamedTuple):
    frame: int           # the SOF marker: 0xC0 baseline, 0xC1 extended, 0xC2 progressive
    bits: int            # sample precision
    components: tuple    # component ids: 3 for YCbCr (or 'R','G','B'), 1 gray, 4 CMYK/YCCK
    adobe: int | None    # the Adobe marker's colour transform: 0 none, 1 YCbCr, 2 YCCK
    orientation: int     # EXIF orientation, 1 where there is none
    whole: bool          # ends with its end-of-image marker


def jpeg_header(raw):
    """The JpegHeader of encoded bytes, None when they are no JPEG (or a broken one)."""
    b = memoryview(raw.numpy()) if isinstance(raw, torch.Tensor) else memoryview(raw)
    if len(b) < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return None
    i, frame, adobe, orientation = 2, None, None, 1
    while i + 4 <= len(b) and b[i] == 0xFF:
        marker = b[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill, standalone
            i += 1 if marker == 0xFF else 2
            continue
        end = i + 2 + int.from_bytes(b[i + 2:i + 4], "big")
        seg = bytes(b[i + 4:end])
        if marker == 0xDA:  # start of scan: the header is over
            if frame is None:
                return None
            return JpegHeader(*frame, adobe, orientation, bytes(b[-2:]) == b"\xff\xd9")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(seg) >= 6:
            ids = tuple(seg[6 + 3 * k] for k in range(seg[5]) if 6 + 3 * k < len(seg))
            frame = (marker, seg[0], ids)
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            adobe = seg[11]
        elif marker == 0xE1 and seg[:6] == b"Exif\0\0":
            orientation = _exif_orientation(seg[6:])
        i = end
    return None


def _exif_orientation(tiff):
    """Tag 0x0112 of the first IFD of an EXIF block (1 where absent or unreadable)."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "little" if tiff[:2] == b"II" else "big"
    at = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[at:at + 2], order) if at + 2 <= len(tiff) else 0
    for k in range(count):
        entry = tiff[at + 2 + 12 * k:at + 14 + 12 * k]
        if len(entry) == 12 and int.from_bytes(entry[:2], order) == 0x0112:
            return int.from_bytes(entry[8:10], order) or 1
    return 1


def exif_turned(raw):
    """True for a JPEG whose EXIF orientation turns or mirrors it."""
    header = jpeg_header(raw)
    return header is not None and header.orientation != 1


def device_takes(raw):
    """True for a JPEG that the device decoders decode as the host does: 8-bit Huffman
    (baseline, extended or progressive), three components in YCbCr, whole, with no
    EXIF turn. nvJPEG and rocJPEG decode no 12-bit or lossless JPEGs, and convert no
    CMYK or YCCK as libjpeg-turbo does; the rest go the host path to stay the same."""
    h = jpeg_header(raw)
    return (h is not None and h.frame in (0xC0, 0xC1, 0xC2) and h.bits == 8 and
            len(h.components) == 3 and h.components != (82, 71, 66) and h.adobe != 0 and
            h.orientation == 1 and h.whole)


# which path a run takes

@dataclass(frozen=True)
class Decoding:
    """The path a run's images take, as resolved from --decode on its device."""
    mode: str                   # 'host' or 'device'
    requested: str              # --decode
    why: str
    library: str | None = None  # the library decoding JPEGs on the device ('device')
    device: str | None = None   # the torch device they are decoded on ('device')

    @property
    def on_device(self):
        return self.mode == "device"

    def record(self):
        """The record's `decode` block."""
        device_decoder = (f"{library(self.library)} on {self.device}" if self.on_device
                          else None)
        return {"mode": self.mode, "requested": self.requested, "why": self.why,
                "device_decoder": device_decoder, "host_decoder": host_decoders()}

    def words(self):
        if self.on_device:
            return (f"JPEGs on the device ({library(self.library)} on {self.device}), "
                    f"the other images in the workers ({host_decoders()}); {self.why}")
        return f"in the workers ({host_decoders()}); {self.why}"


def _test_jpeg():
    """A small JPEG, encoded here: 64 px, the least rocJPEG's hardware decoder takes."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buffer, format="JPEG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def _fails(lib, device):
    """Why `lib` cannot decode a JPEG batch on `device`, None when it can."""
    try:
        (image,) = lib.decode_jpegs([_test_jpeg()], device)
    except (RuntimeError, ValueError, TypeError) as e:  # not built for it, too old for lists
        return decoder_said(e)
    if image.shape != (3, 64, 64) or image.device != device:
        return f"gave a {tuple(image.shape)} image on {image.device}"
    return None


def resolve(requested, dev):
    """The Decoding for --decode `requested` on the shim's Device `dev`: a device
    decoder only where the shim lists one and it decodes a JPEG there at start-up."""
    if requested == "host":
        return Decoding("host", requested, "--decode host")
    if requested == "auto" and not dev.decoding_frees_the_host:
        return Decoding("host", requested, f"auto: on a {dev.type} the device is the main "
                                           f"process, which would take the decoding off "
                                           f"the loader's workers")
    names = dev.jpeg_decoders()
    candidates = [lib for lib in installed() if lib.name in names]
    tried = []
    for lib in candidates:
        failed = _fails(lib, dev.torch_device)
        if failed is None:
            return Decoding("device", requested, f"{requested}: {lib.name} decodes JPEG "
                                                 f"batches on {dev.type}",
                            lib.name, str(dev.torch_device))
        tried.append(f"{lib} on {dev.type}: {failed}")
    if not names:
        why = f"no JPEG decoder runs on {dev.label} ({dev.type})"
    elif not candidates:
        why = f"none of {', '.join(names)} is installed (the decoders for {dev.type})"
    else:
        why = "; ".join(tried)
    if requested == "device":
        raise UserError(f"--decode device: {why}; use --decode host (or auto)")
    return Decoding("host", requested, f"auto: {why}")


# the device path's batches: the workers' half, then the device's

class Encoded(NamedTuple):
    """A JPEG left for the device: its bytes and its sample's (epoch, index, copy)."""
    raw: torch.Tensor
    key: tuple


class EncodedBatch(NamedTuple):
    """A batch as the workers hand it over: the crops they decoded themselves (their
    places marked in `on_host`), and the other places' JPEGs end to end, each with
    where it ends and its sample's key."""
    crops: torch.Tensor    # (n, 3, H, W) uint8
    on_host: torch.Tensor  # (B,) bool
    encoded: torch.Tensor  # the JPEGs' bytes, one after another
    ends: torch.Tensor     # (m,)
    keys: torch.Tensor     # (m, 3)
    labels: torch.Tensor   # (B,)


def collate(samples):
    """The workers' half of a device-path batch: the JPEGs in one tensor, not one each
    (every tensor crosses from a worker as a shared-memory file of its own)."""
    jpegs = [s for s, _ in samples if isinstance(s, Encoded)]
    crops = [s for s, _ in samples if not isinstance(s, Encoded)]
    empty = torch.empty(0, dtype=torch.uint8)
    return EncodedBatch(
        torch.stack(crops) if crops else empty,
        torch.tensor([not isinstance(s, Encoded) for s, _ in samples], dtype=torch.bool),
        torch.cat([j.raw for j in jpegs]) if jpegs else empty,
        torch.tensor([j.raw.numel() for j in jpegs], dtype=torch.long).cumsum(0),
        torch.tensor([j.key for j in jpegs], dtype=torch.long).view(-1, 3),
        torch.tensor([label for _, label in samples]))


def _decode_all(lib, raws, device):
    """Each JPEG decoded on the device in one call; None for one the decoder fails on
    (the call then fails whole, and they are decoded one by one to find it)."""
    if not raws:
        return []
    try:
        return list(lib.decode_jpegs(raws, device))
    except (RuntimeError, ValueError):
        pass
    found = []
    for raw in raws:
        try:
            found.append(lib.decode_jpegs([raw], device)[0])
        except (RuntimeError, ValueError):
            found.append(None)
    return found


def finish(batch, samples, lib, device):
    """(images (B, 3, H, W) uint8, labels), both on `device`: the JPEGs decoded there
    in one call and cropped there by `samples` under each sample's own seed, as the
    host path crops; one the decoder fails on takes the host path here, from its file
    (and its error, or its skipping, is the host path's)."""
    raws = list(torch.tensor_split(batch.encoded, batch.ends[:-1].tolist()))
    decoded = _decode_all(lib, raws[:len(batch.ends)], device)
    images = [None] * len(batch.labels)
    for at, image, key in zip((~batch.on_host).nonzero().flatten().tolist(), decoded,
                              map(tuple, batch.keys.tolist())):
        images[at] = (samples.host_sample(key)[0].to(device) if image is None else
                      samples.crop(image, key))
    crops = batch.crops.to(device, non_blocking=True)
    for at, crop in zip(batch.on_host.nonzero().flatten().tolist(), crops):
        images[at] = crop
    return torch.stack(images), batch.labels.to(device, non_blocking=True)


class DeviceDecodedLoader(tud.DataLoader):
    """A DataLoader of data.SeededSamples that hand their JPEGs over encoded: its
    batches come out decoded, cropped and on the device, that work queued before the
    step that takes them starts its clock (input-path time: in p_whole and p_train,
    never in p_core)."""

    def __init__(self, dataset, **settings):
        super().__init__(dataset, collate_fn=collate, **settings)
        self.library = library(dataset.decoding.library)
        self.device = torch.device(dataset.decoding.device)

    def __iter__(self):
        for batch in super().__iter__():
            yield self.finish(batch)

    def finish(self, batch):
        return finish(batch, self.dataset, self.library, self.device)
