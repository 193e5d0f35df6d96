"""Built-in collapse monitors, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable

from sslreg.hookspecs import hookimpl
from sslreg.monitors import EmbeddingStd, RankMe
from sslreg.specs import MonitorSpec


@hookimpl
def register_monitors(register: Callable[[MonitorSpec], None]) -> None:
    """Register the built-in collapse monitors."""
    register(MonitorSpec(
        name="embedding_std",
        factory=EmbeddingStd,
        description="std of L2-normalised embeddings: ~1/sqrt(D) healthy, ~0 collapsed",
    ))
    register(MonitorSpec(
        name="rankme",
        factory=RankMe,
        description="effective rank of the embeddings (RankMe): ~1 means collapse",
    ))
