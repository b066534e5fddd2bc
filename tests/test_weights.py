"""Weights as people save them: from a model wrapped in DDP, torch.compile, FSDP or
activation checkpointing, inside a training checkpoint; and files that are no state
dict, each named for what it is."""
import itertools

import pytest
import torch
import torchvision
from conftest import run_script
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

from bit import weights as bit_weights
from bit.model import bit
from common.errors import UserError
from common.weights import load_weights


def net():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=4)


@pytest.fixture
def one_rank_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store",
                                         rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def ddp(model):
    return torch.nn.parallel.DistributedDataParallel(model).state_dict()


def named_tensors(model):
    """What saving a model's named parameters and buffers gives, wrappers and all."""
    return dict(itertools.chain(model.named_parameters(), model.named_buffers()))


def checkpointed_layers(model):
    model.layer1 = checkpoint_wrapper(model.layer1)
    # FSDP1 wraps each layer it shards, under the same kind of name
    return {k.replace("layer2.", "layer2._fsdp_wrapped_module."): v
            for k, v in named_tensors(model).items()}


@pytest.mark.parametrize("save, said", [
    (ddp, "'module.' (DDP)"),
    (lambda m: torch.compile(m).state_dict(), "'_orig_mod.' (torch.compile)"),
    (lambda m: ddp(torch.compile(m)), "'module.' (DDP), '_orig_mod.' (torch.compile)"),
    (checkpointed_layers, "'_checkpoint_wrapped_module.' (activation checkpointing), "
                          "'_fsdp_wrapped_module.' (FSDP)"),
], ids=["ddp", "compile", "ddp-of-compiled", "checkpointing-fsdp"])
def test_weights_of_a_wrapped_model_load_and_say_which_wrapper(one_rank_group, tmp_path,
                                                               capsys, save, said):
    path = tmp_path / "w.pth"
    torch.save(save(net()), path)
    model = load_weights(torchvision.models.resnet18(num_classes=4), path)
    for k, v in net().state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert capsys.readouterr().out == (f"--weights {path}: saved from a wrapped model: {said} "
                                       f"taken out of its keys\n")


def test_a_wrapped_model_of_another_kind_keeps_the_precise_message(one_rank_group, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(ddp(torchvision.models.mobilenet_v2(num_classes=4)), path)
    with pytest.raises(UserError, match=r"has no 'conv1.weight' \(\d+ keys missing\) \(saved "
                                        r"from a wrapped model: 'module.' \(DDP\) taken out"):
        load_weights(net(), path)


@pytest.mark.parametrize("checkpoint, said", [
    (lambda sd: {"model": sd, "optimizer": {}, "step": 500, "fingerprint": "f"},  # ours
     "a training checkpoint ('model', step 500): its weights are loaded"),
    (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {},
                 "epoch": 7},
     "a training checkpoint ('state_dict', epoch 7): its weights are loaded; saved from a "
     "wrapped model: 'module.' (DDP) taken out of its keys"),
], ids=["ours", "another-trainers"])
def test_a_training_checkpoint_gives_its_weights(tmp_path, capsys, checkpoint, said):
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint(net().state_dict()), path)
    model = load_weights(torchvision.models.resnet18(num_classes=4), path)
    assert torch.equal(model.fc.weight, net().fc.weight)
    assert capsys.readouterr().out == f"--weights {path}: {said}\n"


@pytest.mark.parametrize("save, says", [
    (lambda m, p: torch.jit.save(torch.jit.script(m), p),
     "a TorchScript archive (torch.jit.save), not a state dict, and loading it would run its "
     "code; where you trust it, pass its weights: torch.save(torch.jit.load(PATH)"),
    (lambda m, p: torch.save(m, p),
     "a whole pickled model (torchvision.models.resnet.ResNet, saved with torch.save(model)), "
     "not a state dict, and loading it would run its code; where you trust it, pass a state "
     "dict: torch.save(model.state_dict(), PATH)"),
    (lambda m, p: torch.save(list(m.state_dict().values()), p),
     "not a state dict (a dict of tensors) but a list; pass a state dict"),
], ids=["torchscript", "whole-model", "list"])
def test_a_file_that_is_no_state_dict_is_named(tmp_path, save, says):
    path = tmp_path / "w.pt"
    save(net(), path)
    with pytest.raises(UserError) as found:
        load_weights(net(), path)
    assert str(found.value).startswith(f"--weights {path}: {says}")


def test_a_safetensors_file_is_read_and_a_truncated_one_named(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "w.safetensors"
    safetensors.save_file(net().state_dict(), path)
    model = load_weights(torchvision.models.resnet18(num_classes=4), path)
    assert torch.equal(model.fc.weight, net().fc.weight)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match=r"not a readable safetensors file \(.*\); it may be "
                                        r"truncated"):
        load_weights(net(), path)


def test_bit_names_a_pytorch_file_given_for_its_npz(tmp_path):
    path = tmp_path / "bit.pth"
    torch.save(bit("tiny", num_classes=4).state_dict(), path)
    with pytest.raises(UserError, match=r"a PyTorch file \(torch.save\), not the official BiT "
                                        r"\.npz; download https://"):
        bit_weights.load_weights(bit("tiny", num_classes=4), str(path), "tiny")


def test_under_torchrun_the_wrapper_is_said_once(tmp_path):
    path = tmp_path / "ddp.pth"
    torch.manual_seed(0)
    sd = torchvision.models.resnet50(num_classes=4).state_dict()
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    proc = run_script(["resnet50/infer.py", "--synthetic", "--weights", path, "--num-classes", 4,
                       "--image-size", 32, "--batch-size", 2, "--synthetic-batches", 2,
                       "--engine", "eager", "--latency-calls", 2, "--warmup-batches", 1,
                       "--monitor-interval", 0, "--out", tmp_path / "out"], nproc=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(f"--weights {path}: saved from a wrapped model: 'module.' (DDP) "
                             f"taken out of its keys\n") == 1
