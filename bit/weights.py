"""The official BiT checkpoints, as both BiT scripts use them: where they are published,
the inputs they expect (the HyperRule's image presets, scaled to [-1, 1]), and the one
loader of their .npz files (read with allow_pickle=False by bit/model.py's load_npz).
"""
import os
import zipfile

from torchvision.transforms import v2

from bit import model as bit_model
from common.errors import UserError
from common.weights import zip_kind

CHECKPOINTS_URL = "https://storage.googleapis.com/bit_models"
BIT_MEAN = BIT_STD = (0.5, 0.5, 0.5)  # inputs scaled to [-1, 1]


def hyperrule_transforms(image_size):
    """(train, eval) presets at 480 px, scaled to image_size; uint8 CHW in and out."""
    resize = round(image_size * 512 / 480)
    train = v2.Compose([v2.Resize((resize, resize), antialias=True), v2.RandomCrop(image_size),
                        v2.RandomHorizontalFlip()])
    # the whole image squashed to a square, no centre crop
    evaluation = v2.Resize((image_size, image_size), antialias=True)
    return train, evaluation


def load_weights(model, path, model_name):
    """Copy the official .npz into the model; True when its head fit and came too."""
    url = f"{CHECKPOINTS_URL}/{model_name}.npz"
    if not os.path.isfile(path):
        raise UserError(f"--weights {path}: no such file; download {url}, or leave "
                        f"--weights out to start from random weights")
    if not zipfile.is_zipfile(path):
        raise UserError(f"--weights {path}: not an .npz file; download {url}")
    saved_by = {"torch": "torch.save", "torchscript": "torch.jit.save"}.get(zip_kind(path))
    if saved_by:  # a zip too, but of another layout than big_transfer's arrays
        raise UserError(f"--weights {path}: a PyTorch file ({saved_by}), not the official "
                        f"BiT .npz; download {url}")
    try:
        return bit_model.load_npz(model, path)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        reason = str(e).replace(f"{path}: ", "")
        raise UserError(f"--weights {path}: not a BiT checkpoint of --model {model_name} "
                        f"({reason}); download {url}") from None
