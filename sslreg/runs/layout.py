"""The run directory: one folder per run, named from its config so a re-run finds it.

    <out>/<method>-<dataset>-<backbone>-seed<N>-<digest>/
    (<dataset> reads <pretrain>-to-<eval> when eval.dataset names another dataset)
        config.json     the resolved RunConfig
        checkpoint.pt   the last checkpoint: an epoch end, or mid-epoch every
                        train.checkpoint_every (written atomically)
        train.json      status, epochs done, wall time, images/s, device
        result.json     final metrics: ``metrics`` (test split), ``val_metrics``
                        (validation), and the ``provenance`` they were made with
        features.pt     cached frozen features of the final checkpoint
        tb/             TensorBoard events

A floor (raw pixels, random init) is a directory of the same kind,
``<out>/floor-<kind>-<dataset>-<backbone>-seed<N>-<digest>/``, with ``floor.json``
saying which floor and what it is keyed by, and no checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslreg.config import RunConfig
from sslreg.errors import SslregError, WriteError

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry


class RunDir:
    """Paths and small JSON files of one run."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def for_config(cls, out: Path | str, config: RunConfig) -> RunDir:
        data = data_label(config.dataset, config.eval.dataset, "-to-")
        name = (f"{path_safe(config.method)}-{data}-{path_safe(config.backbone)}-"
                f"seed{config.train.seed}-{config.digest()[:8]}")
        return cls(Path(out) / name)

    config = property(lambda self: self.path / "config.json")
    checkpoint = property(lambda self: self.path / "checkpoint.pt")
    train_info = property(lambda self: self.path / "train.json")
    result = property(lambda self: self.path / "result.json")
    features = property(lambda self: self.path / "features.pt")
    tensorboard = property(lambda self: self.path / "tb")

    def read_json(self, path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise SslregError(
                f"{path} is missing: is {self.path} an sslreg run directory?"
            ) from None
        except json.JSONDecodeError as error:
            raise SslregError(
                f"{path} is not valid JSON ({error.msg}); the run is damaged"
            ) from None

    def load_config(self, registry: Registry) -> RunConfig:
        return RunConfig.from_dict(self.read_json(self.config), registry)


def path_safe(name: str) -> str:
    """A registered name as one path component (``timm/resnet50`` -> ``timm-resnet50``);
    the digest in every run directory's name keeps such names apart."""
    return name.replace("/", "-")


def data_label(pretrain: str, evaluation: str | None, arrow: str = " → ") -> str:
    """``pretrain``, or ``pretrain → evaluation`` when a run is scored on another dataset."""
    if not evaluation or evaluation == pretrain:
        return pretrain
    return f"{pretrain}{arrow}{evaluation}"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically replace ``path`` with ``data`` as indented JSON."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``: a reader sees the old file or the new."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:  # disk full, quota, read-only: the old file is untouched
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path} ({error.strerror or error}); the previous "
                         "file is kept") from None
