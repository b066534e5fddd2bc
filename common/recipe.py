"""A training recipe's arithmetic: the global batch, accumulation and lr a run trains
with, settled by one function for every caller, and the values a run changed (fix_hp).

A recipe names its lr at a reference global batch (ResNet50: 0.1 at 256). A run's
global batch is world size x per-device batch x accumulation; with no --lr the lr
scales linearly from the reference to it. `settle` is called by the parser's start-up
rule (common/cli.py, at the launcher's world size, which is the run's) and again by
--batch-size auto once it has found its batch (common/auto_batch.py). No torch here.
"""
from __future__ import annotations

# the short names fix_hp shows first, as the seed's rows do (bs=256,lr=0.8)
FIRST = ("bs", "lr")


def settle(args, world_size):
    """Set args.grad_accum and args.lr to what this run trains with, and args.recipe to
    how they were derived. Settling again (at the batch --batch-size auto found) starts
    from what the user gave, never from what an earlier settling derived."""
    given = args.recipe["given"] if args.recipe else {
        "lr": args.lr, "grad_accum": args.grad_accum}
    batch = args.recipe_batch_size if args.batch_size == "auto" else args.batch_size
    reference = args.reference_global_batch
    accum = given["grad_accum"] or max(1, reference // (world_size * batch))
    global_batch = world_size * batch * accum
    if given["lr"] is None:
        lr = args.reference_lr * global_batch / reference
        lr_from = f"{args.reference_lr:g} x {global_batch} / {reference} (linear scaling)"
    else:
        lr, lr_from = given["lr"], "--lr"
    args.lr, args.grad_accum = lr, accum
    args.recipe = {
        "given": given, "reference_global_batch": reference, "reference_lr": args.reference_lr,
        "global_batch": global_batch, "batch_size": batch, "world_size": world_size,
        "grad_accum": accum, "lr": lr, "lr_from": lr_from,
        "grad_accum_from": _grad_accum_from(args, given["grad_accum"])}
    return args.recipe


def _grad_accum_from(args, given):
    if given is None:
        return f"to reach the global batch {args.reference_global_batch}"
    return "the recipe" if given == args.recipe_grad_accum else "--grad-accum"


def describe(recipe):
    """One line, e.g. 'global batch 1 x 32 x 1 = 32 (recipe: 256 at lr 0.1), lr 0.0125 =
    0.1 x 32 / 256 (linear scaling)'."""
    r = recipe
    return (f"global batch {r['world_size']} x {r['batch_size']} x {r['grad_accum']} = "
            f"{r['global_batch']} (recipe: {r['reference_global_batch']} at lr "
            f"{r['reference_lr']:g}), lr {r['lr']:.4g}" +
            ("" if r["lr_from"] == "--lr" else f" = {r['lr_from']}"))


def fix_hp(args, parser):
    """{short name: value} of the recipe values this run overrides, bs and lr first: the
    values the user gave, not those derived from the recipe (lr, grad_accum). The names
    are the parser's recipe flags (common/cli.py's RecipeParser), each under its short
    name, so a recipe flag cannot be left out."""
    values = {**vars(args), **(args.recipe or {}).get("given", {})}
    changed = {short: values[dest] for dest, short in parser.recipe_names().items()
               if values[dest] != parser.get_default(dest)}
    first = {short: changed.pop(short) for short in FIRST if short in changed}
    return {**first, **changed}
