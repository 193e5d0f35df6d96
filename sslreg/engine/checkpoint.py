"""Checkpoints: written atomically (temp file, fsync, rename), read with clear errors."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from sslreg.errors import CheckpointError, WriteError

# 2: the engine's schedules are kept ("schedules") and methods read the step from the
# engine's clock, so the counters DINO, SwAV, CLIP and MoCo kept are gone from "model".
FORMAT_VERSION = 2


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` so that ``path`` always holds either the old or the new file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            torch.save({"format": FORMAT_VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:  # disk full, quota, read-only: the old file is untouched
        raise WriteError(f"cannot write checkpoint {path} ({error.strerror or error}); the "
                         "previous checkpoint is kept") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    # The rename survives a power cut only once the folder's entry is on disk (a killed
    # process needs none of this: its writes are in the page cache). Best effort: some
    # file systems refuse to fsync a folder.
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# Temporary files of the atomic writers: ``.<name>.<pid>.tmp`` (checkpoint.pt, *.json).
_TEMPORARY = re.compile(r"\.(.+)\.(\d+)\.tmp")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete what writers killed mid-write left in ``folder`` (their process is gone);
    nothing reads these files, they only take space. Returns what was deleted."""
    removed = []
    for path in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(path.name)
        if match and not _alive(int(match.group(2))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def load_checkpoint(path: Path, *, expected_digest: str | None = None,
                    map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a corrupt file or one written for another config is refused."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; run `sslreg pretrain` first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise CheckpointError(
            f"cannot read checkpoint {path} ({reason}); restore it or delete it to start over"
        ) from None
    if isinstance(state, dict) and state.get("format") == 1:
        raise CheckpointError(
            f"checkpoint {path} is format 1, from before the engine kept its schedules; "
            "this sslreg cannot resume or evaluate it: train the run again (delete it or "
            "use another --out), or use the sslreg that wrote it")
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an sslreg checkpoint (format {FORMAT_VERSION})")
    digest = state.get("config_digest")
    if expected_digest is not None and digest != expected_digest:
        raise CheckpointError(
            f"checkpoint {path} was written for config {digest}, not this run's "
            f"{expected_digest}; resume with the same options or use another --out"
        )
    return state
