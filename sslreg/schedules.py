"""Per-step schedules declared as data (:class:`Schedule`), and the run's precomputed
tables of them (:class:`Timeline`), which hand each step its :class:`~sslreg.Clock`.

A method declares what it needs in :meth:`sslreg.Method.schedules`; the engine builds
the tables once, like the learning rate, keeps them in every checkpoint and refuses to
resume a run whose tables have another length. Values are computed in Python floats
(``math``), so a schedule equals the formula it replaces bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs
import torch
from attrs.validators import ge, in_, instance_of
from torch import Tensor

from sslreg.interfaces import Clock


@attrs.frozen(kw_only=True)
class Schedule:
    """One value per optimizer step of a run of ``n`` steps; build with the named
    constructors.

    * :meth:`constant`: ``start`` every step.
    * :meth:`linear`: ``start`` at step 0 to ``end`` at step ``steps``, then ``end``
      (a warm-up; ``steps`` may be fractional, 0 gives ``end`` throughout).
    * :meth:`cosine`: ``end - (end - start) * (cos(pi * t) + 1) / 2``, with
      ``t = s / (n - 1)`` (``start`` on the first step, ``end`` on the last), or with
      ``after_step`` ``t = (s + 1) / n``, the value for the state after step ``s``
      (an EMA update made in ``on_step_end``; ``end`` after the last step).
    """

    kind: str = attrs.field(validator=in_(("constant", "linear", "cosine")))
    start: float = attrs.field(converter=float)
    end: float = attrs.field(converter=float)
    steps: float = attrs.field(default=0.0, converter=float, validator=ge(0))
    after_step: bool = attrs.field(default=False, validator=instance_of(bool))

    @classmethod
    def constant(cls, value: float) -> Schedule:
        return cls(kind="constant", start=value, end=value)

    @classmethod
    def linear(cls, start: float, end: float, *, steps: float) -> Schedule:
        return cls(kind="linear", start=start, end=end, steps=steps)

    @classmethod
    def cosine(cls, start: float, end: float, *, after_step: bool = False) -> Schedule:
        return cls(kind="cosine", start=start, end=end, after_step=after_step)

    def at(self, step: int, total_steps: int) -> float:
        """The value on ``step`` (0-based) of a run of ``total_steps``."""
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            done = min(step / self.steps, 1.0) if self.steps > 0 else 1.0
            return self.start + (self.end - self.start) * done
        if self.after_step:
            t = (step + 1) / total_steps
        else:
            t = step / max(total_steps - 1, 1)
        return self.end - (self.end - self.start) * (math.cos(math.pi * t) + 1.0) / 2.0

    def values(self, total_steps: int) -> Tensor:
        """(total_steps,) float64: every step's value."""
        return torch.tensor([self.at(step, total_steps) for step in range(total_steps)],
                            dtype=torch.float64)


class Timeline:
    """A run's schedules as tables of ``total_steps`` values (float64 on the CPU), what
    checkpoints hold, with host copies so that a step reads its values without a
    device synchronisation."""

    def __init__(self, tables: Mapping[str, Tensor], total_steps: int,
                 steps_per_epoch: int) -> None:
        self.tables = {name: table.detach().cpu().to(torch.float64)
                       for name, table in tables.items()}
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        problem = self.mismatch(self.tables)
        if problem:
            raise ValueError(problem)
        self._lists = {name: table.tolist() for name, table in self.tables.items()}

    @classmethod
    def build(cls, schedules: Mapping[str, Schedule], total_steps: int,
              steps_per_epoch: int, **tables: Tensor) -> Timeline:
        """``schedules`` computed for the run, beside ready ``tables`` (the engine's lr)."""
        clash = sorted(set(schedules) & set(tables))
        if clash:
            raise ValueError(f"schedule names {clash} are the engine's; name them otherwise")
        computed = {name: s.values(total_steps) for name, s in schedules.items()}
        return cls({**tables, **computed}, total_steps, steps_per_epoch)

    def value(self, name: str, step: int) -> float:
        return self._lists[name][step]

    def clock(self, step: int) -> Clock:
        """The clock of ``step`` (steps done before it), with every table's value."""
        return Clock(step=step, epoch=step // self.steps_per_epoch,
                     epoch_step=step % self.steps_per_epoch, total_steps=self.total_steps,
                     values={name: values[step] for name, values in self._lists.items()})

    def mismatch(self, saved: Mapping[str, Tensor]) -> str | None:
        """Why ``saved`` tables (a checkpoint's) cannot continue this run, or None."""
        if set(saved) != set(self.tables):
            return f"schedules {sorted(saved)} where this run has {sorted(self.tables)}"
        for name, table in sorted(saved.items()):
            if len(table) != self.total_steps:
                return (f"schedule '{name}' has {len(table)} steps where this run has "
                        f"{self.total_steps} (epochs x steps per epoch)")
        return None
