"""Where a run stands: the one record that a checkpoint saves, a resume loads and
``train.json`` reports, so the three can never disagree about which fields count."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define
class Progress:
    """How far a run has trained, over all the sessions it took."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed over the whole run
    # Steps completed inside ``epoch``: 0 at an epoch's end, else where a mid-epoch
    # checkpoint (or a stop) left the epoch.
    epoch_step: int = 0
    elapsed: float = 0.0  # training seconds, writes and evaluation excluded
    images_seen: int = 0
    # Collapse warnings raised by the monitors, each "step N: why".
    monitor_warnings: list[str] = attrs.Factory(list)
    curve: list[list[float]] = attrs.Factory(list)  # [epoch, kNN accuracy] points

    def state(self) -> dict[str, Any]:
        """The checkpoint's progress entries (copies: the run goes on changing them)."""
        state = attrs.asdict(self)
        state["monitor_warnings"] = list(self.monitor_warnings)
        state["curve"] = [list(point) for point in self.curve]
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        """The progress a checkpoint saved with :meth:`state`."""
        return cls(**{field.name: state[field.name] for field in attrs.fields(cls)})

    @property
    def images_per_s(self) -> float | None:
        return self.images_seen / self.elapsed if self.elapsed else None

    def info(self, epochs: int) -> dict[str, Any]:
        """The progress entries of ``train.json`` (which the run index reads)."""
        rate = self.images_per_s
        return {"epochs_done": self.epoch, "epochs": epochs, "steps": self.step,
                "wall_time_s": round(self.elapsed, 2),
                "images_per_s": round(rate, 1) if rate else None,
                "monitor_warnings": list(self.monitor_warnings),
                "curve": [list(point) for point in self.curve]}
