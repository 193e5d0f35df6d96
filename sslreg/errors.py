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


class WriteError(SslregError, OSError):
    """A file could not be written (disk full, read-only folder); the file that was there
    before is kept. Also an ``OSError``, for callers that handle those."""


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on SIGTERM or SIGINT after finishing its step and writing a
    checkpoint. A ``KeyboardInterrupt``, so code that goes on after ordinary errors (a
    suite's next run) stops too; the command line exits with :attr:`exit_code`."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        # 128 + the signal, what a shell reports for a process the signal ended: 143
        # after SIGTERM (a scheduler's pre-emption: requeue), 130 after Ctrl-C.
        return 128 + self.signal_number
