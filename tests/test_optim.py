"""--optimizer-impl: each implementation makes the recipe's update, auto picks fused only
where the fused kernels take the parameters, and the record names what ran."""
import pytest
import torch
import torchvision

from common import device, optim
from common.errors import UserError
from conftest import run_script
from test_resnet50 import only_record

CPU = device.select("cpu")


def stepped(cls, impl, steps=3, **hyper):
    """MobileNetV2's weights after `steps` updates from the same start and gradients."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10)
    opt = optim.make(cls, model.parameters(), impl, CPU, **hyper)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return opt, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("impl", ["fused", "foreach", "auto"])
def test_sgd_implementations_make_the_loops_update(impl):
    hyper = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
    _, loop = stepped(torch.optim.SGD, "loop", **hyper)
    opt, other = stepped(torch.optim.SGD, impl, **hyper)
    assert optim.describe(opt) == {"name": "SGD", "impl": "fused" if impl == "auto" else impl}
    for a, b in zip(loop, other):
        if impl == "foreach":
            assert torch.equal(a, b)
        else:  # a fused multiply-add: at most a rounding step apart
            torch.testing.assert_close(a, b, rtol=2 ** -23, atol=1e-8)


def test_adamw_fused_matches_the_loop_to_rounding():
    hyper = dict(lr=1e-3, weight_decay=0.3)
    _, loop = stepped(torch.optim.AdamW, "loop", **hyper)
    opt, fused = stepped(torch.optim.AdamW, "fused", **hyper)
    assert optim.describe(opt)["impl"] == "fused"
    for a, b in zip(loop, fused):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


class Shard(torch.Tensor):
    """Stands in for FSDP2's DTensor: a tensor subclass as a parameter."""


def test_sharded_parameters_take_torchs_default_or_a_one_line_refusal():
    params = [torch.nn.Parameter(torch.zeros(3).as_subclass(Shard))]
    opt = optim.make(torch.optim.SGD, params, "auto", CPU, lr=0.1)
    assert not opt.defaults.get("fused")
    with pytest.raises(UserError, match="--optimizer-impl fused: SGD's fused kernel does not "
                                        "take sharded .--fsdp. parameters; use --optimizer-impl"):
        optim.make(torch.optim.SGD, params, "fused", CPU, lr=0.1)


def test_auto_is_torchs_default_on_a_device_without_torchs_fused_kernels():
    class Plugin:
        type = "musa"
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = optim.make(torch.optim.SGD, params, "auto", Plugin, lr=0.1)
    assert "fused" not in opt.defaults or not opt.defaults["fused"]
    assert opt.defaults.get("foreach") is None  # left for torch to decide per step


def test_the_record_names_the_implementation(tmp_path):
    proc = run_script(["resnet50/train.py", "--synthetic", "--image-size", 32, "--batch-size", 2,
                       "--max-steps", 2, "--warmup-steps", 1, "--optimizer-impl", "foreach",
                       "--monitor-interval", 0, "--out", tmp_path])
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = only_record(tmp_path)
    assert record["figures"]["optimizer"] == {"name": "SGD", "impl": "foreach"}
    assert record["args"]["optimizer_impl"] == "foreach"
