"""Loading published weights safely: torch.load(weights_only=True), one-line errors.

Weights come as people save them. A state dict saved from a wrapped model has the
wrapper's names in its keys: DDP's and DataParallel's `module.` in front, torch.compile's
`_orig_mod.`, FSDP1's `_fsdp_wrapped_module.` and activation checkpointing's
`_checkpoint_wrapped_module.` at each layer they wrap; they are stripped, and said once.
A training checkpoint's weights are taken from it, and said once. A file that holds no
state dict (a TorchScript archive, a whole pickled model) is named for what it is, with
what to pass instead; a file that is truncated or carries code is refused. A safetensors
file is read where the safetensors package is installed.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile

import torch

from common.errors import UserError

# the keys of a training checkpoint that hold the model's weights: ours
# (common/checkpoint.py) and the usual ones beside an 'optimizer'
NESTED_WEIGHTS = ("model", "state_dict", "model_state")
# the key segments a wrapper adds, and the wrapper; DDP's only in front (a model may have
# a layer of its own called `module`), the others at whatever layer they wrap
WRAPPERS = {"module": "DDP", "_orig_mod": "torch.compile", "_fsdp_wrapped_module": "FSDP",
            "_checkpoint_wrapped_module": "activation checkpointing"}
LEADING_ONLY = {"module"}

STATE_DICT_FIX = "pass a state dict: torch.save(model.state_dict(), PATH)"


def zip_kind(path):
    """'torchscript' for a torch.jit.save archive, 'torch' for a torch.save file, None
    for any other file: told apart by the archive's members, nothing loaded."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = [n.split("/", 1)[-1] for n in z.namelist()]
    except (OSError, zipfile.BadZipFile):
        return None
    if "constants.pkl" in names and any(n.startswith("code/") for n in names):
        return "torchscript"
    return "torch" if "data.pkl" in names else None


def _unsafe_globals(path, error):
    """The classes and functions a refused pickle names, the first the refusal met (the
    saved object's own class) first; listed without running anything."""
    named = re.findall(r"GLOBAL ([\w.]+)", str(error))
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # 2.5+
    try:
        listed = lister(path) if lister is not None else []
    except Exception:  # noqa: BLE001  (an old-format or odd file: the refusal will do)
        listed = []
    return list(dict.fromkeys(named + listed))


def _refused(path, error):
    """The UserError for a file weights_only refuses: a whole pickled model, or a file
    that carries other code."""
    found = _unsafe_globals(path, error)
    if any(g.startswith("torch.nn.modules.") for g in found):
        return UserError(f"--weights {path}: a whole pickled model ({found[0]}, saved with "
                         f"torch.save(model)), not a state dict, and loading it would run "
                         f"its code; where you trust it, {STATE_DICT_FIX}")
    first = str(error).strip().splitlines()[0].split(". ")[0][:160]
    return UserError(f"--weights {path}: refused, it holds more than tensors and loading "
                     f"it could run code ({first}); use a plain state dict file")


def _is_safetensors(path):
    """A safetensors file: an 8-byte little-endian header length, then its JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") < 10 ** 8


def _load_safetensors(path):
    """The tensors of a safetensors file (a format of tensors alone: nothing runs)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(f"--weights {path}: a safetensors file, and the safetensors package "
                        f"is not installed here; pip install safetensors, or pass a .pth "
                        f"state dict") from None
    try:
        return load_file(path)
    except Exception as e:  # noqa: BLE001  (safetensors' own error types vary by version)
        raise UserError(f"--weights {path}: not a readable safetensors file ({str(e)[:160]}); "
                        f"it may be truncated: download it again") from None


def _load(path):
    """torch.load(weights_only=True), every way it fails as one line naming the file."""
    if not os.path.isfile(path):
        raise UserError(f"--weights {path}: no such file; give the path of a downloaded "
                        f"state dict (.pth)")
    if _is_safetensors(path):
        return _load_safetensors(path)
    if zip_kind(path) == "torchscript":
        raise UserError(f"--weights {path}: a TorchScript archive (torch.jit.save), not a "
                        f"state dict, and loading it would run its code; where you trust "
                        f"it, pass its weights: torch.save(torch.jit.load(PATH).state_dict(), "
                        f"NEW_PATH)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        with open(path, "rb") as f:
            pickled = f.read(1) == b"\x80"  # a pickle's protocol mark
        if zip_kind(path) is None and not pickled:  # neither torch.save's nor a pickle
            raise UserError(f"--weights {path}: not a readable PyTorch file (not the zip "
                            f"archive torch.save writes); it may be truncated or another "
                            f"kind of file: download it again") from None
        raise _refused(path, e) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"--weights {path}: not a readable PyTorch file ({first}); "
                        f"it may be truncated: download it again") from None


def read_state_dict(path):
    """(state dict, what else the file was or None) from a .pth file: a training
    checkpoint gives the weights it holds; code-carrying pickles are refused, not run."""
    sd, what = _load(path), None
    nested = [k for k in NESTED_WEIGHTS if isinstance(sd, dict) and isinstance(sd.get(k), dict)]
    if nested:
        counted = next((k for k in ("step", "epoch") if k in sd), None)
        said = f", {counted} {sd[counted]}" if counted else ""
        what = f"a training checkpoint ('{nested[0]}'{said}): its weights are loaded"
        sd = sd[nested[0]]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        kind = type(sd).__name__
        raise UserError(f"--weights {path}: not a state dict (a dict of tensors) but a "
                        f"{kind}; {STATE_DICT_FIX}")
    return sd, what


def _unwrapped_key(key):
    """(key without its wrappers' segments, the segments taken out)."""
    *path, name = key.split(".")
    taken = []
    while path and path[0] in WRAPPERS:
        taken.append(path.pop(0))
    kept = []
    for p in path:
        (taken if p in WRAPPERS and p not in LEADING_ONLY else kept).append(p)
    return ".".join([*kept, name]), taken


def unwrapped(sd, own_keys):
    """(sd with its wrappers' segments taken out of its keys, the wrappers found) where
    the keys as saved do not fit the model's; (sd, []) where they do or hold none."""
    if set(sd) == set(own_keys):
        return sd, []
    stripped, found = {}, {}
    for key, value in sd.items():
        plain, taken = _unwrapped_key(key)
        stripped[plain] = value
        found.update({segment: WRAPPERS[segment] for segment in taken})
    if not found:
        return sd, []
    return stripped, [f"'{segment}.' ({wrapper})" for segment, wrapper in found.items()]


def mismatch(sd, own):
    """What is wrong between a state dict and the model's own: the first key missing,
    extra, or of another shape."""
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing:
        return f"has no '{missing[0]}' ({len(missing)} keys missing)"
    if unexpected:
        return f"has '{unexpected[0]}' that the model does not ({len(unexpected)} extra keys)"
    k = wrong[0]
    return f"'{k}' is {tuple(sd[k].shape)}, the model's is {tuple(own[k].shape)}"


def load_weights(model, path, run=None):
    """Load a .pth state dict into `model`, naming the first key that does not fit; what
    the file was beside its weights (a wrapper's names, a training checkpoint) is said
    once (by rank 0 of `run`)."""
    sd, what = read_state_dict(path)
    own = model.state_dict()
    sd, wrappers = unwrapped(sd, own)
    notes = [what] if what else []
    if wrappers:
        notes.append(f"saved from a wrapped model: {', '.join(wrappers)} taken out of its keys")
    try:
        model.load_state_dict(sd)
    except RuntimeError:
        after = f" ({notes[-1]})" if wrappers else ""
        raise UserError(f"--weights {path}: {mismatch(sd, own)}{after}; are these the "
                        f"weights of another model or class count?") from None
    if notes and (run is None or run.is_main):
        print(f"--weights {path}: {'; '.join(notes)}", flush=True)
    return model
