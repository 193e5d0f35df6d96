"""``sslreg export``: a finished run's evaluated backbone alone, in the formats people
load, beside a model card.

Written to ``RUN_DIR/export/`` unless told otherwise:

    backbone.safetensors    sslreg's key names (``sslreg.load_backbone`` or the registry)
    <library>.safetensors   another library's key names, where it has the architecture
    <library>.pth           the same state_dict through ``torch.save``
    MODEL_CARD.md           what made it, its scores, how to feed and load it
    export.json             the card's facts and every file's SHA-256

A backbone offers other libraries' key names through an optional ``exports()`` method
(:class:`sslreg.interfaces.BackboneExport`): the built-in ResNet-18 maps onto
torchvision's ``resnet18`` at width 64, the built-in ViTs onto timm's
``VisionTransformer``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from sslreg.config import RunConfig, spelled
from sslreg.engine.checkpoint import load_checkpoint
from sslreg.engine.parts import assemble
from sslreg.engine.trainer import input_spec
from sslreg.errors import SslregError
from sslreg.interfaces import BackboneExport, Method
from sslreg.runs import RunDir, write_json, write_text
from sslreg.runs.index import FLOOR_FILE

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

SSLREG_FORMAT = "sslreg"
# Libraries some backbone maps onto: asking one of these for a backbone that does not is
# "no equivalent", anything else is an unknown format.
KNOWN_LIBRARIES = ("torchvision", "timm")


@attrs.frozen
class TrainedRun:
    """A finished run's config and its method with the final weights, in eval mode."""

    run: RunDir
    config: RunConfig
    method: Method
    epoch: int
    images_seen: int
    inputs: dict[str, Any]  # channels, image_size, mean, std (see trainer.input_spec)

    @property
    def backbone(self) -> nn.Module:
        return self.method.evaluated_backbone


def load_trained(run_dir: Path | str, registry: Registry, *, device: str = "cpu") -> TrainedRun:
    """The method of a run trained to its last epoch, weights loaded; clear errors for a
    path that is not a run, a floor, or an unfinished run."""
    run = checked_run_dir(run_dir)
    config = run.load_config(registry)
    state = load_checkpoint(run.checkpoint, expected_digest=config.digest())
    if state["epoch"] < config.train.epochs:
        raise SslregError(
            f"{run.path} is unfinished (epoch {state['epoch']} of {config.train.epochs}); "
            f"finish it with `{pretrain_command(config, registry, run.path.parent)} "
            "--resume`")
    parts = assemble(config, registry)  # the method's setup reads the data
    data = parts.data
    pool = data.train if data.pretrain is None else data.pretrain
    # Checkpoints written before they kept their inputs: read them off the data.
    inputs = state.get("inputs") or input_spec(pool.images[:1], data.stats)
    method = parts.method
    method.load_state_dict(state["model"])
    return TrainedRun(run=run, config=config, method=method.to(device).eval(),
                      epoch=state["epoch"], images_seen=state["images_seen"], inputs=inputs)


def checked_run_dir(run_dir: Path | str) -> RunDir:
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise SslregError(f"{run_dir} is not a directory; pass a run directory made by "
                          "`sslreg pretrain`")
    if (run.path / FLOOR_FILE).exists():
        raise SslregError(f"{run.path} is a floor (raw pixels or a random init), not a "
                          "trained run; there is nothing to export")
    if not run.checkpoint.exists():
        raise SslregError(f"{run.path} has no checkpoint: it has not finished an epoch; "
                          "pass a run trained with `sslreg pretrain`")
    return run


def load_backbone(run_dir: Path | str, registry: Registry, *, device: str = "cpu") -> nn.Module:
    """The backbone a finished run was evaluated with, final weights, in eval mode."""
    return load_trained(run_dir, registry, device=device).backbone


def export_run(run_dir: Path | str, registry: Registry, out: Path | str | None = None,
               formats: tuple[str, ...] = ()) -> list[Path]:
    """Write the backbone of an evaluated run in ``formats`` (default: every format it
    has) plus ``MODEL_CARD.md`` and ``export.json``; returns the files written."""
    trained = load_trained(run_dir, registry)
    run = trained.run
    if not run.result.exists():
        raise SslregError(f"{run.path} is trained but not evaluated; run `sslreg eval "
                          f"{run.path}` first (the model card carries its scores)")
    chosen = choose_exports(trained, formats)
    folder = Path(out) if out is not None else run.path / "export"
    files = write_weights(trained, chosen, folder)
    card = card_facts(trained, registry, chosen, files)
    write_json(folder / "export.json", card)
    write_text(folder / "MODEL_CARD.md", render_card(card))
    return [*files, folder / "export.json", folder / "MODEL_CARD.md"]


def choose_exports(trained: TrainedRun, formats: tuple[str, ...]) -> list[BackboneExport]:
    """The library exports asked for (all by default), refusing what the backbone lacks."""
    offered = {e.library: e for e in getattr(trained.backbone, "exports", list)()}
    available = [SSLREG_FORMAT, *offered]
    for name in formats:
        if name in available:
            continue
        if name in KNOWN_LIBRARIES:
            raise SslregError(f"backbone '{trained.config.backbone}' has no {name} "
                              f"equivalent; it exports: {', '.join(available)}")
        raise SslregError(f"unknown export format '{name}'; choose from: "
                          f"{', '.join(available)}")
    wanted = formats or tuple(available)
    return [offered[name] for name in wanted if name != SSLREG_FORMAT]


def write_weights(trained: TrainedRun, exports: list[BackboneExport],
                  folder: Path) -> list[Path]:
    """``backbone.safetensors`` always; each library's ``.safetensors`` and ``.pth``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [save_safetensors(trained.backbone.state_dict(), folder / "backbone.safetensors")]
    for export in exports:
        files.append(save_safetensors(export.state_dict, folder / f"{export.library}"
                                      ".safetensors"))
        files.append(save_pth(export.state_dict, folder / f"{export.library}.pth"))
    return files


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors that share no storage.
    return {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    return _atomic(path, lambda temporary: save_file(_plain(state), str(temporary)))


def save_pth(state: dict[str, torch.Tensor], path: Path) -> Path:
    return _atomic(path, lambda temporary: torch.save(_plain(state), temporary))


def _atomic(path: Path, write: Any) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pretrain_command(config: RunConfig, registry: Registry, out: Path | str) -> str:
    """An ``sslreg pretrain`` command that rebuilds ``config``: the method, dataset,
    backbone and data root as options, every other value that differs from the
    method's defaults as ``--set``."""
    base = RunConfig.build(registry, config.method, dataset=config.dataset,
                           backbone=config.backbone, data_root=config.data_root)
    parts = ["sslreg pretrain", f"--method {config.method}", f"--dataset {config.dataset}",
             f"--backbone {config.backbone}"]
    if config.data_root:
        parts.append(f"--data-root {config.data_root}")
    parts += [f"--set {key}={value}" for key, value in differences(base, config)]
    return " ".join([*parts, f"--out {out}"])


def differences(base: RunConfig, config: RunConfig) -> list[tuple[str, str]]:
    """``(section.key, value as --set spells it)`` for each value ``config`` changes."""
    old, new = _flat(base), _flat(config)
    return [(key, spelled(value)) for key, value in new.items()
            if old.get(key) != value and key != "train.device"]


def _flat(config: RunConfig) -> dict[str, Any]:
    data = config.to_dict()
    flat = {key: data[key] for key in ("image_size",)}
    sections = {"train": data["train"], "optim": data["optim"], "eval": data["eval"],
                "method": data["method_config"]}
    for section, values in sections.items():
        flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def card_facts(trained: TrainedRun, registry: Registry, exports: list[BackboneExport],
               files: list[Path]) -> dict[str, Any]:
    """Everything the model card says, as data (``export.json``)."""
    run, config = trained.run, trained.config
    result = run.read_json(run.result)
    info = run.read_json(run.train_info) if run.train_info.exists() else {}
    spec = registry.methods.get(config.method)
    return {
        "run": run.path.name,
        "method": config.method, "paper": spec.paper,
        "dataset": config.dataset, "eval_dataset": config.eval_dataset,
        "backbone": config.backbone,
        "backbone_description": registry.backbones.get(config.backbone).description,
        "readout": trained.method.readout,
        "inputs": trained.inputs,
        "budget": {"epochs": config.train.epochs, "batch_size": config.train.batch_size,
                   "train_subset": config.train.train_subset, "steps": info.get("steps"),
                   "images_seen": trained.images_seen,
                   "train_seconds": info.get("wall_time_s"), "device": info.get("device")},
        "seed": config.train.seed,
        "config_digest": config.digest(),
        "commit": result.get("provenance", {}).get("git_commit"),
        "versions": result.get("provenance", {}).get("versions", {}),
        "metrics": result["metrics"], "val_metrics": result.get("val_metrics", {}),
        "command": pretrain_command(config, registry, run.path.parent),
        "loaders": {SSLREG_FORMAT: sslreg_code(config, trained.inputs),
                    **{e.library: e.code for e in exports}},
        "files": {path.name: sha256(path) for path in files},
    }


def sslreg_code(config: RunConfig, inputs: dict[str, Any]) -> str:
    """Python that rebuilds the backbone from ``backbone.safetensors`` with sslreg."""
    return (
        "import sslreg\n"
        "from safetensors.torch import load_file\n"
        f"model = sslreg.load_registry().backbones.create({config.backbone!r}, "
        f"in_channels={inputs['channels']}, image_size={inputs['image_size']})\n"
        "model.load_state_dict(load_file(path), strict=True)\n"
        "model.eval()\n")


def render_card(card: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` from :func:`card_facts`."""
    inputs, budget = card["inputs"], card["budget"]
    data = card["dataset"] if card["eval_dataset"] == card["dataset"] else \
        f"{card['dataset']} (scored on {card['eval_dataset']})"
    lines = [
        f"# {card['method']} · {card['backbone']} · {data} · seed {card['seed']}", "",
        f"Method: `{card['method']}` ({card['paper']}). Backbone: `{card['backbone']}`, "
        f"{card['backbone_description']}.", "",
        f"Made by: `{card['command']}`", "",
        f"Run `{card['run']}`, config digest `{card['config_digest']}`, commit "
        f"`{card['commit'] or 'unknown'}`.", "",
        "## Budget", "",
        f"{budget['epochs']} epochs of batch {budget['batch_size']} "
        f"({budget['steps']} steps, {budget['images_seen']} images) over "
        f"{budget['train_subset'] or 'all'} training images; {budget['train_seconds']} s "
        f"of training on {budget['device']}.", "",
        "## Scores (frozen backbone)", "",
        "| metric | validation | test |", "|:--|--:|--:|",
        *[f"| {key} | {_number(card['val_metrics'].get(key))} | {_number(value)} |"
          for key, value in card["metrics"].items()], "",
        "Validation is carved from the training split (what choices read); test is "
        "scored once, for tables.", "",
        "## Inputs", "",
        f"{inputs['channels']} channel(s), {inputs['image_size']} x {inputs['image_size']} "
        "px, pixel values in [0, 1] normalised per channel with the pretraining data's "
        f"mean {_numbers(inputs['mean'])} and std {_numbers(inputs['std'])}: "
        "`x = (images / 255 - mean) / std`.", "",
        f"The run's evaluation read: {_readout(card['readout'])}.", "",
        "## Files and how to load them", "",
        *[f"* `{name}` (SHA-256 `{digest[:16]}…`)" for name, digest in card["files"].items()],
        "",
    ]
    for library, code in card["loaders"].items():
        source = "backbone" if library == SSLREG_FORMAT else library
        lines += [f"{library} (`path = \"{source}.safetensors\"`):", "", "```python",
                  code.rstrip(), "```", ""]
    return "\n".join(lines)


def _readout(readout: str) -> str:
    return "the backbone's output, `model(x)`" if readout == "backbone" else readout


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


def _numbers(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
