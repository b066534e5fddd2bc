"""Write a small ImageNet-shaped JPEG dataset for demos and tests.

    python -m common.make_dataset DIR --classes 10 --train-per-class 40 --val-per-class 10

DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG, like extract_ILSVRC.sh makes.
Each class has its own colour and stripe direction under noise, so a model can learn
it in a few steps and accuracy means something; sizes vary around --size.
"""
from __future__ import annotations

import argparse
import math
import os

import numpy as np
from PIL import Image

from common.errors import UserError
from common.files import check_writable
from common.flags import Parser, non_negative_int, number, positive_int


def class_image(rng, label, num_classes, width, height):
    """An (H, W, 3) uint8 image whose colour and stripe angle depend on the class."""
    hue = 2 * math.pi * label / num_classes
    color = 127 + 100 * np.array([math.cos(hue), math.cos(hue + 2.094), math.cos(hue + 4.189)])
    angle = math.pi * label / num_classes
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(8, 16) * max(width, height) / 96
    stripes = np.sin((x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period)
    img = color[None, None, :] + 50 * stripes[..., None] + rng.normal(0, 25, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# a file in the dataset's root that says it was generated here: records of runs on it
# say "generated data", never to be read as ImageNet's
MARK = ".generated"


def is_generated(data_dir):
    return os.path.isfile(os.path.join(data_dir, MARK))


def write(root, classes=10, train_per_class=40, val_per_class=10, size=96, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, MARK), "w") as f:
        f.write(f"written by common.make_dataset: {classes} classes, seed {seed}\n")
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = os.path.join(root, split, f"n{c:08d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                w, h = (int(size * rng.uniform(0.8, 1.3)) for _ in range(2))
                path = os.path.join(folder, f"{split}_{c:04d}_{i:05d}.JPEG")
                Image.fromarray(class_image(rng, c, classes, w, h)).save(path, quality=90)
    return root


def check_not_a_dataset(root):
    """DIR is new, empty, or a dataset written here before: writing into a folder of the
    user's (ImageNet itself, given by mistake) would add classes to it and mark it as
    generated, and every record of a run on it would then say so."""
    held = [name for name in os.listdir(root) if name != MARK] if os.path.isdir(root) else []
    if held and not is_generated(root):
        raise UserError(f"DIR {root}: holds {len(held)} entries that common.make_dataset did "
                        f"not write (e.g. {sorted(held)[0]}); give a new or empty folder")


class _DefaultsAndLayout(argparse.ArgumentDefaultsHelpFormatter,
                         argparse.RawDescriptionHelpFormatter):
    """Every flag's default in --help, and the description's lines as written."""


def get_args_parser():
    p = Parser(description=__doc__, formatter_class=_DefaultsAndLayout)
    p.add_argument("root", help="the folder to write train/ and val/ into")
    p.add_argument("--classes", type=positive_int, default=10, help="class folders")
    p.add_argument("--train-per-class", type=positive_int, default=40,
                   help="training images per class")
    p.add_argument("--val-per-class", type=positive_int, default=10,
                   help="validation images per class")
    p.add_argument("--size", type=number(int, low=8, high=2048), default=96,
                   help="typical image side in pixels")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="the same seed writes the same images")
    return p


def main(argv=None):
    p = get_args_parser()
    a = p.parse_args(argv)
    try:
        check_writable(a.root, "DIR")
        check_not_a_dataset(a.root)
    except UserError as e:
        p.error(str(e))
    write(a.root, a.classes, a.train_per_class, a.val_per_class, a.size, a.seed)
    print(f"wrote {a.classes} classes x ({a.train_per_class} train + {a.val_per_class} val) "
          f"images to {a.root}")


if __name__ == "__main__":
    main()
