"""Frozen-backbone evaluation: kNN, linear probe, feature extraction (sslreg.evaluation)."""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sslreg.evaluation import (
    evaluate_features,
    extract_features,
    knn_accuracy,
    knn_predict,
    knn_predict_many,
    label_efficient,
    label_efficient_probes,
    label_subsets,
    linear_probe,
    pixel_features,
    subset_probe,
)
from sslreg.evaluation import linear as linear_module
from sslreg.evaluation.linear import fit_candidates, holdout_split

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def blobs(n: int, dim: int, num_classes: int, separation: float, seed: int) -> tuple[Tensor,
                                                                                      Tensor]:
    """(n, dim) Gaussian class clusters around fixed centres, and their (n,) labels."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=generator)
    return separation * centres[labels] + torch.randn(n, dim, generator=generator), labels


# --- kNN -------------------------------------------------------------------------------


def knn_reference(train: Tensor, labels: Tensor, test: Tensor, num_classes: int, k: int,
                  temperature: float) -> list[int]:
    """Weighted cosine kNN, one test point at a time in plain Python."""
    predictions = []
    for query in test.tolist():
        similarities = []
        for point, label in zip(train.tolist(), labels.tolist(), strict=True):
            cosine = sum(a * b for a, b in zip(query, point, strict=True)) / (
                math.dist(query, [0] * len(query)) * math.dist(point, [0] * len(point)))
            similarities.append((cosine, label))
        scores = [0.0] * num_classes
        for cosine, label in sorted(similarities, reverse=True)[:k]:
            scores[label] += math.exp(cosine / temperature)
        predictions.append(max(range(num_classes), key=scores.__getitem__))
    return predictions


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.07), (5, 0.07), (7, 0.5), (40, 0.1)])
def test_knn_matches_brute_force_reference(k: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(3)
    train = torch.randn(40, 5, generator=generator)
    labels = torch.randint(3, (40,), generator=generator)
    test = torch.randn(15, 5, generator=generator)
    predicted = knn_predict(train, labels, test, num_classes=3, k=k, temperature=temperature)
    assert predicted.tolist() == knn_reference(train, labels, test, 3, k, temperature)


def test_knn_weights_votes_by_exp_similarity() -> None:
    # Query along +x. Its nearest neighbour is class 0, the next two are class 1, so an
    # unweighted 3-NN majority says 1; with T = 0.07, exp(sim / T) of the closest point
    # (cos 0.05 rad) outweighs the two at 1 rad by e^(6.5) / 2.
    angles = [0.05, 1.0, -1.0, 3.0, 2.9, -2.9]
    train = torch.tensor([[math.cos(a), math.sin(a)] for a in angles])
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    query = torch.tensor([[1.0, 0.0]])
    sharp = knn_predict(train, labels, query, num_classes=3, k=3, temperature=0.07)
    flat = knn_predict(train, labels, query, num_classes=3, k=3, temperature=100.0)
    assert sharp.tolist() == [0]
    assert flat.tolist() == [1]  # near-equal weights: the plain majority
    assert knn_reference(train, labels, query, 3, 3, 0.07) == [0]


def test_knn_is_cosine_so_feature_scale_does_not_matter() -> None:
    train, labels = blobs(60, 8, 4, 1.0, seed=1)
    test, _ = blobs(20, 8, 4, 1.0, seed=2)
    scales = torch.rand(60, 1) * 100 + 0.01
    assert torch.equal(knn_predict(train, labels, test, num_classes=4),
                       knn_predict(train * scales, labels, test * 3, num_classes=4))


def test_knn_chunked_equals_unchunked() -> None:
    train, labels = blobs(200, 16, 5, 0.7, seed=1)
    test, _ = blobs(37, 16, 5, 0.7, seed=2)
    whole = knn_predict(train, labels, test, num_classes=5, chunk_size=1024)
    for chunk_size in (1, 5, 36):
        chunked = knn_predict(train, labels, test, num_classes=5, chunk_size=chunk_size)
        assert torch.equal(chunked, whole)


def test_knn_k_larger_than_train_set_is_clamped() -> None:
    train, labels = blobs(6, 4, 2, 1.0, seed=1)
    test, _ = blobs(9, 4, 2, 1.0, seed=2)
    assert torch.equal(knn_predict(train, labels, test, num_classes=2, k=1000),
                       knn_predict(train, labels, test, num_classes=2, k=6))


def test_knn_predict_many_equals_one_call_per_pair() -> None:
    train, labels = blobs(300, 8, 4, 0.5, seed=1)
    test, _ = blobs(50, 8, 4, 0.5, seed=2)
    many = knn_predict_many(train, labels, test, num_classes=4, ks=(3, 50), chunk_size=16,
                            temperatures=(0.07, 0.5))
    assert torch.equal(many[0], knn_predict(train, labels, test, num_classes=4, k=3))
    assert torch.equal(many[1], knn_predict(train, labels, test, num_classes=4, k=50,
                                            temperature=0.5))


def test_knn_accuracy_is_the_fraction_correct() -> None:
    train, labels = blobs(100, 8, 3, 2.0, seed=1)
    test, test_labels = blobs(40, 8, 3, 2.0, seed=2)
    predicted = knn_predict(train, labels, test, num_classes=3)
    expected = (predicted == test_labels).float().mean().item()
    assert knn_accuracy(train, labels, test, test_labels, num_classes=3) == expected
    assert expected > 0.9  # well separated blobs


@pytest.mark.parametrize("change", [
    {"k": 0}, {"temperature": 0.0}, {"chunk_size": 0}, {"num_classes": 2},
    {"train_labels": torch.zeros(9, dtype=torch.long)}, {"test_features": torch.randn(4, 3)},
    {"train_features": torch.randn(10)}, {"train_labels": torch.zeros(10)},
])
def test_knn_rejects_bad_inputs(change: dict) -> None:
    arguments = {"train_features": torch.randn(10, 4), "test_features": torch.randn(4, 4),
                 "train_labels": torch.arange(10) % 3, "num_classes": 3} | change
    with pytest.raises(ValueError) as error:
        knn_predict(**arguments)
    assert "\n" not in str(error.value)


# --- linear probe --------------------------------------------------------------------


@pytest.fixture
def fitted_probes(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every probe ``linear._fit`` returns, in call order (the search's, then the refit)."""
    probes: list = []
    fit = linear_module._fit

    def spy(*args: Any, **kwargs: Any) -> list:
        result = fit(*args, **kwargs)
        probes.append(result)
        return result

    monkeypatch.setattr(linear_module, "_fit", spy)
    return probes


def test_linear_probe_separates_blobs_and_ties_go_to_the_strongest_decay() -> None:
    train, labels = blobs(400, 20, 4, 3.0, seed=1)
    test, test_labels = blobs(200, 20, 4, 3.0, seed=2)
    result = linear_probe(train, labels, test, test_labels, num_classes=4)
    assert result.accuracy >= 0.99
    assert set(result.holdout_accuracy) == {1e-6, 1e-5, 1e-4, 1e-3, 1e-2}
    best = max(result.holdout_accuracy.values())
    assert best == 1.0
    assert result.weight_decay == max(wd for wd, acc in result.holdout_accuracy.items()
                                      if acc == best)


def test_linear_probe_is_at_chance_on_random_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(400, 50, generator=generator), torch.randn(2000, 50)
    labels = torch.randint(4, (400,), generator=generator)
    test_labels = torch.randint(4, (2000,), generator=generator)
    result = linear_probe(train, labels, test, test_labels, num_classes=4)
    # 0.25 +- 5 standard errors of a 2000-sample accuracy: nothing leaks from the test set.
    assert abs(result.accuracy - 0.25) < 0.05


def test_linear_probe_choice_and_weights_never_see_the_test_set(fitted_probes: list) -> None:
    train, labels = blobs(300, 10, 3, 0.6, seed=1)
    test, test_labels = blobs(200, 10, 3, 0.6, seed=2)
    honest = linear_probe(train, labels, test, test_labels, num_classes=3)
    shuffled = test_labels[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    blind = linear_probe(train, labels, torch.randn(200, 10) * 50, shuffled, num_classes=3)
    assert honest.holdout_accuracy == blind.holdout_accuracy
    assert honest.weight_decay == blind.weight_decay
    half = len(fitted_probes) // 2
    for first, second in zip(fitted_probes[:half], fitted_probes[half:], strict=True):
        for a, b in zip(first, second, strict=True):
            assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert honest.accuracy > 0.8 and blind.accuracy < 0.6


def test_linear_probe_scores_the_test_set_once_with_the_refit_model(
    fitted_probes: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, Tensor]] = []
    predict = linear_module._Probe.predict

    def spy(probe: Any, features: Tensor) -> Tensor:
        calls.append((probe, features))
        return predict(probe, features)

    monkeypatch.setattr(linear_module._Probe, "predict", spy)
    train, labels = blobs(300, 10, 3, 0.6, seed=1)
    test, test_labels = blobs(200, 10, 3, 0.6, seed=2)
    linear_probe(train, labels, test, test_labels, num_classes=3)
    assert [i for i, (_, features) in enumerate(calls) if features is test] == [len(calls) - 1]
    assert calls[-1][0] is fitted_probes[-1][0]
    assert len(calls) == 6  # five holdout scores, then the test score


def test_linear_probe_standardizes_with_train_statistics_only(fitted_probes: list) -> None:
    train, labels = blobs(300, 10, 3, 2.0, seed=1)
    test, test_labels = blobs(300, 10, 3, 2.0, seed=2)
    train = train * torch.linspace(0.1, 10, 10) + 5  # unequal scales and a shared offset
    test = test * torch.linspace(0.1, 10, 10) + 5
    result = linear_probe(train, labels, test, test_labels, num_classes=3)
    (final,) = fitted_probes[-1]
    torch.testing.assert_close(final.mean, train.mean(0))
    torch.testing.assert_close(final.std, train.std(0, correction=0))
    # Statistics of the test set would cancel this shift; the train statistics keep it.
    shifted = linear_probe(train, labels, test + 40, test_labels, num_classes=3)
    assert result.accuracy > 0.95 and shifted.accuracy < 0.6


def test_linear_probe_matches_sklearn_logistic_regression(fitted_probes: list) -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    train, labels = blobs(500, 12, 3, 0.5, seed=1)
    test, test_labels = blobs(300, 12, 3, 0.5, seed=2)
    weight_decay = 1e-2
    result = linear_probe(train, labels, test, test_labels, num_classes=3,
                          weight_decays=(weight_decay,), max_iter=500)
    (final,) = fitted_probes[-1]
    standardized = ((train - train.mean(0)) / train.std(0, correction=0)).double().numpy()
    # sklearn minimises C * sum(CE) + ||W||^2 / 2, i.e. ours with weight_decay = 1 / (C N).
    reference = sklearn.LogisticRegression(C=1 / (weight_decay * 500), tol=1e-10,
                                           max_iter=10_000).fit(standardized, labels.numpy())
    np.testing.assert_allclose(final.weight.numpy(), reference.coef_, atol=2e-3)
    test_standardized = ((test - train.mean(0)) / train.std(0, correction=0)).double().numpy()
    expected = (reference.predict(test_standardized) == test_labels.numpy()).mean()
    assert result.accuracy == pytest.approx(expected, abs=1 / 300)


def test_more_features_than_rows_use_the_rows_span_and_match_sklearn() -> None:
    # Raw pixels of colour images have more dimensions than a small probe set has rows;
    # the basis then comes from the Gram matrix (O(N^3), not O(D^3)) and loses nothing.
    sklearn = pytest.importorskip("sklearn.linear_model")
    train, labels = blobs(40, 300, 3, 0.3, seed=3)
    x = (train - train.mean(0)) / train.std(0, correction=0)
    eigenvalues, rotation = linear_module._eigenbasis(x)
    assert rotation.shape == (300, 39)  # centred rows span 39 dimensions
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(39), atol=1e-4, rtol=0)
    torch.testing.assert_close((x @ rotation) @ rotation.T, x, atol=1e-3, rtol=0)
    full = torch.linalg.eigvalsh((x.T @ x / 40).double()).float()
    torch.testing.assert_close(eigenvalues.sort().values, full[-39:], atol=1e-3, rtol=1e-3)
    weight_decay = 1e-2
    fitted = linear_module.fit_linear_probe(train, labels, num_classes=3,
                                            weight_decays=(weight_decay,), max_iter=500)
    reference = sklearn.LogisticRegression(C=1 / (weight_decay * 40), tol=1e-10,
                                           max_iter=10_000).fit(x.double().numpy(),
                                                                labels.numpy())
    np.testing.assert_allclose(fitted.probe.weight.numpy(), reference.coef_, atol=2e-3)


def test_holdout_split_is_a_seeded_stratified_partition() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    fit, held = holdout_split(labels, 0.1, seed=0)
    assert sorted(torch.cat([fit, held]).tolist()) == list(range(100))
    assert torch.bincount(labels[held]).tolist() == [5, 3, 2]
    assert torch.equal(held, holdout_split(labels, 0.1, seed=0)[1])
    assert not torch.equal(held, holdout_split(labels, 0.1, seed=1)[1])


@pytest.mark.parametrize("change", [
    {"holdout_fraction": 0.0}, {"holdout_fraction": 0.5}, {"weight_decays": ()},
    {"weight_decays": (-1.0,)}, {"max_iter": 0}, {"test_labels": torch.full((8,), 3)},
    {"train_labels": torch.arange(20) % 3 - 1}, {"test_labels": torch.zeros(7, dtype=int)},
    {"test_features": torch.randn(8, 5)},
])
def test_linear_probe_rejects_bad_inputs(change: dict) -> None:
    arguments = {"train_features": torch.randn(20, 4), "train_labels": torch.arange(20) % 3,
                 "test_features": torch.randn(8, 4), "test_labels": torch.arange(8) % 3,
                 "num_classes": 3} | change
    with pytest.raises(ValueError) as error:
        linear_probe(**arguments)
    assert "\n" not in str(error.value)


# --- evaluate_features -----------------------------------------------------------------


def test_evaluate_features_reports_every_metric_as_a_fraction() -> None:
    train, labels = blobs(300, 8, 3, 2.0, seed=1)
    test, test_labels = blobs(100, 8, 3, 2.0, seed=2)
    results = evaluate_features(train, labels, test, test_labels, num_classes=3,
                                knn_k=(5, 20), knn_temperature=(0.07, 0.1))
    assert set(results) == {"linear_acc", "linear_weight_decay", "knn5_acc", "knn20_acc"}
    assert results["knn5_acc"] == knn_accuracy(train, labels, test, test_labels,
                                               num_classes=3, k=5)
    assert all(0.9 < results[key] <= 1 for key in ("linear_acc", "knn5_acc", "knn20_acc"))
    with pytest.raises(ValueError):
        evaluate_features(train, labels, test, test_labels, num_classes=3, knn_k=(5, 20),
                          knn_temperature=(0.07,))


# --- feature extraction ----------------------------------------------------------------


class ModeRecorder(nn.Module):
    """A small conv encoder with batch norm that remembers its mode at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.norm = nn.BatchNorm2d(6)
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return self.norm(self.conv(x)).relu().mean(dim=(2, 3))


def test_extract_features_matches_a_manual_loop_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    encoder = ModeRecorder().train()
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    running_mean = encoder.norm.running_mean.clone()
    features = extract_features(encoder, images, mean=mean, std=std, batch_size=4)
    assert encoder.training and encoder.modes == [False, False, False]  # 4 + 4 + 2
    assert torch.equal(encoder.norm.running_mean, running_mean)
    encoder.eval()
    normalised = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.cat([encoder(normalised[i : i + 3]) for i in range(0, 10, 3)])
    torch.testing.assert_close(features, expected)
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    assert not features.is_inference()  # autograd may save it (the probe trains on it)
    extract_features(encoder, images, mean=mean, std=std)
    assert not encoder.training  # an eval-mode module stays in eval mode


def test_extract_features_restores_the_mode_when_the_encoder_fails() -> None:
    encoder = ModeRecorder().train()
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)  # 1 channel: the conv wants 3
    with pytest.raises(RuntimeError):
        extract_features(encoder, images, mean=(0.5,), std=(0.5,))
    assert encoder.training


def test_extract_features_takes_a_plain_function() -> None:
    images = torch.full((5, 2, 3, 3), 255, dtype=torch.uint8)
    features = extract_features(lambda x: x.flatten(1), images, mean=(0.5, 0.0),
                                std=(0.25, 2.0), batch_size=2)
    assert features.shape == (5, 18)
    assert torch.allclose(features[:, :9], torch.full((5, 9), 2.0))
    assert torch.allclose(features[:, 9:], torch.full((5, 9), 0.5))


@pytest.mark.parametrize(("images", "change"), [
    (torch.zeros(2, 3, 4, 4), {}),
    (torch.zeros(2, 4, 4, dtype=torch.uint8), {}),
    (torch.zeros(0, 3, 4, 4, dtype=torch.uint8), {}),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"mean": (0.5,)}),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"std": (1.0, 0.0, 1.0)}),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"batch_size": 0}),
])
def test_extract_features_rejects_bad_inputs(images: Tensor, change: dict) -> None:
    arguments = {"mean": (0.5,) * 3, "std": (0.5,) * 3} | change
    with pytest.raises(ValueError):
        extract_features(lambda x: x.flatten(1), images, **arguments)


def test_pixel_features_flatten_to_unit_range() -> None:
    images = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)
    features = pixel_features(images)
    assert features.dtype == torch.float32 and features.shape == (1, 4)
    torch.testing.assert_close(features, torch.tensor([[0.0, 1.0, 0.2, 0.4]]))


# --- real data -------------------------------------------------------------------------


def read_fashion_mnist(prefix: str, count: int) -> tuple[Tensor, Tensor]:
    """The first ``count`` images (count, 1, 28, 28) uint8 and labels of an IDX split."""
    with gzip.open(FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz") as file:
        images = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz") as file:
        labels = np.frombuffer(file.read(), np.uint8, offset=8)
    return torch.from_numpy(images[:count].copy()), torch.from_numpy(labels[:count].astype(int))


@pytest.mark.skipif(not FASHION_MNIST.exists(), reason="Fashion-MNIST is not installed")
def test_raw_pixel_floor_on_fashion_mnist() -> None:
    train_images, train_labels = read_fashion_mnist("train", 5000)
    test_images, test_labels = read_fashion_mnist("t10k", 2000)
    train, test = pixel_features(train_images), pixel_features(test_images)
    # Measured 0.837 (linear, weight decay 1e-2) and 0.7865 (kNN k=20, T=0.07).
    probe = linear_probe(train, train_labels, test, test_labels, num_classes=10)
    assert probe.accuracy > 0.80
    assert knn_accuracy(train, train_labels, test, test_labels, num_classes=10) > 0.75


# --- label-efficient probes -----------------------------------------------------------


def test_label_subsets_are_stratified_fixed_and_nested() -> None:
    # Class c has 100 * (c + 1) images, shuffled among the others.
    labels = torch.cat([torch.full((100 * (c + 1),), c) for c in range(3)])
    labels = labels[torch.randperm(600, generator=torch.Generator().manual_seed(0))]
    one = label_subsets(labels, num_classes=3, count=4, seed=7, fraction=0.01)
    ten = label_subsets(labels, num_classes=3, count=4, seed=7, fraction=0.1)
    shots = label_subsets(labels, num_classes=3, count=4, seed=7, shots=5)
    for subsets, per_class in ((one, [1, 2, 3]), (ten, [10, 20, 30]), (shots, [5, 5, 5])):
        for rows in subsets:
            assert torch.bincount(labels[rows], minlength=3).tolist() == per_class
            assert len(set(rows.tolist())) == len(rows)  # no image twice
    assert all(torch.equal(a, b) for a, b in zip(
        one, label_subsets(labels, num_classes=3, count=4, seed=7, fraction=0.01), strict=True))
    assert len({tuple(rows.tolist()) for rows in ten}) == 4  # each subset its own draw
    for small, large in zip(one, ten, strict=True):  # subset i of 1% lies in that of 10%
        assert set(small.tolist()) <= set(large.tolist())
    # A fraction never drops a class: round(0.001 * n) = 0 still takes one image.
    (tiny,) = label_subsets(labels, num_classes=3, count=1, seed=0, fraction=0.001)
    assert torch.bincount(labels[tiny], minlength=3).tolist() == [1, 1, 1]


def test_more_shots_than_a_class_has_is_a_clear_error() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 10)
    with pytest.raises(ValueError, match="5-shot probes need 5 training images of every "
                                         "class, but class 1 has 3 of the 23"):
        label_subsets(labels, num_classes=3, count=2, seed=0, shots=5)


def test_one_shot_on_separated_clusters_is_near_perfect_and_noise_is_at_chance() -> None:
    train, labels = blobs(600, 16, 4, 8.0, seed=1)
    val, test = blobs(400, 16, 4, 8.0, seed=2), blobs(2000, 16, 4, 8.0, seed=3)
    results = label_efficient_probes(train, labels, val, test, num_classes=4,
                                     fractions=(0.1,), shots=(1, 5), count=3, seed=0)
    assert list(results) == ["linear_10pct_acc", "shot1_acc", "shot5_acc"]
    assert results["shot1_acc"].images == 4 and results["shot5_acc"].images == 20
    assert all(r.test_accuracy > 0.98 and r.subsets == 3 for r in results.values())
    generator = torch.Generator().manual_seed(0)
    noise = [(torch.randn(n, 16, generator=generator), torch.randint(4, (n,), generator=generator))
             for n in (600, 400, 4000)]
    chance = label_efficient_probes(*noise[0], noise[1], noise[2], num_classes=4,
                                    shots=(5,), count=3, seed=0)["shot5_acc"]
    # 0.25 +- 5 standard errors of the mean over 3 x 4000 test images.
    assert abs(chance.test_accuracy - 0.25) < 0.03


def test_label_efficient_l2_is_chosen_on_validation_never_on_test() -> None:
    train, labels = blobs(200, 20, 3, 0.7, seed=1)
    val_x, _ = blobs(300, 20, 3, 0.7, seed=2)
    test_x, _ = blobs(300, 20, 3, 0.7, seed=3)
    subsets = label_subsets(labels, num_classes=3, count=1, seed=0, shots=4)
    probes = fit_candidates(train[subsets[0]], labels[subsets[0]], num_classes=3,
                            weight_decays=label_efficient.WEIGHT_DECAYS)
    # Validation labels agree with the weakest L2 strength's probe, test labels with the
    # strongest's: the choice must follow validation.
    val_y, test_y = probes[1e-6].predict(val_x), probes[10.0].predict(test_x)
    assert not torch.equal(probes[10.0].predict(val_x), val_y)
    result = subset_probe(train, labels, subsets, (val_x, val_y), (test_x, test_y),
                          num_classes=3)
    assert result.weight_decay == 1e-6 and result.val_accuracy == 1.0
    assert list(result.val_by_weight_decay) == sorted(label_efficient.WEIGHT_DECAYS)
    assert result.test_accuracy < 1.0
    blind = subset_probe(train, labels, subsets, (val_x, val_y),
                         (torch.randn(300, 20), test_y.flip(0)), num_classes=3)
    assert blind.weight_decay == result.weight_decay
    assert blind.val_by_weight_decay == result.val_by_weight_decay
