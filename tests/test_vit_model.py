"""Facts about vit/model.py, checked against torchvision's VisionTransformer (random weights, no downloads)."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.vision_transformer import VisionTransformer as TvViT, interpolate_embeddings

from vit.model import interpolate_pos_embedding, vit_b_16, vit_l_16, vit_tiny

TINY = dict(patch_size=16, num_layers=2, num_heads=3, hidden_dim=192, mlp_dim=768)


def _randomize_head(model):
    # the head starts at zero, which would make every logit 0 and every other gradient 0
    with torch.no_grad():
        model.heads.head.weight.normal_(std=0.02)
        model.heads.head.bias.normal_(std=0.02)
        model.class_token.normal_(std=0.02)


def _tv_twin(model, **kw):
    """torchvision's vit_b_16 holding a copy of ``model``'s weights (built on meta: no init cost)."""
    with torch.device("meta"):
        tv = torchvision.models.vit_b_16(**kw)
    tv.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)
    return tv


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def b16_pair():
    """Our vit_b_16 and torchvision's, holding the same random weights."""
    torch.manual_seed(0)
    ours = vit_b_16()
    _randomize_head(ours)
    return ours.eval(), _tv_twin(ours).eval()


def test_vit_b_16_parameter_count_and_state_dict_match_torchvision(b16_pair):
    ours = b16_pair[0]
    with torch.device("meta"):
        tv = torchvision.models.vit_b_16()
    assert sum(p.numel() for p in ours.parameters()) == 86_567_656
    assert list(ours.state_dict()) == list(tv.state_dict())
    assert _shapes(ours) == _shapes(tv)


def test_vit_l_16_state_dict_matches_torchvision():
    # meta device: shapes only, no memory or init time
    with torch.device("meta"):
        ours, tv = vit_l_16(), torchvision.models.vit_l_16()
    assert sum(p.numel() for p in ours.parameters()) == 304_326_632
    assert _shapes(ours) == _shapes(tv)


def test_same_seed_gives_torchvision_initial_weights():
    torch.manual_seed(1)
    ours = vit_tiny(image_size=32, num_classes=10)
    torch.manual_seed(1)
    tv = TvViT(image_size=32, num_classes=10, **TINY)
    sd = tv.state_dict()
    for k, v in ours.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert not ours.heads.head.weight.any()


def test_eval_logits_match_torchvision(b16_pair):
    ours, tv = b16_pair
    torch.manual_seed(2)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ours(x), tv(x)
    assert a.shape == (2, 1000)
    assert (a - b).abs().max().item() < 1e-4


def test_training_step_matches_torchvision():
    # vit_b_16 at 64 px keeps the full architecture but only 17 tokens, so it runs fast
    torch.manual_seed(3)
    ours = vit_b_16(image_size=64)
    _randomize_head(ours)
    tv = _tv_twin(ours, image_size=64)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 1000, (4,))

    losses = []
    for model in (ours, tv):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)

    tv_params = dict(tv.named_parameters())
    for name, p in ours.named_parameters():
        q = tv_params[name]
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_loading_224_weights_at_64_px_interpolates_pos_embedding(b16_pair):
    ours224, tv224 = b16_pair
    sd = tv224.state_dict()
    ours = vit_b_16(image_size=64)
    ours.load_state_dict(sd)  # strict: every key, with pos embedding resized on the way in

    expected = interpolate_embeddings(64, 16, copy.copy(sd))["encoder.pos_embedding"]
    assert ours.encoder.pos_embedding.shape == (1, 17, 768)
    torch.testing.assert_close(ours.encoder.pos_embedding.detach(), expected, rtol=0, atol=1e-6)
    assert sd["encoder.pos_embedding"].shape == (1, 197, 768)  # caller's dict untouched
    torch.testing.assert_close(interpolate_pos_embedding(sd["encoder.pos_embedding"], 4), expected)

    # and the model then computes what torchvision computes with its own interpolation
    with torch.device("meta"):
        tv = torchvision.models.vit_b_16(image_size=64)
    tv.load_state_dict(interpolate_embeddings(64, 16, copy.copy(sd)), assign=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours.eval()(x) - tv.eval()(x)).abs().max().item() < 1e-4


def test_interpolate_pos_embedding_keeps_same_grid_and_class_token():
    pos = torch.randn(1, 1 + 14 * 14, 8)
    assert interpolate_pos_embedding(pos, 14) is pos
    out = interpolate_pos_embedding(pos, 7)
    assert out.shape == (1, 50, 8)
    assert torch.equal(out[:, 0], pos[:, 0])


def test_image_size_not_divisible_by_patch_raises():
    with pytest.raises(ValueError, match="100.*16"):
        vit_tiny(image_size=100)
    with pytest.raises(ValueError):
        vit_tiny(image_size=32)(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("size", [32, 64])
def test_tiny_forward_backward(size):
    torch.manual_seed(4)
    model = vit_tiny(image_size=size, num_classes=10).train()
    x, y = torch.randn(8, 3, size, size), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert model(x).shape == (8, 10)
    assert losses[0] == pytest.approx(torch.log(torch.tensor(10.0)).item(), abs=1e-5)  # zero head: uniform
    assert losses[-1] < losses[0]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.encoder.layers.encoder_layer_0.self_attention.in_proj_weight.grad.abs().sum() > 0
