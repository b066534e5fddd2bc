"""Loading published weights safely: torch.load(weights_only=True), one-line errors."""
from __future__ import annotations

import os
import pickle
import zipfile

import torch

from common.errors import UserError


def read_state_dict(path):
    """A state dict from a .pth file; code-carrying pickles are refused, not run."""
    if not os.path.isfile(path):
        raise UserError(f"--weights {path}: no such file; give the path of a downloaded "
                        f"state dict (.pth)")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            pickled = f.read(1) == b"\x80"  # a pickle's protocol mark
        if not zipfile.is_zipfile(path) and not pickled:  # neither torch.save's nor a pickle
            raise UserError(f"--weights {path}: not a readable PyTorch file (not the zip "
                            f"archive torch.save writes); it may be truncated or another "
                            f"kind of file: download it again") from None
        first = str(e).strip().splitlines()[0].split(". ")[0][:160]
        raise UserError(f"--weights {path}: refused, it holds more than tensors and loading "
                        f"it could run code ({first}); use a plain state dict file") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"--weights {path}: not a readable PyTorch file ({first}); "
                        f"it may be truncated: download it again") from None
    # training checkpoints often nest the weights
    for key in ("model", "state_dict", "model_state"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"--weights {path}: not a state dict (a dict of tensors)")
    return sd


def load_weights(model, path):
    """Load a .pth state dict into `model`, naming the first key that does not fit."""
    sd = read_state_dict(path)
    try:
        model.load_state_dict(sd)
    except RuntimeError:
        own = model.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        wrong = [k for k in own if k in sd and own[k].shape != sd[k].shape]
        if missing:
            what = f"has no '{missing[0]}' ({len(missing)} keys missing)"
        elif unexpected:
            what = f"has '{unexpected[0]}' that the model does not ({len(unexpected)} extra keys)"
        else:
            k = wrong[0]
            what = f"'{k}' is {tuple(sd[k].shape)}, the model's is {tuple(own[k].shape)}"
        raise UserError(f"--weights {path}: {what}; are these the weights of another model "
                        f"or class count?") from None
    return model
