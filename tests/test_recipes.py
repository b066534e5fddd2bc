"""Each training recipe at its reference global batch: the lr and the global batch a
script uses at 1x1, 1x8 and 2x8, and which of them fix_hp shows."""
import importlib

import pytest
import torch
import torchvision

from bit.model import bit
from common import cases, recipe
from common.flops import flops_per_image
from vit.model import MODELS

SCRIPTS = {folder: importlib.import_module(f"{folder}.train") for folder in cases.folders()}


def settled(script, world_size, *argv):
    parser = SCRIPTS[script].get_args_parser()
    args = parser.parse_args(["--synthetic", *argv])
    recipe.settle(args, world_size)
    return args, recipe.fix_hp(args, parser)


# (script, world size, flags) -> (per-device batch, accumulation, global batch, lr)
@pytest.mark.parametrize("script, world, argv, expected", [
    # the seeds' 1x8 configurations run the recipe as published: nothing in fix_hp
    ("resnet50", 8, [], (32, 1, 256, 0.1)),
    ("mobilenetv2", 8, [], (32, 1, 256, 0.045)),
    ("vit", 8, [], (256, 2, 4096, 0.003)),
    ("bit", 8, [], (16, 1, 128, 0.003)),
    # one device: the lr follows the global batch down; ViT accumulates up to 4096
    ("resnet50", 1, [], (32, 1, 32, 0.1 / 8)),
    ("mobilenetv2", 1, [], (32, 1, 32, 0.045 / 8)),
    ("vit", 1, [], (256, 16, 4096, 0.003)),
    ("bit", 1, [], (16, 1, 16, 0.003 / 8)),
    # two nodes of eight: twice the reference batch, twice the lr; ViT needs no accumulation
    ("resnet50", 16, [], (32, 1, 512, 0.2)),
    ("mobilenetv2", 16, [], (32, 1, 512, 0.09)),
    ("vit", 16, [], (256, 1, 4096, 0.003)),
    ("bit", 16, [], (16, 1, 256, 0.006)),
    # a batch that fills the device scales the lr with it
    ("resnet50", 8, ["--batch-size", "256"], (256, 1, 2048, 0.8)),
    ("vit", 8, ["--batch-size", "128"], (128, 4, 4096, 0.003)),
    # accumulation given by hand counts in the global batch
    ("mobilenetv2", 2, ["--batch-size", "4", "--grad-accum", "2"], (4, 2, 16, 0.045 * 16 / 256)),
])
def test_lr_and_global_batch_follow_the_world(script, world, argv, expected):
    args, fix_hp = settled(script, world, *argv)
    bs, accum, global_batch, lr = expected
    assert (args.batch_size, args.grad_accum, args.recipe["global_batch"]) == (bs, accum,
                                                                               global_batch)
    assert args.lr == pytest.approx(lr) and args.recipe["lr"] == pytest.approx(lr)
    assert "lr" not in fix_hp  # derived, not changed
    assert ("accum" in fix_hp) == ("--grad-accum" in argv)
    if not argv:
        assert fix_hp == {}  # renders as "/", as the seed's default row


def test_an_lr_the_user_gives_is_the_lr_that_runs():
    # the seed's second ResNet50 row: bs=256,lr=0.8 stays what it says
    args, fix_hp = settled("resnet50", 1, "--batch-size", "256", "--lr", "0.8")
    assert args.lr == 0.8 and args.recipe["lr_from"] == "--lr"
    assert fix_hp == {"bs": 256, "lr": 0.8}
    args, fix_hp = settled("vit", 8, "--grad-accum", "1")
    assert args.recipe["global_batch"] == 2048 and args.lr == pytest.approx(0.0015)
    assert fix_hp == {"accum": 1}


SHARED = {"bs", "img", "lr", "accum", "epochs"}  # cli.train_parser's recipe flags


@pytest.mark.parametrize("script, own", [
    ("resnet50", {"momentum", "wd", "lr_step", "lr_gamma"}),
    ("mobilenetv2", {"momentum", "wd", "lr_step", "lr_gamma"}),
    ("vit", {"wd", "ls", "mixup", "cutmix", "randaug", "ra_reps", "warmup_ep", "warmup_factor",
             "clip"}),
    ("bit", {"momentum", "mixup", "warmup_lr", "lr_decay", "steps"}),
])
def test_fix_hp_names_every_flag_of_the_recipe_group_bs_and_lr_first(script, own):
    parser = SCRIPTS[script].get_args_parser()
    args = parser.parse_args(["--synthetic"])
    for dest in parser.recipe_names():
        setattr(args, dest, "changed")
    fix_hp = recipe.fix_hp(args, parser)
    assert set(fix_hp) == SHARED | own and list(fix_hp)[:2] == ["bs", "lr"]
    assert set(fix_hp.values()) == {"changed"}


def test_a_recipe_flag_a_script_adds_is_in_fix_hp_with_no_list_to_edit():
    parser = SCRIPTS["resnet50"].get_args_parser()
    parser.add_recipe_argument("--dropout", "drop", type=float, default=0.0)
    args = parser.parse_args(["--synthetic", "--dropout", "0.1", "--momentum", "0.8"])
    recipe.settle(args, 1)
    assert recipe.fix_hp(args, parser) == {"momentum": 0.8, "drop": 0.1}
    with pytest.raises(ValueError, match="'wd' is another recipe flag's"):
        parser.add_recipe_argument("--wd", "wd", type=float, default=0.0)


# published multiply-adds per 224 px image: torchvision's model documentation for the
# first three; BiT-M-R152x2 is timm's 46.95 GMACs less its norm layers, which torch's
# flop counter does not count (group norms and weight standardisation, 1.14 G)
@pytest.mark.parametrize("name, make, gmacs", [
    ("resnet50", lambda: torchvision.models.resnet50(), 4.09),
    ("mobilenetv2", lambda: torchvision.models.mobilenet_v2(), 0.30),
    ("vit_b_16", lambda: MODELS["vit_b_16"](image_size=224, num_classes=1000), 17.56),
    ("BiT-M-R152x2", lambda: bit("BiT-M-R152x2", num_classes=1000), 45.81),
])
def test_flops_match_the_published_multiply_adds(name, make, gmacs):
    with torch.device("meta"):  # shapes only: no memory, no compute
        model = make()
    assert flops_per_image(model, 224) / 2e9 == pytest.approx(gmacs, rel=0.005 if gmacs > 1
                                                              else 0.01)


def test_attention_is_counted_whatever_kernel_the_device_has(monkeypatch):
    # the fused attention a CPU or a vendor picks is not in torch's FLOP registry:
    # counted on the meta device through the math path, attention is all there
    torch.manual_seed(0)
    model = MODELS["vit_tiny"](image_size=32, num_classes=4)
    with torch.device("meta"):
        on_meta = flops_per_image(MODELS["vit_tiny"](image_size=32, num_classes=4), 32)
    counted = flops_per_image(model, 32)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: v)  # attention that does no work
    without = flops_per_image(model, 32)
    tokens, dim, layers = (32 // 16) ** 2 + 1, 192, len(model.encoder.layers)
    # q k^T and attn v: tokens x tokens x dim multiply-adds each, 2 FLOPs apiece
    assert counted == on_meta == without + layers * 2 * 2 * tokens * tokens * dim


class RandomImages(torch.utils.data.Dataset):
    """Each item a draw from the generator the sample was seeded with."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.rand(()).item(), i


def test_repeated_augmentation_deals_copies_to_ranks_and_augments_each_apart():
    from common.data import RepeatedSampler, SeededSamples
    data = RandomImages()
    ranks = [RepeatedSampler(data, 3, num_replicas=3, rank=r, shuffle=True, seed=0,
                             drop_last=True) for r in range(3)]
    for s in ranks:
        s.set_epoch(1)
    keys = [list(s) for s in ranks]
    assert [len(k) for k in keys] == [4, 4, 4]  # an epoch is still 12 samples over 3 ranks
    # the three copies of an image go to the three ranks, one each
    for rank, rank_keys in enumerate(keys):
        assert all(copy == rank for _, _, copy in rank_keys)
    images = [i for _, i, _ in keys[0]]
    assert all(i in [j for _, j, _ in keys[1]] for i in images)
    samples = SeededSamples(data, seed=0)
    draws = {samples[k][0] for k in (keys[0][0], keys[1][0], keys[2][0])}
    assert len(draws) == 3  # the same image, three augmentations
    # a resume part-way through an epoch takes up where it was
    ranks[0].skip = 1
    assert list(ranks[0]) == keys[0][1:]


def test_vit_randaugment_interpolates_bilinear():
    from common.data import train_transform
    from torchvision.transforms import v2
    ra = [t for t in train_transform(32, randaugment_magnitude=9).transforms
          if isinstance(t, v2.RandAugment)]
    assert ra[0].interpolation == v2.InterpolationMode.BILINEAR


@pytest.mark.parametrize("script, argv, source", [
    ("resnet50", [], "the recipe"),  # the recipe's own 1, not a flag anyone gave
    ("resnet50", ["--grad-accum", "2"], "--grad-accum"),
    ("vit", [], "to reach the global batch 4096"),
    ("vit", ["--grad-accum", "1"], "--grad-accum"),
])
def test_the_record_says_where_the_accumulation_came_from(script, argv, source):
    args, _ = settled(script, 1, *argv)
    assert args.recipe["grad_accum_from"] == source
