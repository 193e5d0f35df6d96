"""Linear probe: multinomial logistic regression on standardized frozen features.

The protocol is honest by construction: the L2 strength is chosen on a held-out split
of the *training* features, the model is refit on the whole training set with that
strength, and the test set is scored exactly once. Nothing computed from the test
features or labels (not even standardization statistics) feeds back into the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from sslreg.data.dataset import stratified_split
from sslreg.evaluation.knn import _check_inputs, _check_label_range, _check_test_labels

# L-BFGS stops when the loss changes by less than TOLERANCE_CHANGE in one step (or the
# largest gradient entry falls below TOLERANCE_GRAD). Tighter values cost seconds at
# 60k x 512 features and move the test accuracy by less than 0.001.
TOLERANCE_GRAD = 1e-5
TOLERANCE_CHANGE = 1e-7
# A softmax's Hessian weights the feature covariance by about p(1 - p); 0.1 is its
# typical size, used to balance covariance against weight decay in the preconditioner.
CURVATURE = 0.1
# The L2 strengths every probe chooses from.
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


@attrs.frozen
class LinearProbeResult:
    """Outcome of :func:`linear_probe`."""

    accuracy: float  # test accuracy of the refit model
    weight_decay: float  # the chosen L2 strength
    holdout_accuracy: dict[float, float]  # the search: weight decay -> holdout accuracy


@attrs.frozen
class _Probe:
    """A fitted probe: standardization statistics of its training features and weights."""

    mean: Tensor  # (D,)
    std: Tensor  # (D,)
    weight: Tensor  # (C, D)
    bias: Tensor  # (C,)

    def predict(self, features: Tensor) -> Tensor:
        """(M, D) -> (M,) predicted labels."""
        x = (features.to(self.mean.device, torch.float32) - self.mean) / self.std
        return torch.addmm(self.bias, x, self.weight.T).argmax(dim=1)

    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        predictions = self.predict(features)
        return (predictions == labels.to(predictions.device)).float().mean().item()


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    holdout_fraction: float = 0.1,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    max_iter: int = 100,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> LinearProbeResult:
    """Fit a linear probe with the L2 strength chosen on a held-out split of the train set.

    Args:
        train_features: (N, D) frozen features of the labelled training images.
        train_labels: (N,) integer labels in [0, num_classes).
        test_features: (M, D) features scored once, after every choice is made.
        test_labels: (M,) integer labels in [0, num_classes).
        num_classes: number of classes.
        holdout_fraction: share of the training set held out to choose the L2 strength.
        weight_decays: candidate L2 strengths (lambda in mean CE + lambda * ||W||^2 / 2).
        max_iter: L-BFGS iterations per fit: one joint fit of every candidate on the
            fit split, then one refit on the whole training set.
        seed: seeds the holdout split.
        device: where the probe trains.

    Returns:
        test accuracy, the chosen weight decay and the holdout accuracy of every candidate.
    """
    _check_probe_inputs(train_features, train_labels, test_features, test_labels,
                        num_classes, holdout_fraction, weight_decays, max_iter)
    fitted = fit_linear_probe(train_features, train_labels, num_classes=num_classes,
                              holdout_fraction=holdout_fraction, weight_decays=weight_decays,
                              max_iter=max_iter, seed=seed, device=device)
    return LinearProbeResult(
        accuracy=fitted.accuracy(test_features, test_labels),
        weight_decay=fitted.weight_decay,
        holdout_accuracy=fitted.holdout_accuracy,
    )


@attrs.frozen
class FittedProbe:
    """A probe refit on the whole training set with the chosen L2 strength; score it
    on as many splits as needed (validation, test) without refitting."""

    probe: _Probe
    weight_decay: float  # the chosen L2 strength
    holdout_accuracy: dict[float, float]  # the search: weight decay -> holdout accuracy

    def accuracy(self, features: Tensor, labels: Tensor) -> float:
        _check_test_labels(features, labels)
        if labels.numel() == 0:
            raise ValueError("the scored split is empty")
        return self.probe.accuracy(features, labels)


def fit_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    *,
    num_classes: int,
    holdout_fraction: float = 0.1,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    max_iter: int = 100,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> FittedProbe:
    """The probe of :func:`linear_probe`, before any split is scored (same arguments,
    without the test features)."""
    _check_fit_inputs(train_features, train_labels, num_classes, holdout_fraction,
                      weight_decays, max_iter)
    device = torch.device(device)
    fit_rows, holdout_rows = holdout_split(train_labels, holdout_fraction, seed)
    holdout_accuracy, probes = _search(
        train_features, train_labels, fit_rows, holdout_rows, num_classes,
        weight_decays, max_iter, device,
    )
    # Ties go to the stronger regularisation: the simpler model, as in the one-SE rule.
    chosen = max(holdout_accuracy, key=lambda wd: (holdout_accuracy[wd], wd))
    (final,) = _fit(_Basis.of(train_features, device), train_labels, num_classes, [chosen],
                    max_iter, init=[probes[chosen]])
    return FittedProbe(probe=final, weight_decay=chosen,
                       holdout_accuracy={float(wd): holdout_accuracy[wd]
                                         for wd in weight_decays})


def holdout_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded split of row indices, stratified so each class keeps its share.

    Args:
        labels: (N,) integer labels.
        fraction: share of each class that goes to the holdout, rounded.
        seed: seeds the shuffle.

    Returns:
        (fit_rows, holdout_rows): int64 index tensors that partition range(N).
    """
    fit_rows, held = stratified_split(labels, fraction, seed)
    if not len(fit_rows) or not len(held):
        raise ValueError(f"holdout_fraction={fraction} leaves an empty split of "
                         f"{labels.shape[0]} training samples")
    return fit_rows, held


def _search(
    features: Tensor, labels: Tensor, fit_rows: Tensor, holdout_rows: Tensor,
    num_classes: int, weight_decays: Sequence[float], max_iter: int, device: torch.device,
) -> tuple[dict[float, float], dict[float, _Probe]]:
    """Fit one probe per candidate on ``fit_rows`` and score each on ``holdout_rows``."""
    probes = fit_candidates(features[fit_rows.to(features.device)],
                            labels[fit_rows.to(labels.device)], num_classes=num_classes,
                            weight_decays=weight_decays, max_iter=max_iter, device=device)
    hold_x = features[holdout_rows.to(features.device)]
    hold_y = labels[holdout_rows.to(labels.device)]
    return {wd: probe.accuracy(hold_x, hold_y) for wd, probe in probes.items()}, probes


def fit_candidates(
    features: Tensor, labels: Tensor, *, num_classes: int,
    weight_decays: Sequence[float] = WEIGHT_DECAYS, max_iter: int = 100,
    device: torch.device | str = "cpu",
) -> dict[float, _Probe]:
    """One probe per L2 strength, each fit on all of ``features`` (N, D) in one joint
    L-BFGS run: ``{weight_decay: probe}``, in increasing strength. The caller chooses
    among them on data the probes never saw."""
    candidates = sorted({float(wd) for wd in weight_decays})
    basis = _Basis.of(features, torch.device(device))
    fitted = _fit(basis, labels, num_classes, candidates, max_iter)
    return dict(zip(candidates, fitted, strict=True))


@attrs.frozen
class _Basis:
    """Standardized training features, rotated into the eigenbasis of their covariance.

    The rotation changes only the optimiser's coordinates, never the model: it lets
    :func:`_fit` rescale each eigen-direction so L-BFGS sees a near-isotropic problem.
    """

    mean: Tensor  # (D,)
    std: Tensor  # (D,)
    rotation: Tensor  # (D, R) orthonormal eigenvectors, one per column; R = D, or < N
    eigenvalues: Tensor  # (R,) covariance of the standardized features along each
    rotated: Tensor  # (N, R) standardized features @ rotation

    @classmethod
    def of(cls, features: Tensor, device: torch.device) -> _Basis:
        x = features.to(device, torch.float32)
        mean, std = _standardization(x)
        x = (x - mean) / std  # (N, D)
        eigenvalues, rotation = _eigenbasis(x)
        return cls(mean=mean, std=std, rotation=rotation, eigenvalues=eigenvalues,
                   rotated=x @ rotation)


def _eigenbasis(x: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (R,) and eigenvectors (D, R) of the covariance of ``x`` (N, D).

    With more features than rows (raw pixels of colour images: 12 288 at 64 px), the
    D x D eigendecomposition costs O(D^3), hours at 96 px. The covariance then has rank
    below N, and its eigenvectors with non-zero eigenvalues come from the N x N Gram
    matrix instead (x = U S V^T: V = x^T U / S). The probe loses nothing: with an L2
    penalty its optimal weights lie in the span of the training rows, which this basis
    spans.
    """
    rows, dims = x.shape
    if dims <= rows:
        eigenvalues, rotation = torch.linalg.eigh((x.T @ x / rows).double())
        return eigenvalues.clamp_min(0).float(), rotation.float()
    # In float64: float32 rounding would leave the centred rows' null direction an
    # eigenvalue of about 1e-7 of the largest, and dividing by its root amplifies noise.
    x64 = x.double()
    gram, left = torch.linalg.eigh(x64 @ x64.T)  # eigenvalues S^2, vectors U
    keep = gram > gram.max() * 1e-10
    singular = gram[keep].sqrt()
    rotation = (x64.T @ left[:, keep]) / singular
    return (singular.square() / rows).float(), rotation.float()


@torch.enable_grad()
def _fit(
    basis: _Basis, labels: Tensor, num_classes: int, weight_decays: Sequence[float],
    max_iter: int, init: Sequence[_Probe] | None = None,
) -> list[_Probe]:
    """Fit K independent probes, one per weight decay, in one full-batch L-BFGS run.

    Each minimises mean cross-entropy + weight_decay * ||W||^2 / 2 (bias free); their sum
    is separable, so the joint optimum is every probe's own. Joint, because one
    (N, D) x (D, K*C) matmul costs far less than K skinny (D, C) ones on a CPU.

    W = V * scale in the eigenbasis, and L-BFGS optimises V. The Hessian is about
    CURVATURE * covariance + weight_decay, so scale = (eigenvalue + weight_decay /
    CURVATURE)^(-1/2) makes it near-isotropic: the correlated features of a real backbone
    then converge in about a hundred iterations instead of many hundreds.
    """
    device = basis.rotated.device
    k = len(weight_decays)
    decay = torch.tensor(weight_decays, dtype=torch.float32, device=device).view(k, 1, 1)
    scale = (basis.eigenvalues + decay / CURVATURE + 1e-6).rsqrt()  # (K, 1, D)
    v, bias = _initial(basis, scale, num_classes, init)  # (K, C, D), (K, C)
    y = labels.to(device, torch.long).repeat_interleave(k)  # (N*K,), rows as in logits
    optimizer = torch.optim.LBFGS(
        [v, bias], lr=1, max_iter=max_iter, tolerance_grad=TOLERANCE_GRAD,
        tolerance_change=TOLERANCE_CHANGE, history_size=10, line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        weight = v * scale  # (K, C, D), in the eigenbasis
        logits = F.linear(basis.rotated, weight.flatten(0, 1), bias.flatten())  # (N, K*C)
        # The mean over N*K rows times K is the sum of the K mean cross-entropies.
        data = F.cross_entropy(logits.view(-1, num_classes), y) * k
        loss = data + 0.5 * (decay * weight.pow(2)).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = (v.detach() * scale) @ basis.rotation.T  # back to standardized features
    return [_Probe(mean=basis.mean, std=basis.std, weight=w, bias=b)
            for w, b in zip(weights, bias.detach(), strict=True)]


def _initial(
    basis: _Basis, scale: Tensor, num_classes: int, init: Sequence[_Probe] | None
) -> tuple[Tensor, Tensor]:
    """Starting V (K, C, D) and bias (K, C): zeros, or warm-started from fitted probes."""
    k, device = scale.shape[0], scale.device
    if init is None:
        v = torch.zeros(k, num_classes, scale.shape[-1], device=device)
        bias = torch.zeros(k, num_classes, device=device)
    else:
        weight = torch.stack([probe.weight.to(device) for probe in init])  # (K, C, D)
        v = weight @ basis.rotation / scale
        bias = torch.stack([probe.bias.to(device) for probe in init])
    return v.requires_grad_(True), bias.requires_grad_(True)


def _standardization(features: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and std (D,) of (N, D) features; constant features get std 1."""
    mean = features.mean(dim=0)
    std = features.std(dim=0, correction=0)
    # A constant feature (e.g. an always-black border pixel) carries no information;
    # dividing by ~0 would turn any test-time deviation into a huge logit.
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean, std


def _check_probe_inputs(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
    num_classes: int, holdout_fraction: float, weight_decays: Sequence[float], max_iter: int,
) -> None:
    _check_inputs(train_features, train_labels, test_features, num_classes, chunk_size=1)
    _check_test_labels(test_features, test_labels)
    if test_labels.numel() == 0:
        raise ValueError("test set is empty")
    _check_label_range(test_labels, num_classes, "test_labels")
    _check_fit_inputs(train_features, train_labels, num_classes, holdout_fraction,
                      weight_decays, max_iter)


def _check_fit_inputs(
    train_features: Tensor, train_labels: Tensor, num_classes: int, holdout_fraction: float,
    weight_decays: Sequence[float], max_iter: int,
) -> None:
    _check_inputs(train_features, train_labels, train_features, num_classes, chunk_size=1)
    if not 0 < holdout_fraction < 0.5:
        raise ValueError(f"holdout_fraction must be in (0, 0.5), got {holdout_fraction}")
    if not weight_decays or any(wd < 0 for wd in weight_decays):
        raise ValueError(f"weight_decays must be non-empty and >= 0, got {tuple(weight_decays)}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
