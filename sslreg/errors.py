"""Errors whose message is one line a user can act on.

The CLI prints an :class:`SslregError` as a single line on stderr and exits non-zero,
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SslregError(Exception):
    """Base class: the message says what was wrong and the valid choices or the fix."""


class UnknownNameError(SslregError, LookupError):
    """A name (method, backbone, dataset, ...) that no plugin registered."""


class DuplicateNameError(SslregError):
    """Two plugins registered the same name for the same kind."""


class PluginError(SslregError):
    """A plugin broke the rules of a hook."""


class ConfigError(SslregError, ValueError):
    """A bad configuration key or value."""


class DataError(SslregError):
    """A dataset that is missing or unreadable."""


class CheckpointError(SslregError):
    """A checkpoint that is missing, corrupt or written for another run."""


class DivergedError(SslregError):
    """Training produced a non-finite loss."""
