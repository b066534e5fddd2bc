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


def efficiency(flops_per_img, images_per_s, peak, passes):
    """Achieved TFLOP/s and MFU for `passes` forward-equivalents per image (3 for a
    training step: forward + backward). `peak` is (FLOP/s or None, where it came from),
    as the device shim gives it; MFU is None where the peak is unknown."""
    peak_flops, source = peak
    known = {"peak_tflops": peak_flops / 1e12 if peak_flops else None, "peak_source": source}
    if not flops_per_img or not images_per_s:
        return {"tflops": None, "mfu": None, **known}
    achieved = flops_per_img * passes * images_per_s
    return {"tflops": achieved / 1e12, "mfu": achieved / peak_flops if peak_flops else None,
            **known}
