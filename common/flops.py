"""Work per image, counted from the model itself, and what it makes of a throughput."""
from __future__ import annotations

import contextlib

import torch
from torch.utils.flop_counter import FlopCounterMode


def _math_attention():
    """Attention through its plain matmuls: the fused kernels a device picks (flash,
    memory-efficient, a vendor's own) are not all in torch's FLOP registry, and an
    unregistered one would count as no work at all."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel  # torch >= 2.3
        return sdpa_kernel(SDPBackend.MATH)
    except ImportError:
        return contextlib.nullcontext()  # older torch: the meta device runs the math path


def flops_per_image(model, image_size, channels=3):
    """Forward FLOPs of one image (2 per multiply-add), counted by torch's flop counter
    on the meta device: from the model's shapes alone, the same number whatever device
    holds the model and whatever kernels that device would run, and nothing computed."""
    tensors = {name: torch.empty_like(t, device="meta") for name, t in
               [*model.named_parameters(), *model.named_buffers()]}
    x = torch.zeros(1, channels, image_size, image_size, device="meta")
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), _math_attention(), counter:
            torch.func.functional_call(model, tensors, (x,))
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def per_device_rate(images_per_s, world_size):
    """Images/s of one device: the rates of a record are totals over every rank."""
    return images_per_s / world_size if images_per_s else None


def efficiency(flops_per_img, images_per_s, peak, passes, world_size):
    """Achieved TFLOP/s of one device and its MFU for `passes` forward-equivalents per
    image (3 for a training step: forward + backward), from the total rate of
    `world_size` devices. `peak` is (FLOP/s of one device or None, where it came from),
    as the device shim gives it; MFU is None where the peak is unknown."""
    peak_flops, source = peak
    found = {"tflops": None, "mfu": None, "peak_source": source,
             "peak_tflops": peak_flops / 1e12 if peak_flops else None}
    rate = per_device_rate(images_per_s, world_size)
    if not flops_per_img or not rate:
        return found
    achieved = flops_per_img * passes * rate
    return {**found, "tflops": achieved / 1e12,
            "mfu": achieved / peak_flops if peak_flops else None}
