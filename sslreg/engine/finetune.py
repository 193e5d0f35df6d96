"""Fine-tuning evaluation (opt-in: ``eval.finetune_epochs`` > 0).

A copy of the network and a fresh linear head are trained end to end with
cross-entropy on the probes' labelled training split: one crop-and-flip view per image
(the ``mae`` policy the ``supervised`` ceiling trains with), the ``eval.finetune_*``
optimizer, batch and base rate (scaled by batch / 256), a cosine schedule to zero, no
warm-up and no weight decay (SimCLR's fine-tuning recipe). The validation and test
splits are scored once, at the end of the budget: never a best epoch.

What is trained is what the method's ``features`` reads (e.g. MAE's mean of patch
tokens, DINO's teacher when it evaluates the teacher), called without its no-grad
decorator; a method whose features stay out of autograd fine-tunes its backbone
instead. ``result.json`` says which.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg.config import EvalConfig, OptimConfig, RunConfig
from sslreg.data import ImageDataset
from sslreg.engine.device import use_bf16
from sslreg.engine.optim import build_optimizer, lr_schedule
from sslreg.engine.splits import RunData
from sslreg.evaluation import extract_features
from sslreg.views import CropFlipViews, normalize


class Classifier(nn.Module):
    """``head(read(x))``: the network's readout and a linear head, trained together."""

    def __init__(self, network: nn.Module, read: Callable[[Tensor], Tensor], dim: int,
                 num_classes: int) -> None:
        super().__init__()
        self.network = network
        self.read = read
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.read(images))


def finetune_settings(e: EvalConfig) -> dict[str, Any]:
    """The keys a fine-tuning result was made with (a result made otherwise is stale)."""
    return {"epochs": e.finetune_epochs, "lr": e.finetune_lr,
            "batch_size": e.finetune_batch_size, "optimizer": e.finetune_optimizer}


def finetune(method: nn.Module, config: RunConfig, data: RunData,
             device: torch.device) -> dict[str, Any]:
    """Fine-tune a copy of ``method`` and score it: ``{"val": {"finetune_acc": ...},
    "test": {...}, "details": {"finetune": {...}}}`` (the shape of ``score``)."""
    started = time.perf_counter()
    splits = data.evaluation(config)
    train = splits["train"]
    mean, std = data.stats
    network = copy.deepcopy(method).to(device)
    sample = _normalized(train.images[:2], mean, std, device)
    read, reads, dim = readout(network, sample)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)  # the head's initialisation
        classifier = Classifier(network, read, dim, train.num_classes).to(device)
    steps, loss = train_classifier(classifier, train, config, data.stats, device)
    scores = {name: accuracy(classifier, splits[name], data.stats,
                             config.eval.batch_size, device) for name in ("val", "test")}
    detail = {"settings": finetune_settings(config.eval), "trains": reads,
              "readout": getattr(method, "readout", "backbone"), "steps": steps,
              "train_images": len(train), "final_train_loss": round(loss, 4),
              "seconds": round(time.perf_counter() - started, 2)}
    return {"val": {"finetune_acc": scores["val"]}, "test": {"finetune_acc": scores["test"]},
            "details": {"finetune": detail}}


def readout(network: nn.Module, sample: Tensor) -> tuple[Callable[[Tensor], Tensor], str, int]:
    """What to train: the network's ``features`` without its no-grad decorator when
    gradients flow through it, else its backbone. Returns the callable, which one
    (``"features"`` or ``"backbone"``) and the feature width."""
    network.requires_grad_(True)
    network.eval()  # the check leaves BatchNorm statistics alone
    features = inspect.unwrap(type(network).features).__get__(network)
    with torch.enable_grad():
        out = features(sample)
        if out.requires_grad:
            return features, "features", out.shape[1]
        return network.backbone, "backbone", network.backbone(sample).shape[1]


def train_classifier(classifier: Classifier, split: ImageDataset, config: RunConfig,
                     stats: tuple[tuple[float, ...], tuple[float, ...]],
                     device: torch.device) -> tuple[int, float]:
    """``eval.finetune_epochs`` epochs over ``split``; returns the optimizer steps taken
    and the last epoch's mean training loss."""
    e = config.eval
    batch = min(e.finetune_batch_size, len(split))
    steps_per_epoch = len(split) // batch
    policy = CropFlipViews(channels=split.channels, image_size=split.images.shape[-1],
                           mean=stats[0], std=stats[1])
    optim = OptimConfig(name=e.finetune_optimizer, lr=e.finetune_lr, weight_decay=0.0,
                        warmup_epochs=0.0)
    optimizer = build_optimizer(classifier, optim, device)
    schedule = lr_schedule(optim, batch, steps_per_epoch, e.finetune_epochs).tolist()
    images, labels = split.images.to(device), split.labels.to(device)
    generator = torch.Generator(device=device).manual_seed(config.train.seed)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if use_bf16(config.train.precision, device) else contextlib.nullcontext())
    classifier.train()
    step, loss_sum = 0, torch.zeros((), device=device)
    for _ in range(e.finetune_epochs):
        order = torch.randperm(len(images), device=device, generator=generator)
        loss_sum.zero_()
        for index in range(steps_per_epoch):
            rows = order[index * batch:(index + 1) * batch]
            (view,) = policy(images[rows], generator)
            for group in optimizer.param_groups:
                group["lr"] = schedule[step]
            with autocast:
                loss = F.cross_entropy(classifier(view).float(), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
    return step, (loss_sum / steps_per_epoch).item()


def accuracy(classifier: nn.Module, split: ImageDataset,
             stats: tuple[tuple[float, ...], tuple[float, ...]], batch_size: int,
             device: torch.device) -> float:
    """The fraction of ``split`` the classifier gets right (in eval mode)."""
    logits = extract_features(classifier, split.images, mean=stats[0], std=stats[1],
                              batch_size=batch_size, device=device)
    return (logits.argmax(dim=1) == split.labels.cpu()).float().mean().item()


def _normalized(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...],
                device: torch.device) -> Tensor:
    return normalize(images.to(device).float().div_(255), mean, std)
