"""ViT sizes by name: (patch, layers, heads, width, mlp width). No torch here, so a
script's --help lists them without loading it."""

SIZES = {
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
    "vit_tiny": (16, 2, 3, 192, 768),
}
