"""What the model scripts share, so that each says only its model and its recipe: the
recipe ResNet50 and MobileNetV2 both train by (SGD with momentum, StepLR per epoch, a
torchvision classifier from scratch), and an inference case from its weights to its
record. No torch at the top: a script imports this module before it reads its flags.
"""
from __future__ import annotations

import importlib

from common import cli, flags


def model_builder(dotted):
    """The function a dotted path names ('torchvision.models.resnet50'), imported when the
    run starts, not when the script reads its flags."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def step_lr_parser(doc, *, weight_decay, lr_step_epochs, lr_gamma, **defaults):
    """The flags of the SGD and StepLR recipe, each with the model's own default."""
    p = cli.train_parser(doc, **defaults)
    recipe = p.add_recipe_argument  # flag, its short name in fix_hp, as add_argument
    recipe("--momentum", "momentum", type=flags.fraction, default=0.9)
    recipe("--weight-decay", "wd", type=flags.non_negative_float, default=weight_decay)
    recipe("--lr-step-epochs", "lr_step", type=flags.positive_int, default=lr_step_epochs)
    recipe("--lr-gamma", "lr_gamma", type=flags.positive_float, default=lr_gamma)
    return p


def step_lr_training(name, model):
    """The main(args, parser) of a script that trains the classifier the dotted path `model`
    builds (as build(num_classes=...)) by the SGD and StepLR recipe; its record names the
    model `name`."""
    def main(args, parser):
        import torch

        from common import data, dist, optim, record, train_loop
        run = dist.start(args)
        train_loader, val_loader, num_classes, normalize = data.imagenet_inputs(args, run)
        build = model_builder(model)
        net, flops = train_loop.place_model(build(num_classes=num_classes), args, run)
        optimizer = optim.make(torch.optim.SGD, net.parameters(), args.optimizer_impl,
                               run.device, lr=args.lr, momentum=args.momentum,
                               weight_decay=args.weight_decay)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, args.lr_step_epochs,
                                                    args.lr_gamma)
        figures, served_checkpoint = train_loop.train(
            run, args, net, optimizer, train_loader=train_loader, val_loader=val_loader,
            normalize=normalize, loss_fn=torch.nn.CrossEntropyLoss(),
            scheduler=scheduler, scheduler_per="epoch")
        result = record.train_record(run, args, parser, name, figures, flops)
        return record.conclude(run, args, result, served_checkpoint)
    return main


def classifier_inference(name, model):
    """The main(args, parser) of a script that serves the classifier the dotted path `model`
    builds, with ImageNet's evaluation transform."""
    def main(args, parser):
        build = model_builder(model)
        return serve(args, name, lambda classes: build(num_classes=classes))
    return main


def serve(args, name, build, *, load=None, fixed=None, transform=None, mean=None, std=None):
    """An inference case: build(classes) for the validation set's classes; the weights of
    --weights, by load(model, path, run) (default: common.weights.load_weights), or random
    ones, said; fixed(model) once the weights are in; both passes (common/infer_loop.py);
    the record; the run's exit code. The transform, mean and std default to ImageNet's
    evaluation ones (common/data.py)."""
    from common import data, dist, infer_loop, record
    from common.weights import load_weights
    run = dist.start(args)
    transform = transform or data.eval_transform(args.image_size)
    loader, num_classes, normalize = data.val_inputs(
        args, run, transform, mean or data.IMAGENET_MEAN, std or data.IMAGENET_STD)
    model = build(num_classes)
    if args.weights:
        (load or load_weights)(model, args.weights, run)
    else:
        dist.print0(run, "no --weights: random weights, the figures are speed only")
    if fixed:
        fixed(model)
    figures = infer_loop.run_inference(run, args, model, loader, normalize)
    result = record.infer_record(run, args, name, figures, args.weights)
    return record.conclude(run, args, result)
