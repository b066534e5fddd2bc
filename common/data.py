"""ImageNet input for training and evaluation.

The layout is the one `extract_ILSVRC.sh` makes: DATA/train/<class>/*.JPEG and
DATA/val/<class>/*.JPEG. Workers decode with libjpeg-turbo straight into uint8
tensors (TorchCodec or torchvision.io; PIL only for what they cannot read) and crop
and resize those (4x less to pin and copy than float), or, with --decode device, hand
the JPEGs over encoded for the device to decode and crop (common/decode.py);
conversion and normalisation happen on the device, as one batch operation. Training
shards with DistributedSampler; evaluation shards without padding, so every
validation image is seen exactly once across ranks.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time

import torch
import torch.utils.data as tud
import torchvision
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from torchvision.transforms import v2

from common import cli, decode, progress
from common.dist import print0
from common.decode import decoder_said, read_image
from common.errors import UserError

# what ImageFolder reads, and GIF (its first frame), which read_image decodes too
IMAGE_EXTENSIONS = (*IMG_EXTENSIONS, ".gif")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(UserError):
    """Something about the dataset the user can fix; the message says what."""


# transform presets: uint8 CHW tensor in and out

def train_transform(crop_size, *, hflip=True, randaugment_magnitude=None):
    steps = [v2.RandomResizedCrop(crop_size, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if randaugment_magnitude is not None:
        # bilinear, as the reference recipes (transforms v2 would default to nearest)
        steps.append(v2.RandAugment(magnitude=randaugment_magnitude,
                                    interpolation=v2.InterpolationMode.BILINEAR))
    return v2.Compose(steps)


def eval_transform(crop_size, *, resize_size=None):
    # the classic 256 -> 224 ratio unless the recipe says otherwise
    resize_size = resize_size or round(crop_size * 256 / 224)
    return v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size)])


def image_folder(data_dir, split, transform):
    """ImageFolder for DATA/<split>, with one-line errors for the usual mistakes."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir}: no such directory; point it at the folder "
                        f"that holds train/ and val/ (or use --synthetic)")
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise DataError(f"{root}: missing; --data-dir must hold train/ and val/ with one "
                        f"folder per class (the layout extract_ILSVRC.sh makes)")
    unread = collections.Counter()

    def readable(path):
        if has_file_allowed_extension(path, IMAGE_EXTENSIONS):
            return True
        unread[os.path.splitext(path)[1].lower() or "(no extension)"] += 1
        return False
    try:
        folder = torchvision.datasets.ImageFolder(root, transform=transform, loader=read_image,
                                                  is_valid_file=readable)
    except (FileNotFoundError, RuntimeError) as e:
        said = str(e).split(" Supported extensions")[0].rstrip(" .")
        fix = (" put images in every class folder or remove the empty ones" if "classes" in said
               else f" {split}/ must hold one folder of images per class (archives such as "
                    f"ImageNet's per-class .tar files extracted first)" if "class folder" in said
               else "")
        raise DataError(f"{root}: {said}{';' + fix if fix else ''}") from None
    folder.unread = unread  # by extension: the files of class folders that are not read
    return folder


def warn_unread(dataset, run):
    """One line for the files of a split's class folders that the loader will not read:
    the figures are over fewer images than the folders hold."""
    if not dataset.unread or not run.is_main:
        return
    kinds = ", ".join(f"{n} {ext}" for ext, n in sorted(dataset.unread.items(),
                                                         key=lambda kv: (-kv[1], kv[0])))
    print(f"warning: {dataset.root}: {sum(dataset.unread.values())} files in class folders "
          f"will not be read ({kinds}); only {' '.join(IMAGE_EXTENSIONS)} files are images "
          f"here: convert or move the others", file=sys.stderr, flush=True)


def check_same_classes(train_set, val_set):
    if train_set.classes != val_set.classes:
        only_val = sorted(set(val_set.classes) - set(train_set.classes))[:3]
        only_train = sorted(set(train_set.classes) - set(val_set.classes))[:3]
        raise DataError(f"{val_set.root}: its class folders differ from {train_set.root} "
                        f"(only in val: {only_val}, only in train: {only_train}); both splits "
                        f"need the same class folders")


class BadImage(DataError):
    """An image file that PIL cannot decode."""


class SeededSamples(tud.Dataset):
    """A training set whose random augmentation of a sample depends on (seed, epoch,
    index, copy) alone, not on which worker loads it: a resumed run sees the very crops
    the uninterrupted one would have. Keys are (epoch, index) pairs from EpochSampler, or
    (epoch, index, copy) from RepeatedSampler.

    A file that cannot be decoded stops the run naming it; with skip_bad=True the next
    good sample stands in for it and the count of skipped files is kept. With a
    `decoding` on the device, a JPEG that the device decoder takes is handed over
    encoded, with its key, for decode.finish to crop on the device under the same seed."""

    def __init__(self, dataset, seed, skip_bad=False, can_skip=True, decoding=None):
        self.dataset, self.seed, self.skip_bad, self.can_skip = dataset, seed, skip_bad, can_skip
        self.decoding = decoding
        self.bad = multiprocessing.Value("i", 0)  # shared with the loader's workers

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        key = (*key, 0)[:3] if isinstance(key, tuple) else (0, key, 0)
        if self.decoding is not None and self.decoding.on_device:
            path, label = self.dataset.samples[key[1]]
            raw = decode.read_encoded(path) if os.path.isfile(path) else None
            if raw is not None and decode.device_takes(raw):
                return decode.Encoded(raw, key), label
        return self.host_sample(key)

    @contextlib.contextmanager
    def seeded(self, epoch, index, copy):
        """The cpu generator the transforms draw from, seeded for this sample alone
        (torch.manual_seed would seed every device too, 20x slower): the v2 transforms
        draw their parameters from it whichever device the image is on. The caller's
        random state is as it was afterwards."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(
                ((self.seed * 1_000_003 + epoch) * 1_000_000_007 + index
                 + copy * 0x9E3779B97F4A7C15) % 2 ** 63)
            yield

    def crop(self, image, key):
        """The dataset's transform of an image decoded elsewhere (the device), under the
        seed of its sample `key`: the crop the host path makes of it."""
        with self.seeded(*key):
            return self.dataset.transform(image)

    def host_sample(self, key):
        """(image, label) of (epoch, index, copy), decoded and cropped on the host."""
        epoch, index, copy = key
        for tries in range(len(self.dataset)):
            i = (index + tries) % len(self.dataset)
            with self.seeded(epoch, i, copy):
                try:
                    return self.dataset[i]
                except Exception as e:  # noqa: BLE001  (any decoder's or transform's error)
                    path = self.dataset.samples[i][0]
                    if not self.skip_bad:
                        fix = ("or pass --skip-bad-images" if self.can_skip else
                               "every validation image counts, none is skipped")
                        raise BadImage(f"{path}: cannot be decoded ({decoder_said(e)}); "
                                       f"replace or delete it ({fix})") from None
                    with self.bad.get_lock():
                        self.bad.value += 1
                    print(f"warning: skipped {path}: cannot be decoded", file=sys.stderr)
        raise DataError(f"{self.dataset.root}: no image in it can be decoded")


class EpochSampler(tud.DistributedSampler):
    """DistributedSampler that yields (epoch, index) keys for SeededSamples, and can
    start an epoch part-way through (`skip` samples of this rank), as a resume does."""

    skip = 0

    def __iter__(self):
        keys = [(self.epoch, i) for i in list(super().__iter__())[self.skip:]]
        self.skip = 0
        return iter(keys)


class RepeatedSampler(EpochSampler):
    """Repeated augmentation, as the ViT reference recipes sample: each epoch shuffles
    the images, takes every one `repeats` times and deals the copies to the ranks in
    turn, so an image's copies are augmented apart (on different ranks where there are
    enough); a rank still gets len(dataset) // world_size samples an epoch."""

    def __init__(self, dataset, repeats, **kwargs):
        super().__init__(dataset, **kwargs)
        self.repeats = repeats

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        copies = [(i, c) for i in order for c in range(self.repeats)]
        mine = copies[self.rank::self.num_replicas][:self.num_samples]
        keys = [(self.epoch, i, c) for i, c in mine[self.skip:]]
        self.skip = 0
        return iter(keys)


class ShardSampler(tud.Sampler):
    """Every index once over all ranks, no padding: rank r takes r, r+W, r+2W, ..."""

    def __init__(self, n, rank, world_size):
        self.indices = range(rank, n, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def leave_stop_signals_to_the_rank(worker_id):
    """A loader worker outlives a Ctrl-C and a SIGTERM that are not its rank's. SLURM's
    scancel and a terminal signal every process of the job; a worker that died of it
    would end its rank's batches wherever that rank was, before the ranks agree on a
    step to stop at (common/stops.py's StopRequest). A SIGTERM from the rank itself (the
    loader's or Python's shutdown of its workers) still ends the worker; where the OS
    cannot tell who sent a signal (no sigwaitinfo), SIGTERM keeps its default. Nor does
    it print a traceback for the rank's socket once the rank has ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):  # a closed terminal: the rank checkpoints, as for SIGTERM
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if hasattr(signal, "sigwaitinfo"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the threads after too
        threading.Thread(target=_end_on_sigterm_from, args=(os.getppid(),), daemon=True,
                         name="sigterm-from-rank").start()
    sys.excepthook = _quiet_once_the_rank_is_gone(os.getppid(), sys.excepthook)


def _quiet_once_the_rank_is_gone(rank_pid, said):
    """The excepthook of a worker: a broken connection to a rank that has ended (killed
    after a hang, say) is not told. A worker hands its batches' storage to the rank over
    a socket, and Python's thread serving that socket prints the broken pipe through
    sys.excepthook; the rank's own line already says what happened. The rank's exit
    closes the socket a moment before the worker is re-parented, hence the short wait."""
    def hook(kind, value, tb):
        if issubclass(kind, (OSError, EOFError)):
            for _ in range(40):
                if os.getppid() != rank_pid:
                    return
                time.sleep(0.05)
        said(kind, value, tb)
    return hook


def _end_on_sigterm_from(rank_pid):
    while signal.sigwaitinfo({signal.SIGTERM}).si_pid != rank_pid:
        pass
    os._exit(128 + signal.SIGTERM)


def _loader(samples, batch_size, sampler, workers, pin_memory, drop_last):
    """The DataLoader of SeededSamples: one whose batches come out decoded on the device
    where its samples say so (decode.DeviceDecodedLoader), a plain one otherwise."""
    on_device = samples.decoding is not None and samples.decoding.on_device
    return (decode.DeviceDecodedLoader if on_device else tud.DataLoader)(
        samples, batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=pin_memory, drop_last=drop_last,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=leave_stop_signals_to_the_rank,
        # the workers' seeds from a generator of their own, not from the global random
        # state that the training step draws on (mixup): resuming keeps both in step
        generator=torch.Generator().manual_seed(0))


def batch_of(loader, indices):
    """The batch `loader` makes of these samples, as its iteration gives it."""
    batch = loader.collate_fn([loader.dataset[i] for i in indices])
    return loader.finish(batch) if isinstance(loader, decode.DeviceDecodedLoader) else batch


def check_batch_size(batch_size, images, run, split="training"):
    if images // run.world_size < batch_size:
        raise DataError(f"--batch-size {batch_size}: larger than the {images} {split} "
                        f"images give each of {run.world_size} ranks; use a smaller batch")


def train_loader(dataset, batch_size, workers, run, seed=0, skip_bad=False, repeats=1,
                 decoding=None):
    """Shuffled full batches of this rank's share; `repeats` > 1: repeated augmentation;
    `decoding`: a decode.Decoding (None: on the host)."""
    check_batch_size(batch_size, len(dataset), run)
    shard = dict(num_replicas=run.world_size, rank=run.rank, shuffle=True, seed=seed,
                 drop_last=True)
    sampler = (RepeatedSampler(dataset, repeats, **shard) if repeats > 1 else
               EpochSampler(dataset, **shard))
    # full batches only: every timed step does the same work
    return _loader(SeededSamples(dataset, seed, skip_bad, decoding=decoding), batch_size,
                   sampler, workers, run.device.pin_memory, drop_last=True)


def eval_loader(dataset, batch_size, workers, run, decoding=None):
    sampler = ShardSampler(len(dataset), run.rank, run.world_size)
    # no skipping here: accuracy is over every validation image
    return _loader(SeededSamples(dataset, 0, can_skip=False, decoding=decoding), batch_size,
                   sampler, workers, run.device.pin_memory, drop_last=False)


class SyntheticLoader:
    """One random batch made once on the device, served `steps` times per epoch:
    measures p_core with no dataset and no input pipeline."""

    def __init__(self, batch_size, image_size, num_classes, steps, device, seed=0):
        self.settings = dict(image_size=image_size, num_classes=num_classes, steps=steps,
                             device=device, seed=seed)
        g = torch.Generator().manual_seed(seed)
        self.batch = (
            torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8,
                          generator=g).to(device),
            torch.randint(0, num_classes, (batch_size,), generator=g).to(device))
        self.steps = steps
        self.sampler = None

    def __iter__(self):
        return (self.batch for _ in range(self.steps))

    def __len__(self):
        return self.steps


def rebatched(loader, batch_size, run):
    """The same data, sampler and settings in batches of `batch_size` (None stays None)."""
    if loader is None:
        return None
    if isinstance(loader, SyntheticLoader):
        return SyntheticLoader(batch_size, **loader.settings)
    if loader.drop_last:  # a training loader: full batches only
        check_batch_size(batch_size, len(loader.dataset), run)
    return _loader(loader.dataset, batch_size, loader.sampler, loader.num_workers,
                   loader.pin_memory, loader.drop_last)


def batch_size_of(args):
    """--batch-size, or 1 while `auto` is still to be searched (train_loop rebatches)."""
    return 1 if args.batch_size == "auto" else args.batch_size


def loaders(args, run, train_tf, eval_tf, repeats=1):
    """(train loader, val loader or None, number of classes) for --data-dir or --synthetic;
    `repeats` copies of each training image an epoch (repeated augmentation)."""
    if args.synthetic:
        train = SyntheticLoader(batch_size_of(args), args.image_size, args.num_classes,
                                args.synthetic_steps, run.device.torch_device, args.seed)
        return train, None, args.num_classes
    if not args.data_dir:
        raise DataError("no data: give --data-dir DIR (train/ and val/ inside) or --synthetic")
    train_set, val_set = scan(args, run, train=train_tf, val=eval_tf)
    check_same_classes(train_set, val_set)
    for split in (train_set, val_set):
        warn_unread(split, run)
    decoding = decoding_for(args, run)
    train = train_loader(train_set, batch_size_of(args), args.workers, run, args.seed,
                         args.skip_bad_images, repeats, decoding)
    cli.check_steps(args, len(train), f"{len(train_set)} training images at --batch-size "
                                      f"{batch_size_of(args)} on {run.world_size} ranks")
    return (train, eval_loader(val_set, batch_size_of(args), args.workers, run, decoding),
            args.num_classes)


def decoding_for(args, run):
    """The decode.Decoding of --decode on this rank's device, said once and kept in
    args.decoding for the record."""
    decoding = decode.resolve(args.decode, run.device)
    args.decoding = decoding.record()
    print0(run, f"decode: {decoding.words()}")
    return decoding


def scan(args, run, **transforms):
    """An ImageFolder per split of --data-dir ({split: transform}), the image counts
    printed (listing ImageNet's 1.3 million files takes a while); args.num_classes
    becomes the dataset's, so the header and the record say what ran."""
    print0(run, f"data: listing the images of {args.data_dir} ...")
    t0 = time.perf_counter()
    sets = [image_folder(args.data_dir, split, tf) for split, tf in transforms.items()]
    args.num_classes = len(sets[0].classes)
    counts = {split: len(s) for split, s in zip(transforms, sets)}
    print0(run, f"data: {progress.data_words(args, **counts)} "
                f"({time.perf_counter() - t0:.1f} s)")
    return sets


def val_inputs(args, run, eval_tf, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """(val loader, number of classes, on-device normaliser) for inference scripts."""
    normalize = normalizer(mean, std, run.device.torch_device, args.channels_last)
    if args.synthetic:
        loader = SyntheticLoader(args.batch_size, args.image_size, args.num_classes,
                                 args.synthetic_batches, run.device.torch_device, args.seed)
        return loader, args.num_classes, normalize
    if not args.data_dir:
        raise DataError("no data: give --data-dir DIR (val/ inside) or --synthetic")
    (val_set,) = scan(args, run, val=eval_tf)
    warn_unread(val_set, run)
    # a shard of any size runs, down to none (fewer images than ranks): infer_loop
    loader = eval_loader(val_set, args.batch_size, args.workers, run, decoding_for(args, run))
    return loader, args.num_classes, normalize


def imagenet_inputs(args, run, randaugment_magnitude=None, repeats=1):
    """Loaders with the classic ImageNet presets (RandomResizedCrop + flip / Resize +
    CenterCrop at --image-size) and the on-device normaliser that goes with them."""
    train, val, num_classes = loaders(
        args, run,
        train_transform(args.image_size, randaugment_magnitude=randaugment_magnitude),
        eval_transform(args.image_size), repeats)
    normalize = normalizer(IMAGENET_MEAN, IMAGENET_STD, run.device.torch_device,
                           args.channels_last)
    return train, val, num_classes, normalize


def to_device(batch, run):
    """Start the host -> device copy of (images, labels); it overlaps with queued work.
    A batch decoded on the device is there already."""
    dev = run.device.torch_device
    return tuple(t.to(dev, non_blocking=True) for t in batch)


def normalizer(mean, std, device, channels_last=False):
    """On-device uint8 (B, 3, H, W) -> normalised float32 in the model's memory format."""
    # (x - 255 mean) / (255 std) as x * scale + bias, in place on the new float tensor:
    # a third of the time of the plain expression, which counts where the device is a cpu
    scale = 1 / (torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)
    bias = -torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255 * scale
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def normalize(images):
        # the layout is set on the uint8 batch (a quarter of the bytes); float() keeps it
        return images.contiguous(memory_format=fmt).float().mul_(scale).add_(bias)
    return normalize
