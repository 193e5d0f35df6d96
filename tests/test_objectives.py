"""The built-in objectives against plain references, hand-computed cases and the registry.

References are written differently from the modules on purpose: Python loops over
anchors and matrix entries with ``math`` in float64, or numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sslreg
from sslreg.objectives import (
    BarlowTwinsLoss,
    CLIPLoss,
    CrossEntropyLoss,
    InfoNCELoss,
    NegativeCosineLoss,
    NTXentLoss,
    VICRegLoss,
    clip_loss,
    covariance_term,
    invariance_term,
    variance_term,
    vicreg_terms,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- plain references


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _neg_log_softmax(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def ref_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    vectors = [_unit(v) for v in z1.tolist() + z2.tolist()]
    n, total = len(z1), 0.0
    for anchor in range(2 * n):
        positive = (anchor + n) % (2 * n)
        others = [j for j in range(2 * n) if j != anchor]
        logits = [_dot(vectors[anchor], vectors[j]) / temperature for j in others]
        total += _neg_log_softmax(logits, others.index(positive))
    return total / (2 * n)


def ref_info_nce(query, key, negatives, temperature: float) -> float:
    queries = [_unit(v) for v in query.tolist()]
    keys = [_unit(v) for v in key.tolist()]
    total = 0.0
    for i, q in enumerate(queries):
        if negatives is None:
            logits = [_dot(q, k) / temperature for k in keys]
            total += _neg_log_softmax(logits, i)
        else:
            queue = [_unit(v) for v in negatives.tolist()]
            logits = [_dot(q, keys[i]) / temperature] + [_dot(q, m) / temperature for m in queue]
            total += _neg_log_softmax(logits, 0)
    return total / len(queries)


def ref_clip(image, text, temperature: float) -> float:
    images = [_unit(v) for v in image.tolist()]
    texts = [_unit(v) for v in text.tolist()]
    n, total = len(images), 0.0
    for i in range(n):
        row = [_dot(images[i], texts[j]) / temperature for j in range(n)]
        column = [_dot(images[j], texts[i]) / temperature for j in range(n)]
        total += (_neg_log_softmax(row, i) + _neg_log_softmax(column, i)) / 2
    return total / n


def ref_barlow_twins(z1, z2, lambda_offdiag: float, eps: float = 1e-5) -> float:
    def standardized_columns(z: torch.Tensor) -> list[list[float]]:
        columns = []
        for column in z.T.tolist():
            mean = sum(column) / len(column)
            biased_var = sum((x - mean) ** 2 for x in column) / len(column)
            columns.append([(x - mean) / math.sqrt(biased_var + eps) for x in column])
        return columns

    a, b = standardized_columns(z1), standardized_columns(z2)
    n, loss = len(z1), 0.0
    for i in range(len(a)):
        for j in range(len(b)):
            c_ij = sum(x * y for x, y in zip(a[i], b[j], strict=True)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambda_offdiag * c_ij**2
    return loss


def ref_vicreg(z1, z2, sim=25.0, std=25.0, cov=1.0) -> dict[str, float]:
    a, b = z1.double().numpy(), z2.double().numpy()
    d = a.shape[1]

    def variance(z: np.ndarray) -> float:
        return float(np.mean(np.maximum(0.0, 1 - np.sqrt(z.var(axis=0, ddof=1) + 1e-4))))

    def covariance(z: np.ndarray) -> float:
        matrix = np.cov(z, rowvar=False)  # unbiased, N - 1
        return float((np.sum(matrix**2) - np.sum(np.diag(matrix) ** 2)) / d)

    terms = {
        "invariance": float(np.mean((a - b) ** 2)),
        "variance": (variance(a) + variance(b)) / 2,
        "covariance": covariance(a) + covariance(b),
    }
    terms["loss"] = sim * terms["invariance"] + std * terms["variance"] + cov * terms["covariance"]
    return terms


# ---------------------------------------------------------------- against the references


@pytest.mark.parametrize("temperature", [0.5, 0.1, 1.0])
def test_nt_xent_matches_loop_reference(temperature):
    z1, z2 = _randn(3, 4, seed=1), _randn(3, 4, seed=2)
    loss = NTXentLoss(temperature=temperature)(z1, z2)
    assert loss.item() == pytest.approx(ref_nt_xent(z1, z2, temperature), rel=1e-5)


def test_nt_xent_by_hand_on_orthogonal_unit_vectors():
    e = torch.eye(4)
    # Pairs of identical basis vectors: positive cos 1, the two negatives cos 0.
    loss = NTXentLoss(temperature=0.5)(e[:2], e[:2])
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)
    # Four mutually orthogonal vectors: every logit is 0, so each anchor's loss is log(3).
    assert NTXentLoss()(e[:2], e[2:]).item() == pytest.approx(math.log(3), rel=1e-6)


def test_nt_xent_is_symmetric_and_scale_invariant():
    z1, z2 = _randn(5, 3, seed=3), _randn(5, 3, seed=4)
    loss = NTXentLoss()
    assert loss(z1, z2).item() == pytest.approx(loss(z2, z1).item(), rel=1e-6)
    assert loss(3 * z1, 0.5 * z2).item() == pytest.approx(loss(z1, z2).item(), rel=1e-5)


def test_info_nce_with_a_queue_matches_loop_reference():
    query, key, queue = _randn(3, 4, seed=5), _randn(3, 4, seed=6), _randn(5, 4, seed=7)
    loss = InfoNCELoss(temperature=0.2)(query, key, queue)
    assert loss.item() == pytest.approx(ref_info_nce(query, key, queue, 0.2), rel=1e-5)


def test_info_nce_in_batch_matches_loop_reference():
    query, key = _randn(3, 4, seed=8), _randn(3, 4, seed=9)
    loss = InfoNCELoss(temperature=0.2)(query, key)
    assert loss.item() == pytest.approx(ref_info_nce(query, key, None, 0.2), rel=1e-5)


def test_info_nce_queue_and_in_batch_differ_and_agree_by_hand():
    e = torch.eye(3)
    # Key equal to the query, one orthogonal queue entry: -log(e^(1/T) / (e^(1/T) + 1)).
    loss = InfoNCELoss(temperature=0.5)(e[:2], e[:2], e[2:])
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    # In-batch, the other key (orthogonal) is the one negative: the same number.
    assert InfoNCELoss(temperature=0.5)(e[:2], e[:2]).item() == pytest.approx(loss.item())
    query, key, queue = _randn(3, 4, seed=10), _randn(3, 4, seed=11), _randn(6, 4, seed=12)
    assert InfoNCELoss()(query, key, queue).item() != pytest.approx(
        InfoNCELoss()(query, key).item(), rel=1e-3
    )


def test_negative_cosine_by_hand():
    loss = NegativeCosineLoss()
    v = torch.tensor([[1.0, 2.0, 2.0], [0.0, -3.0, 4.0]])
    assert loss(v, v).item() == pytest.approx(-1.0, abs=1e-6)
    assert loss(v, 2.5 * v).item() == pytest.approx(-1.0, abs=1e-6)
    assert loss(v, -v).item() == pytest.approx(1.0, abs=1e-6)
    e = torch.eye(2)
    assert loss(e, e.flip(0)).item() == pytest.approx(0.0, abs=1e-7)
    # cos = 1 for the first row, 0 for the second: mean of -cos is -0.5.
    assert loss(e, torch.tensor([[3.0, 0.0], [1.0, 0.0]])).item() == pytest.approx(-0.5)


def test_negative_cosine_matches_loop_reference():
    p, z = _randn(4, 3, seed=13), _randn(4, 3, seed=14)
    expected = (
        -sum(_dot(_unit(a), _unit(b)) for a, b in zip(p.tolist(), z.tolist(), strict=True)) / 4
    )
    assert NegativeCosineLoss()(p, z).item() == pytest.approx(expected, rel=1e-5)


def test_negative_cosine_stops_the_gradient_on_z():
    p = _randn(4, 3, seed=15).requires_grad_()
    z = _randn(4, 3, seed=16).requires_grad_()
    NegativeCosineLoss()(p, z).backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_barlow_twins_matches_loop_reference():
    z1, z2 = _randn(3, 4, seed=17), _randn(3, 4, seed=18)
    for lambda_offdiag in (5e-3, 0.5):
        loss = BarlowTwinsLoss(lambda_offdiag=lambda_offdiag)(z1, z2)
        expected = ref_barlow_twins(z1, z2, lambda_offdiag)
        assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_barlow_twins_by_hand():
    # Two uncorrelated features (their centred columns are orthogonal).
    a = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.0, -2.0]])
    loss = BarlowTwinsLoss()
    # Perfectly correlated views: C is the identity, both terms vanish (up to the 1e-5 eps).
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-8)
    assert loss(a, 2 * a + 3).item() == pytest.approx(0.0, abs=1e-8)
    # Anti-correlated: C = -I, each diagonal entry costs (1 - (-1))^2 = 4.
    assert loss(a, -a).item() == pytest.approx(8.0, rel=1e-4)
    # Swapped features: C = [[0, 1], [1, 0]], so 2 * 1 + lambda * 2 * 1.
    swapped = BarlowTwinsLoss(lambda_offdiag=0.25)(a, a.flip(1))
    assert swapped.item() == pytest.approx(2.0 + 0.25 * 2.0, rel=1e-4)


def test_barlow_twins_uses_the_biased_std():
    # One feature [0, 2]: biased std 1, unbiased std sqrt(2). With the biased std the
    # standardised column is [-1, 1] and C_11 = (1 + 1) / 2 = 1, so the loss is ~0.
    z = torch.tensor([[0.0], [2.0]])
    assert BarlowTwinsLoss()(z, z).item() == pytest.approx(0.0, abs=1e-8)


def test_vicreg_matches_numpy_reference():
    z1, z2 = _randn(4, 3, seed=19), 0.3 * _randn(4, 3, seed=20)
    loss = VICRegLoss(sim_coeff=2.0, std_coeff=3.0, cov_coeff=4.0)
    expected = ref_vicreg(z1, z2, 2.0, 3.0, 4.0)
    for name, value in loss.terms(z1, z2).items():
        assert value.item() == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name
    assert loss(z1, z2).item() == pytest.approx(expected["loss"], rel=1e-5)


def test_vicreg_by_hand():
    loss = VICRegLoss()
    # Feature 1 = [1, -1, 0] has unbiased variance 1 (no hinge); feature 2 is constant,
    # std sqrt(1e-4) = 0.01, hinge 0.99. Identical views: invariance 0, covariance 0.
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    terms = loss.terms(z, z)
    assert terms["invariance"].item() == 0.0
    assert terms["variance"].item() == pytest.approx(0.99 / 2, rel=1e-6)
    assert terms["covariance"].item() == pytest.approx(0.0, abs=1e-8)
    assert loss(z, z).item() == pytest.approx(25 * 0.495, rel=1e-6)
    # Two identical features of variance 1: off-diagonal covariance 1, twice, over D = 2,
    # for each of the two branches.
    twins = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]])
    assert loss.terms(twins, twins)["covariance"].item() == pytest.approx(2.0, rel=1e-6)
    assert loss(twins, twins).item() == pytest.approx(2.0, rel=1e-6)
    # Invariance is the MSE: every entry differs by 1.
    assert loss.terms(twins, twins + 1)["invariance"].item() == pytest.approx(1.0)


def test_vicreg_public_terms_by_hand():
    # Feature 1 = [2, 0, -2]: unbiased variance 4, std 2.00002, no hinge; feature 2 =
    # [0.5, 0, -0.5]: variance 0.25, std sqrt(0.2501), hinge 1 - 0.50010.
    z = torch.tensor([[2.0, 0.5], [0.0, 0.0], [-2.0, -0.5]])
    assert variance_term(z).item() == pytest.approx((1 - math.sqrt(0.2501)) / 2, rel=1e-6)
    # cov(f1, f2) = (2 * 0.5 + 2 * 0.5) / 2 = 1, counted twice (above and below the
    # diagonal), squared, over D = 2.
    assert covariance_term(z).item() == pytest.approx(1.0, rel=1e-6)
    # Every entry of the second branch is off by 1 or -1: MSE 1.
    assert invariance_term(z, z + torch.tensor([1.0, -1.0])).item() == pytest.approx(1.0)


def test_vicreg_loss_is_its_public_terms_weighted():
    z1, z2 = _randn(5, 3, seed=31), _randn(5, 3, seed=32)
    loss = VICRegLoss(sim_coeff=2.0, std_coeff=3.0, cov_coeff=4.0)
    terms = vicreg_terms(z1, z2)
    assert terms["invariance"] == invariance_term(z1, z2)
    assert terms["variance"] == (variance_term(z1) + variance_term(z2)) / 2
    assert terms["covariance"] == covariance_term(z1) + covariance_term(z2)
    weighted = 2 * terms["invariance"] + 3 * terms["variance"] + 4 * terms["covariance"]
    assert loss(z1, z2).item() == pytest.approx(weighted.item(), rel=1e-6)
    assert loss.weigh(loss.terms(z1, z2)).item() == pytest.approx(weighted.item(), rel=1e-6)


def test_clip_logit_scale_starts_at_one_over_t_and_is_learned():
    loss = CLIPLoss()  # the paper: T = 0.07, learned
    assert loss.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert loss.logit_scale.requires_grad and "logit_scale" in loss.state_dict()
    image, text = _randn(4, 3, seed=33), _randn(4, 3, seed=34)
    loss(image, text).backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.item() != 0
    assert not CLIPLoss(learn_temperature=False).logit_scale.requires_grad


def test_clip_clamp_keeps_the_scale_between_1_and_100():
    loss = CLIPLoss()
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(500.0))
    loss.clamp_()
    assert loss.scale().item() == pytest.approx(100.0, rel=1e-6)
    with torch.no_grad():
        loss.logit_scale.fill_(-3.0)
    loss.clamp_()
    assert loss.scale().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_logit_scale=10.0 is below the initial scale"):
        CLIPLoss(temperature=0.07, max_logit_scale=10.0)


def test_clip_loss_at_a_given_scale_by_hand():
    e = torch.eye(2)
    # Scale 3: matching pairs score 3, the others 0: log(1 + e^-3) both ways.
    assert clip_loss(e, e, 3.0).item() == pytest.approx(math.log(1 + math.exp(-3)))
    assert clip_loss(e, e, torch.tensor(3.0)).item() == pytest.approx(math.log(1 + math.exp(-3)))


def test_cross_entropy_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # softmax (3/4, 1/4), (1/2, 1/2)
    labels = torch.tensor([0, 1])
    plain = (-math.log(0.75) - math.log(0.5)) / 2
    assert CrossEntropyLoss()(logits, labels).item() == pytest.approx(plain, rel=1e-6)
    # Smoothing 0.2 over C = 2: target (0.9, 0.1) for class 0, (0.1, 0.9) for class 1.
    smooth = (-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)) - math.log(0.5)) / 2
    smoothed = CrossEntropyLoss(label_smoothing=0.2)(logits, labels)
    assert smoothed.item() == pytest.approx(smooth, rel=1e-6)
    assert CrossEntropyLoss()(logits.bfloat16(), labels).dtype == torch.float32
    with pytest.raises(ValueError, match=r"logits \(N, C\) and labels \(N,\)"):
        CrossEntropyLoss()(logits, labels[:1])
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        CrossEntropyLoss(label_smoothing=1.5)


def test_clip_matches_loop_reference_and_is_symmetric():
    image, text = _randn(3, 4, seed=21), _randn(3, 4, seed=22)
    loss = CLIPLoss(temperature=0.07)
    assert loss(image, text).item() == pytest.approx(ref_clip(image, text, 0.07), rel=1e-5)
    assert loss(image, text).item() == pytest.approx(loss(text, image).item(), rel=1e-6)


def test_clip_by_hand():
    e = torch.eye(2)
    # Matching pairs with cos 1, the other pair cos 0: log(1 + e^(-1/T)) both ways.
    assert CLIPLoss(temperature=0.5)(e, e).item() == pytest.approx(math.log(1 + math.exp(-2)))
    # All four pairs identical: chance level, log(N).
    same = torch.ones(2, 3)
    assert CLIPLoss()(same, same).item() == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        NTXentLoss(),
        InfoNCELoss(),
        NegativeCosineLoss(),
        BarlowTwinsLoss(),
        VICRegLoss(),
        CLIPLoss(),
    ],
    ids=type,
)
def test_low_precision_inputs_give_a_float32_loss(loss):
    z1, z2 = _randn(6, 8, seed=23), _randn(6, 8, seed=24)
    low = loss(z1.bfloat16(), z2.bfloat16())
    assert low.dtype == torch.float32
    reference = loss(z1.bfloat16().float(), z2.bfloat16().float())
    assert low.item() == pytest.approx(reference.item(), rel=1e-6)


# ---------------------------------------------------------------- registry and errors

PAPER_DEFAULTS = {
    "nt_xent": (NTXentLoss, {"temperature": 0.5}),
    "info_nce": (InfoNCELoss, {"temperature": 0.2}),
    "negative_cosine": (NegativeCosineLoss, {}),
    "barlow_twins": (BarlowTwinsLoss, {"lambda_offdiag": 5e-3}),
    "vicreg": (VICRegLoss, {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0}),
    "clip": (CLIPLoss, {"temperature": 0.07}),
}


@pytest.fixture(scope="module")
def objectives():
    return sslreg.load_registry().objectives


@pytest.mark.parametrize("name", sorted(PAPER_DEFAULTS))
def test_registry_creates_each_objective_with_paper_defaults(objectives, name):
    cls, defaults = PAPER_DEFAULTS[name]
    spec = objectives.get(name)
    assert spec.factory is cls and spec.plugin == "sslreg.builtins.objectives" and spec.paper
    loss = objectives.create(name)
    assert isinstance(loss, torch.nn.Module) and type(loss) is cls
    for attribute, value in defaults.items():
        assert getattr(loss, attribute) == value
    output = loss(_randn(4, 3, seed=25), _randn(4, 3, seed=26))
    assert output.ndim == 0 and torch.isfinite(output)


def test_registry_creates_cross_entropy(objectives):
    spec = objectives.get("cross_entropy")
    assert spec.factory is CrossEntropyLoss and spec.plugin == "sslreg.builtins.objectives"
    assert objectives.create("cross_entropy", label_smoothing=0.1).label_smoothing == 0.1


def test_registry_passes_options_through(objectives):
    assert objectives.create("nt_xent", temperature=0.2).temperature == 0.2
    assert objectives.create("vicreg", cov_coeff=0.0).cov_coeff == 0.0
    with pytest.raises(TypeError):
        objectives.create("clip", temprature=0.1)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("nt_xent", {"temperature": 0}, "nt_xent temperature must be a finite number > 0, got 0"),
        ("info_nce", {"temperature": -0.1}, "info_nce temperature must be .* > 0, got -0.1"),
        ("clip", {"temperature": float("nan")}, "clip temperature must be .* > 0, got nan"),
        ("barlow_twins", {"lambda_offdiag": -1e-3}, "lambda_offdiag must be .* >= 0"),
        ("vicreg", {"sim_coeff": -1}, "vicreg sim_coeff must be .* >= 0, got -1"),
        ("vicreg", {"std_coeff": float("inf")}, "vicreg std_coeff must be a finite number"),
        ("vicreg", {"cov_coeff": -2.0}, "vicreg cov_coeff must be .* >= 0"),
    ],
)
def test_registry_refuses_bad_options(objectives, name, options, message):
    with pytest.raises(ValueError, match=message):
        objectives.create(name, **options)


@pytest.mark.parametrize("name", sorted(PAPER_DEFAULTS))
def test_mismatched_shapes_are_refused(objectives, name):
    loss = objectives.create(name)
    with pytest.raises(ValueError, match=rf"{name} needs .* same shape \(N, D\), got \(3, 4\)"):
        loss(_randn(3, 4), _randn(4, 4))
    with pytest.raises(ValueError, match="same shape"):
        loss(_randn(3, 4), _randn(3, 5))
    with pytest.raises(ValueError, match="same shape"):
        loss(_randn(4), _randn(4))


@pytest.mark.parametrize("name", ["nt_xent", "info_nce", "barlow_twins", "vicreg", "clip"])
def test_a_batch_of_one_is_refused_where_the_loss_needs_two(objectives, name):
    with pytest.raises(ValueError, match=rf"{name} .*needs a batch of at least 2.*got 1"):
        objectives.create(name)(_randn(1, 4), _randn(1, 4))


def test_info_nce_refuses_a_queue_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"negatives of shape \(K, 4\).*got \(5, 3\)"):
        InfoNCELoss()(_randn(2, 4), _randn(2, 4), _randn(5, 3))
    # With a queue, a single query is fine: the queue holds the negatives.
    assert torch.isfinite(InfoNCELoss()(_randn(1, 4), _randn(1, 4), _randn(5, 4)))


def test_infonce_bound_is_log_k_minus_loss():
    from sslreg.objectives import infonce_bound

    loss = torch.tensor(1.0, requires_grad=True)
    bound = infonce_bound(loss, num_candidates=8)
    assert bound.item() == pytest.approx(math.log(8) - 1.0)
    assert not bound.requires_grad
    with pytest.raises(ValueError, match="at least 2"):
        infonce_bound(loss, num_candidates=1)
