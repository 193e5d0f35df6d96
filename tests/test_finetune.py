"""Fine-tuning evaluation (sslreg.engine.finetune) on a tiny, clearly learnable task."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslreg.config import EvalConfig, RunConfig, TrainConfig
from sslreg.data import ImageDataset
from sslreg.engine import finetune as finetune_module
from sslreg.engine.finetune import finetune
from sslreg.engine.splits import RunData
from sslreg.evaluation import extract_features, linear_probe
from sslreg.interfaces import Method


class Pixels(Method):
    """A method whose features are a random linear map of the pixels to 2 numbers."""

    def training_step(self, views: list[Tensor]):  # never pretrained here
        raise NotImplementedError


def brightness(n: int, seed: int) -> ImageDataset:
    """8 x 8 images of uniform grey 0.35 (class 0) or 0.65 (class 1) under heavy pixel
    noise: the mean pixel separates them, any crop and flip keeps the class, and a
    random 2-d projection of the pixels sees the difference only dimly."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, (n,), generator=generator)
    grey = 0.35 + 0.3 * labels.float().view(n, 1, 1, 1)
    images = (grey + 0.3 * torch.randn(n, 1, 8, 8, generator=generator)).clamp(0, 1)
    return ImageDataset(images=(images * 255).round().to(torch.uint8), labels=labels,
                        classes=("dark", "bright"), name=f"brightness/{seed}")


def tiny_run(epochs: int) -> tuple[Method, RunConfig, RunData]:
    torch.manual_seed(0)
    method = Pixels(None, nn.Sequential(nn.Flatten(), nn.Linear(64, 2)))
    data = RunData(train=brightness(512, 1), val=brightness(400, 2), test=brightness(1000, 3),
                   stats=((0.5,), (0.3,)))
    config = RunConfig(method="pixels", train=TrainConfig(device="cpu"), eval=EvalConfig(
        finetune_epochs=epochs, finetune_lr=2.0, finetune_batch_size=64))
    return method, config, data


def frozen_probe(method: Method, data: RunData) -> float:
    encode = {name: extract_features(method.features, split.images, mean=(0.5,), std=(0.3,))
              for name, split in (("train", data.train), ("test", data.test))}
    return linear_probe(encode["train"], data.train.labels, encode["test"], data.test.labels,
                        num_classes=2).accuracy


def test_finetuning_learns_what_the_frozen_features_miss_and_leaves_the_method_alone():
    method, config, data = tiny_run(epochs=5)
    before = [p.clone() for p in method.parameters()]
    frozen = frozen_probe(method, data)
    tuned = finetune(method, config, data, torch.device("cpu"))
    assert frozen < 0.8  # measured 0.66: the random projection blurs the grey level
    assert tuned["test"]["finetune_acc"] >= max(frozen, 0.95), (frozen, tuned)
    assert tuned["val"]["finetune_acc"] >= 0.95
    detail = tuned["details"]["finetune"]
    assert detail["steps"] == 5 * (512 // 64) and detail["trains"] == "features"
    assert detail["settings"] == {"epochs": 5, "lr": 2.0, "batch_size": 64,
                                  "optimizer": "sgd"}
    # A copy was trained: the evaluated method is untouched.
    assert all(torch.equal(a, b) for a, b in zip(before, method.parameters(), strict=True))


def test_finetuning_is_scored_once_per_split_at_the_end_of_the_budget(monkeypatch):
    trained, scored = [], []
    train, score = finetune_module.train_classifier, finetune_module.accuracy

    def spy_train(classifier, *args, **kwargs):
        result = train(classifier, *args, **kwargs)
        trained.append([p.detach().clone() for p in classifier.parameters()])
        return result

    def spy_score(classifier, split, *args, **kwargs):
        scored.append((split.name, [p.detach().clone() for p in classifier.parameters()]))
        return score(classifier, split, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "train_classifier", spy_train)
    monkeypatch.setattr(finetune_module, "accuracy", spy_score)
    method, config, data = tiny_run(epochs=3)
    finetune(method, config, data, torch.device("cpu"))
    assert [name for name, _ in scored] == ["brightness/2", "brightness/3"]  # val, test
    for _, weights in scored:  # the last step's weights, not a best epoch's
        assert all(torch.equal(a, b) for a, b in zip(weights, trained[0], strict=True))


class NoGradFeatures(Pixels):
    """Features computed outside autograd (detached): the backbone is trained instead."""

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        return self.backbone(images).detach()


def test_features_outside_autograd_fine_tune_the_backbone():
    _, config, data = tiny_run(epochs=1)
    method = NoGradFeatures(None, nn.Sequential(nn.Flatten(), nn.Linear(64, 2)))
    tuned = finetune(method, config, data, torch.device("cpu"))
    assert tuned["details"]["finetune"]["trains"] == "backbone"
