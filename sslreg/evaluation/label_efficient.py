"""Label-efficient probes: the linear probe fit on a few labels of every class.

A setting is a fraction of every class of the probes' training split (``linear_1pct_acc``)
or k images of every class (``shot5_acc``); each is scored on several fixed, stratified
subsets. Subset i of every setting comes from one seeded shuffle of the split, so a
run's subsets are nested (1% in 10%, 1-shot in 5-shot in 10-shot) and every method and
floor scored on the same data sees the same ones.

A 1-shot subset has nothing to hold out, so the L2 strength is chosen on the
validation split: each subset gets one probe per strength (:data:`WEIGHT_DECAYS`,
standardised and fit exactly as :mod:`sslreg.evaluation.linear` does), the strength
with the best validation accuracy averaged over the subsets is kept, and the test split
is scored once, by the kept probes.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from sslreg.evaluation.knn import _check_inputs, _check_test_labels
from sslreg.evaluation.linear import WEIGHT_DECAYS as LINEAR_WEIGHT_DECAYS
from sslreg.evaluation.linear import fit_candidates

# The linear probe's L2 strengths and three stronger ones. With the linear probe's grid
# alone, its strongest value (1e-2) was chosen for 31 and 34 of the 43 quick-suite runs
# and floors at 5 and 10 shots: with a few images per class the best strength lay beyond
# it (VICReg, seed 0: +0.4 to +0.5 test points at 1, 5 and 10 shots with these added).
WEIGHT_DECAYS = (*LINEAR_WEIGHT_DECAYS, 1e-1, 1.0, 10.0)


@attrs.frozen
class SubsetProbeResult:
    """One setting's probes on every subset, at the strength validation chose."""

    val_accuracy: float  # mean over the subsets
    val_std: float  # sample std over the subsets (0 for one subset)
    test_accuracy: float
    test_std: float
    weight_decay: float  # the chosen L2 strength
    subsets: int
    images: int  # labelled images in each subset
    val_by_weight_decay: dict[float, float]  # the search: strength -> mean val accuracy


def fraction_name(fraction: float) -> str:
    """0.01 -> ``linear_1pct_acc``, 0.1 -> ``linear_10pct_acc``."""
    return f"linear_{fraction * 100:g}pct_acc"


def shots_name(shots: int) -> str:
    """5 -> ``shot5_acc``."""
    return f"shot{shots}_acc"


def label_subsets(labels: Tensor, *, num_classes: int, count: int, seed: int,
                  fraction: float | None = None, shots: int | None = None) -> list[Tensor]:
    """``count`` stratified subsets of row indices, each sorted.

    Args:
        labels: (N,) integer labels of the probes' training split.
        num_classes: number of classes.
        count: how many subsets.
        seed: subset i is drawn with ``seed + i``.
        fraction: take round(fraction * n_c) images of each class c (at least 1 of each
            class the split has), or
        shots: take this many images of each class (every class must have them).

    Returns:
        one int64 index tensor per subset; subsets of the same seed are nested.
    """
    if (fraction is None) == (shots is None):
        raise ValueError("give either fraction or shots")
    labels = labels.cpu().long()
    take = _per_class(torch.bincount(labels, minlength=num_classes).tolist(), fraction, shots)
    subsets = []
    for i in range(count):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + i))
        ranked = labels[order]
        rows = [order[ranked == c][:n] for c, n in enumerate(take)]
        subsets.append(torch.cat(rows).sort().values)
    return subsets


def _per_class(counts: list[int], fraction: float | None, shots: int | None) -> list[int]:
    if shots is not None:
        short = [(c, n) for c, n in enumerate(counts) if n < shots]
        if short:
            c, n = short[0]
            raise ValueError(f"{shots}-shot probes need {shots} training images of every "
                             f"class, but class {c} has {n} of the {sum(counts)} in the "
                             "probes' training split")
        return [shots] * len(counts)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    return [max(1, round(fraction * n)) if n else 0 for n in counts]


def subset_probe(
    train_features: Tensor, train_labels: Tensor, subsets: Sequence[Tensor],
    val: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *, num_classes: int,
    weight_decays: Sequence[float] = WEIGHT_DECAYS, max_iter: int = 100,
    device: torch.device | str = "cpu",
) -> SubsetProbeResult:
    """Fit the probes of one setting on each subset, choose the L2 strength on ``val``
    (features, labels), score ``test`` once with the chosen probes."""
    _check_inputs(train_features, train_labels, val[0], num_classes, chunk_size=1)
    for features, labels in (val, test):
        _check_test_labels(features, labels)
    if not subsets or any(len(rows) == 0 for rows in subsets):
        raise ValueError("need at least one non-empty subset")
    fitted = [fit_candidates(train_features[rows], train_labels[rows], num_classes=num_classes,
                             weight_decays=weight_decays, max_iter=max_iter, device=device)
              for rows in subsets]
    val_x, val_y = (t.to(device) for t in val)
    val_acc = {wd: [probes[wd].accuracy(val_x, val_y) for probes in fitted]
               for wd in fitted[0]}
    means = {wd: sum(accs) / len(accs) for wd, accs in val_acc.items()}
    # Ties go to the stronger regularisation, as in the linear probe.
    chosen = max(means, key=lambda wd: (means[wd], wd))
    test_x, test_y = (t.to(device) for t in test)
    test_acc = [probes[chosen].accuracy(test_x, test_y) for probes in fitted]
    return SubsetProbeResult(
        val_accuracy=means[chosen], val_std=_std(val_acc[chosen]),
        test_accuracy=sum(test_acc) / len(test_acc), test_std=_std(test_acc),
        weight_decay=chosen, subsets=len(subsets), images=len(subsets[0]),
        val_by_weight_decay=means)


def label_efficient_probes(
    train_features: Tensor, train_labels: Tensor, val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor], *, num_classes: int, fractions: Sequence[float] = (),
    shots: Sequence[int] = (), count: int = 5, seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, SubsetProbeResult]:
    """Every setting's :func:`subset_probe` on ``count`` subsets: ``{metric name:
    result}``, fractions first, then shots, in the order given."""
    settings = [(fraction_name(f), {"fraction": f}) for f in fractions]
    settings += [(shots_name(k), {"shots": k}) for k in shots]
    results = {}
    for name, setting in settings:
        subsets = label_subsets(train_labels, num_classes=num_classes, count=count,
                                seed=seed, **setting)
        results[name] = subset_probe(train_features, train_labels, subsets, val, test,
                                     num_classes=num_classes, device=device)
    return results


def _std(values: list[float]) -> float:
    return torch.tensor(values, dtype=torch.float64).std().item() if len(values) > 1 else 0.0
