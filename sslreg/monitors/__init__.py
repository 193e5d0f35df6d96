"""Collapse monitors on embeddings. The built-in specs are registered by
:mod:`sslreg.builtins.monitors`."""

from __future__ import annotations

from sslreg.monitors.embedding_std import EmbeddingStd
from sslreg.monitors.rankme import RankMe

__all__ = ["EmbeddingStd", "RankMe"]
