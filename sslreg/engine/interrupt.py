"""Stopping a run without losing it: SIGTERM / SIGINT handling and the mid-epoch
checkpoint cadence (``train.checkpoint_every``)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs

from sslreg.config import checkpoint_cadence

# The signals that ask a run to stop after its current step: SIGTERM is how SLURM and
# most schedulers pre-empt a job, SIGINT is Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@attrs.define
class StopRequest:
    """Set by SIGTERM or SIGINT while training; the loop reads :attr:`signal_number`
    after each step (a Python attribute: no device synchronisation).

    The first signal only sets the flag. A second Ctrl-C stops at once (a user who
    means it), with the last checkpoint kept; a repeated SIGTERM, or one after Ctrl-C,
    changes nothing: torchrun and SLURM may each send one to the same process."""

    signal_number: int = 0
    _previous: dict[int, Any] = attrs.Factory(dict)

    def __call__(self, number: int, _frame: Any) -> None:
        if self.signal_number and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = self.signal_number or number

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle the stop signals inside the block; the previous handlers after it.
        Outside the main thread Python cannot handle signals: nothing is installed."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self)
        try:
            yield self
        finally:
            for number, handler in self._previous.items():
                # None: a handler installed outside Python, which cannot be put back.
                signal.signal(number, signal.SIG_DFL if handler is None else handler)
            self._previous.clear()


@attrs.define
class Cadence:
    """When a mid-epoch checkpoint is due: every ``steps`` steps and/or every
    ``seconds`` of wall time since the last checkpoint (0 = that kind is off)."""

    steps: int
    seconds: float
    last: float = attrs.Factory(time.monotonic)

    @classmethod
    def parse(cls, text: str) -> Cadence:
        return cls(*checkpoint_cadence(text))

    def due(self, step: int) -> bool:
        if self.steps and step % self.steps == 0:
            return True
        return bool(self.seconds) and time.monotonic() - self.last >= self.seconds

    def restart(self) -> None:
        """A checkpoint was just written: count from now."""
        self.last = time.monotonic()


def signal_name(number: int) -> str:
    return signal.Signals(number).name
