"""BiT (Big Transfer) ResNet-V2 in plain PyTorch.

Architecture after google-research/big_transfer (``bit_pytorch/models.py``):
pre-activation bottleneck units, GroupNorm(32) everywhere, weight-standardised
convolutions. Module names mirror the official checkpoint layout so that
``load_npz`` / ``save_npz`` are a readable key-by-key copy:

    root.conv                             resnet/root_block/standardized_conv2d/kernel
    body.blockB.unitUU.gn1/conv1          resnet/blockB/unitUU/a/{group_norm,standardized_conv2d}
    body.blockB.unitUU.gn2/conv2          .../b/...
    body.blockB.unitUU.gn3/conv3          .../c/...
    body.blockB.unitUU.downsample         .../a/proj/standardized_conv2d/kernel
    head.gn                               resnet/group_norm/{gamma,beta}
    head.conv                             resnet/head/conv2d/{kernel,bias}

Conv kernels are stored HWIO in the .npz and OIHW in PyTorch.
"""
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bit.sizes import KNOWN_MODELS  # noqa: F401 (name -> (units per block, width factor))

GN_GROUPS = 32
GN_EPS = 1e-5
WS_EPS = 1e-10  # big_transfer's value; timm's BiT models use 1e-8


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation.

    Each output filter is normalised to zero mean / unit (biased) variance over
    (in, kh, kw) before the convolution; eps 1e-10 as in big_transfer. That is
    batch norm in training mode over the filters seen as one batch of out_channels
    features, and F.batch_norm does it in one fused kernel, forward and backward:
    a training step of R152x2 runs 2.0x and inference 1.8x faster on a CPU than with
    var_mean, subtract and divide (python -m common.bench --only models).
    """

    def __init__(self, *args, eps=WS_EPS, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def standardized_weight(self):
        return F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                            training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)

    def forward(self, x):
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


def fold_weight_standardization(model):
    """For inference, in place: each StdConv2d becomes a plain Conv2d that holds its
    standardised weight, computed once, in the weights' precision (float32 as loaded).
    The same function without standardising every kernel on every call (R152x2: 232M
    weights a forward), and in fp16 the standardisation happens before the cast, not
    on the cast weights. State-dict keys are unchanged. Returns `model`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, StdConv2d):
                continue
            conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                             child.stride, child.padding, child.dilation, child.groups,
                             bias=False, device="meta")  # no init: the weight is replaced
            with torch.no_grad():
                conv.weight = nn.Parameter(child.standardized_weight(),
                                           requires_grad=child.weight.requires_grad)
            conv.bias = child.bias
            setattr(parent, name, conv)
    return model


def _gn(channels):
    return nn.GroupNorm(GN_GROUPS, channels, eps=GN_EPS)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (ResNet-V2); the stride sits on the 3x3 conv.

    The projection shortcut (first unit of each block) takes the pre-activated
    input, i.e. relu(gn1(x)), exactly like big_transfer.
    """

    def __init__(self, cin, cout, cmid, stride=1):
        super().__init__()
        self.gn1 = _gn(cin)
        self.conv1 = StdConv2d(cin, cmid, 1, bias=False)
        self.gn2 = _gn(cmid)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False)
        self.gn3 = _gn(cmid)
        self.conv3 = StdConv2d(cmid, cout, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or cin != cout:
            self.downsample = StdConv2d(cin, cout, 1, stride=stride, bias=False)
        else:
            self.downsample = None

    def forward(self, x):
        out = self.relu(self.gn1(x))
        residual = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.gn2(out)))
        out = self.conv3(self.relu(self.gn3(out)))
        return out + residual


class ResNetV2(nn.Module):
    """BiT ResNet-V2 with a `width_factor` multiplier on all channel counts."""

    def __init__(self, block_units, width_factor, num_classes=1000, zero_head=True):
        super().__init__()
        self.num_classes = num_classes
        wf = width_factor
        stem = int(64 * wf)
        self.root = nn.Sequential(OrderedDict([
            ("conv", StdConv2d(3, stem, 7, stride=2, padding=3, bias=False)),
            # Pad with zeros then pool without padding. This is subtly NOT the same
            # as MaxPool2d(3, 2, padding=1): PyTorch pads with -inf there, while the
            # original TF model zero-pads (and all-negative borders then pool to 0).
            ("pad", nn.ConstantPad2d(1, 0)),
            ("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=0)),
        ]))
        blocks = []
        cin = stem
        for b, (n_units, stride) in enumerate(zip(block_units, (1, 2, 2, 2)), start=1):
            cmid = int(64 * wf) * 2 ** (b - 1)
            cout = 4 * cmid
            units = []
            for u in range(1, n_units + 1):
                units.append((f"unit{u:02d}",
                              PreActBottleneck(cin, cout, cmid, stride if u == 1 else 1)))
                cin = cout
            blocks.append((f"block{b}", nn.Sequential(OrderedDict(units))))
        self.body = nn.Sequential(OrderedDict(blocks))
        self.num_features = cin
        self.head = nn.Sequential(OrderedDict([
            ("gn", _gn(cin)),
            ("relu", nn.ReLU(inplace=True)),
            ("avg", nn.AdaptiveAvgPool2d(1)),
            ("conv", nn.Conv2d(cin, num_classes, 1, bias=True)),
        ]))
        if zero_head:
            nn.init.zeros_(self.head.conv.weight)
            nn.init.zeros_(self.head.conv.bias)

    def forward(self, x):
        x = self.head(self.body(self.root(x)))
        return x.flatten(1)


def bit(name, num_classes=1000, zero_head=True):
    """Build a BiT model by name (see KNOWN_MODELS), e.g. ``bit("BiT-M-R50x1")``."""
    if name not in KNOWN_MODELS:
        raise ValueError(f"unknown BiT model {name!r}; known: {', '.join(KNOWN_MODELS)}")
    units, wf = KNOWN_MODELS[name]
    return ResNetV2(units, wf, num_classes=num_classes, zero_head=zero_head)


# ----------------------------------------------------------------------------- npz I/O

def _npz_map(model, prefix="resnet/"):
    """(npz key, torch tensor) pairs for everything except the head conv."""
    cw = "standardized_conv2d/kernel"
    pairs = [(f"{prefix}root_block/{cw}", model.root.conv.weight)]
    for bname, block in model.body.named_children():
        for uname, unit in block.named_children():
            p = f"{prefix}{bname}/{uname}/"
            for letter, gn, conv in (("a", unit.gn1, unit.conv1),
                                     ("b", unit.gn2, unit.conv2),
                                     ("c", unit.gn3, unit.conv3)):
                pairs += [(f"{p}{letter}/group_norm/gamma", gn.weight),
                          (f"{p}{letter}/group_norm/beta", gn.bias),
                          (f"{p}{letter}/{cw}", conv.weight)]
            if unit.downsample is not None:
                pairs.append((f"{p}a/proj/{cw}", unit.downsample.weight))
    pairs += [(f"{prefix}group_norm/gamma", model.head.gn.weight),
              (f"{prefix}group_norm/beta", model.head.gn.bias)]
    return pairs


def _to_torch(arr, target, key, path):
    """npz array -> tensor shaped like `target` (HWIO->OIHW for 4-d kernels)."""
    t = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    if t.ndim == 4 and target.ndim == 4:
        t = t.permute(3, 2, 0, 1)
    elif target.ndim == 1 and t.numel() == target.numel() and max(t.shape, default=1) == t.numel():
        t = t.reshape(-1)  # tolerate (1,1,1,C)-style norm params
    if tuple(t.shape) != tuple(target.shape):
        raise ValueError(f"{path}: shape mismatch for {key!r}: checkpoint {tuple(t.shape)} "
                         f"(after HWIO->OIHW) vs model {tuple(target.shape)}")
    return t


def load_npz(model, path, prefix="resnet/"):
    """Load an official big_transfer ``.npz`` into `model` (in place).

    The head (``resnet/head/conv2d``) is loaded only if the checkpoint's class
    count equals the model's; otherwise it is left untouched (zero-initialised
    for fine-tuning). Returns True if the head was loaded.
    """
    with np.load(path, allow_pickle=False) as npz:
        files = set(npz.files)
        pairs = _npz_map(model, prefix)
        for key, _ in pairs:
            if key not in files:
                raise ValueError(f"{path}: missing key {key!r} in BiT checkpoint")
        staged = [(tgt, _to_torch(npz[key], tgt, key, path)) for key, tgt in pairs]

        hk, hb = f"{prefix}head/conv2d/kernel", f"{prefix}head/conv2d/bias"
        head_loaded = False
        if hk in files and npz[hk].shape[-1] == model.head.conv.out_channels:
            if hb not in files:
                raise ValueError(f"{path}: missing key {hb!r} in BiT checkpoint")
            staged.append((model.head.conv.weight, _to_torch(npz[hk], model.head.conv.weight, hk, path)))
            staged.append((model.head.conv.bias, _to_torch(npz[hb], model.head.conv.bias, hb, path)))
            head_loaded = True

    with torch.no_grad():
        for tgt, src in staged:
            tgt.copy_(src)
    return head_loaded


def save_npz(model, path, prefix="resnet/"):
    """Write `model` in the official big_transfer ``.npz`` layout (inverse of load_npz).

    Uncompressed ``np.savez``; like numpy, a path without ``.npz`` gets it appended.
    """
    def to_np(t):
        a = t.detach().to("cpu", torch.float32)
        if a.ndim == 4:
            a = a.permute(2, 3, 1, 0)  # OIHW -> HWIO
        return np.ascontiguousarray(a.numpy())

    out = {key: to_np(t) for key, t in _npz_map(model, prefix)}
    out[f"{prefix}head/conv2d/kernel"] = to_np(model.head.conv.weight)
    out[f"{prefix}head/conv2d/bias"] = to_np(model.head.conv.bias)
    np.savez(path, **out)
