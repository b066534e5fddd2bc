"""Hand-written Vision Transformer (ViT, https://arxiv.org/abs/2010.11929) in plain PyTorch.

Parameter names and shapes are torchvision's ``vit_b_16`` key for key, so torchvision's
published state dicts load with a plain ``model.load_state_dict(sd)``. A state dict made
for another image size has its position embeddings resized (bicubic) while loading.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from vit.sizes import SIZES


def interpolate_pos_embedding(pos: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Resize a (1, 1 + g*g, D) position embedding to (1, 1 + new_grid**2, D)."""
    n, seq, dim = pos.shape
    grid = math.isqrt(seq - 1)
    if n != 1 or grid * grid != seq - 1:
        raise ValueError(f"position embedding of shape {tuple(pos.shape)} is not (1, 1 + g*g, D)")
    if grid == new_grid:
        return pos
    # the class token has no place on the grid, so it is kept as is
    cls, img = pos[:, :1], pos[:, 1:]
    img = img.transpose(1, 2).reshape(1, dim, grid, grid)  # (1, D, g, g)
    # bicubic with align_corners=True is what torchvision's interpolate_embeddings does
    img = F.interpolate(img, size=new_grid, mode="bicubic", align_corners=True)
    img = img.reshape(1, dim, new_grid * new_grid).transpose(1, 2)  # (1, g'*g', D)
    return torch.cat([cls, img], dim=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        # q, k and v are packed in one weight so that one matmul makes all three
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        # same init, in the same order, as nn.MultiheadAttention
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3C)
        qkv = qkv.view(B, T, 3, self.num_heads, C // self.num_heads)  # (B, T, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.out_proj(y)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, num_heads: int, dim: int, mlp_dim: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = SelfAttention(dim, num_heads, attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        # indices 0 and 3 hold the linears, as in torchvision's MLPBlock
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )
        for lin in (self.mlp[0], self.mlp[3]):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.normal_(lin.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attention(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    """Position embedding, the blocks and the final norm."""

    def __init__(self, seq_length: int, num_layers: int, num_heads: int, dim: int, mlp_dim: int,
                 dropout: float, attention_dropout: float):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, dim).normal_(std=0.02))  # as in bert
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, dim, mlp_dim, dropout, attention_dropout))
            for i in range(num_layers)
        ))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights trained at another image size have another grid: resize it to ours.
        # load_state_dict hands us its own copy of the dict, so the caller's is left alone
        key = prefix + "pos_embedding"
        if key in state_dict and state_dict[key].shape != self.pos_embedding.shape:
            grid = math.isqrt(self.pos_embedding.shape[1] - 1)
            state_dict[key] = interpolate_pos_embedding(state_dict[key], grid)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    """ViT classifier on square images of side ``image_size``; logits come from the class token."""

    def __init__(self, image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 mlp_dim: int, num_classes: int = 1000, dropout: float = 0.0, attention_dropout: float = 0.0):
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        self.image_size, self.patch_size, self.hidden_dim = image_size, patch_size, hidden_dim
        # modules are made in torchvision's order so a given seed draws the same initial weights
        self.conv_proj = nn.Conv2d(3, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        seq_length = (image_size // patch_size) ** 2 + 1
        self.encoder = Encoder(seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout, attention_dropout)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))

        # lecun-style normal on the patch stem, zero head so training starts from uniform logits
        fan_in = 3 * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} images, got {tuple(x.shape)}")
        x = self.conv_proj(x)  # (B, C, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, C)
        cls = self.class_token.expand(x.shape[0], -1, -1)  # (B, 1, C)
        x = self.encoder(torch.cat([cls, x], dim=1))  # (B, 1 + g*g, C)
        return self.heads(x[:, 0])  # (B, num_classes)


def _vit(patch_size, num_layers, num_heads, hidden_dim, mlp_dim, image_size=224, **kw) -> VisionTransformer:
    return VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                             num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim, **kw)


def vit_b_16(**kw) -> VisionTransformer:
    """ViT-B/16: 12 layers, 12 heads, width 768, mlp 3072 (86.6M parameters at 1000 classes)."""
    return _vit(*SIZES["vit_b_16"], **kw)


def vit_l_16(**kw) -> VisionTransformer:
    """ViT-L/16: 24 layers, 16 heads, width 1024, mlp 4096."""
    return _vit(*SIZES["vit_l_16"], **kw)


def vit_tiny(**kw) -> VisionTransformer:
    """A small ViT for tests: patch 16, 2 layers, 3 heads, width 192, mlp 768."""
    return _vit(*SIZES["vit_tiny"], **kw)


MODELS = {"vit_b_16": vit_b_16, "vit_l_16": vit_l_16, "vit_tiny": vit_tiny}
