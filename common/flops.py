"""Work per image, counted from the model itself, and what it makes of a throughput."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def flops_per_image(model, image_size, device, dtype=torch.float32, channels=3):
    """Forward FLOPs of one image (2 per multiply-add), counted by torch's flop counter."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, channels, image_size, image_size, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()


def per_device_rate(images_per_s, world_size):
    """Images/s of one device: the rates of a record are totals over every rank."""
    return images_per_s / world_size if images_per_s else None


def efficiency(flops_per_img, images_per_s, peak, passes, world_size):
    """Achieved TFLOP/s of one device and its MFU for `passes` forward-equivalents per
    image (3 for a training step: forward + backward), from the total rate of
    `world_size` devices. `peak` is (the peak table's entry, FLOP/s) of one device, or
    None; MFU is None where the peak is unknown."""
    entry, peak_flops = peak or (None, None)
    found = {"tflops": None, "mfu": None, "peak_entry": entry,
             "peak_tflops": peak_flops / 1e12 if peak_flops else None}
    rate = per_device_rate(images_per_s, world_size)
    if not flops_per_img or not rate:
        return found
    achieved = flops_per_img * passes * rate
    return {**found, "tflops": achieved / 1e12,
            "mfu": achieved / peak_flops if peak_flops else None}
