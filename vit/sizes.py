"""ViT sizes by name: (patch, layers, heads, width, mlp width). No torch here, so a
script's --help lists them without loading it."""
from common.errors import UserError

SIZES = {
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
    "vit_tiny": (16, 2, 3, 192, 768),
}


def check_image_size(args):
    """--image-size must cut into whole patches of --model (a flag rule, before any work)."""
    patch = SIZES[args.model][0]
    if args.image_size % patch:
        fit = max(patch, round(args.image_size / patch) * patch)
        raise UserError(f"--image-size {args.image_size}: not a multiple of {args.model}'s "
                        f"patch size {patch}; use e.g. --image-size {fit}")
