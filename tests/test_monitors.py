"""Collapse monitors: healthy embeddings pass, collapsed ones are flagged."""

import math

import pytest
import torch

from sslreg.monitors import EmbeddingStd, RankMe


@pytest.fixture
def healthy():
    return torch.randn(512, 64, generator=torch.Generator().manual_seed(0))


def test_std_of_normalised_embeddings(healthy):
    metrics = EmbeddingStd()(healthy)
    assert metrics["embedding_std"] == pytest.approx(1 / math.sqrt(64), rel=0.05)
    assert EmbeddingStd().collapsed(metrics) is None


def test_std_flags_collapse_to_a_point(healthy):
    collapsed = healthy[:1].repeat(512, 1) + 1e-4 * healthy
    metrics = EmbeddingStd()(collapsed)
    assert metrics["embedding_std"] < 1e-3
    assert "collapsing" in EmbeddingStd().collapsed(metrics)


def test_std_hand_checked():
    # Two samples on opposite axes: every normalised coordinate is +-1 or 0.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = torch.tensor([1.0, 0.0]).std().item()  # std of each column
    assert EmbeddingStd()(z)["embedding_std"] == pytest.approx(expected)


def test_rankme_full_rank_and_collapse(healthy):
    assert RankMe()(healthy)["rankme"] > 50
    line = torch.randn(512, 1) @ torch.randn(1, 64)
    metrics = RankMe()(line)
    assert metrics["rankme"] == pytest.approx(1.0, abs=0.01)
    assert "effective rank" in RankMe().collapsed(metrics)


def test_rankme_equal_singular_values():
    # Orthonormal rows: k equal singular values give an effective rank of exactly k.
    assert RankMe()(torch.eye(8)[:5])["rankme"] == pytest.approx(5.0, rel=1e-4)
