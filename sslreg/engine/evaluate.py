"""Evaluation of a run's final checkpoint, and the floors every table carries.

Every evaluation scores the validation split (for choices) and the test split (for
tables) with one probe fit on the training split; ``result.json`` keeps both.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sslreg.config import METRIC_ONLY_KEYS, RunConfig
from sslreg.data import ImageDataset
from sslreg.engine.checkpoint import load_checkpoint
from sslreg.engine.device import resolve_device
from sslreg.engine.finetune import finetune, finetune_settings
from sslreg.engine.parts import RunParts, assemble
from sslreg.engine.splits import EVAL_SUBSET_SEED, LABEL_SUBSET_SEED, RunData
from sslreg.errors import CheckpointError, ConfigError, SslregError
from sslreg.evaluation import (
    SubsetProbeResult,
    evaluate_splits,
    extract_features,
    fraction_name,
    label_efficient_probes,
    pixel_features,
    shots_name,
)
from sslreg.interfaces import Method
from sslreg.runs import RunDir, data_label, path_safe, write_json
from sslreg.runs.index import FLOOR_FILE, add_suite, open_index, provenance
from sslreg.views import normalize

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

RAW_PIXELS, RANDOM_INIT = "raw pixels", "random init"


def score(encode: Callable[[torch.Tensor], torch.Tensor], config: RunConfig,
          data: RunData) -> dict[str, dict[str, Any]]:
    """``{"val": metrics, "test": metrics, "details": {...}}`` of ``encode``'s features;
    ``details`` holds what result.json keeps beside the metrics (the label-efficient
    probes' spread and choices, when ``eval`` asks for them)."""
    device = resolve_device(config.train.device)
    mean, std = data.stats
    splits = data.evaluation(config)
    features = {name: extract_features(encode, split.images, mean=mean, std=std,
                                       batch_size=config.eval.batch_size, device=device)
                for name, split in splits.items()}
    return _evaluate(config, features, splits, device)


def _evaluate(config: RunConfig, features: dict[str, torch.Tensor],
              splits: dict[str, ImageDataset], device: torch.device) -> dict:
    scored = {name: (features[name], splits[name].labels) for name in ("val", "test")}
    results = evaluate_splits(
        features["train"], splits["train"].labels, scored,
        num_classes=splits["train"].num_classes, knn_k=config.eval.knn_k,
        knn_temperature=config.eval.knn_temperature,
        holdout_fraction=config.eval.holdout_fraction, seed=EVAL_SUBSET_SEED, device=device)
    return _merge(results, label_efficient(config, features, splits, device))


def label_efficient(config: RunConfig, features: dict[str, torch.Tensor],
                    splits: dict[str, ImageDataset], device: torch.device) -> dict[str, Any]:
    """The label-efficient probes ``eval`` asks for, on the features already extracted:
    mean accuracies as metrics, their spread and choices as ``details``."""
    e = config.eval
    if not (e.label_fractions or e.shots):
        return {"val": {}, "test": {}, "details": {}}
    started = time.perf_counter()
    try:
        probes = label_efficient_probes(
            features["train"], splits["train"].labels,
            (features["val"], splits["val"].labels), (features["test"], splits["test"].labels),
            num_classes=splits["train"].num_classes, fractions=e.label_fractions,
            shots=e.shots, count=e.label_subsets, seed=LABEL_SUBSET_SEED, device=device)
    except ValueError as error:  # a class with fewer images than the shots asked for
        raise ConfigError(f"{error}; lower eval.shots or raise eval.train_subset") from None
    return {"val": {name: p.val_accuracy for name, p in probes.items()},
            "test": {name: p.test_accuracy for name, p in probes.items()},
            "details": {"label_efficient": {n: _detail(p) for n, p in probes.items()},
                        "label_efficient_seconds": round(time.perf_counter() - started, 2)}}


def _detail(probe: SubsetProbeResult) -> dict[str, Any]:
    return {"test_std": probe.test_std, "val_std": probe.val_std, "l2": probe.weight_decay,
            "subsets": probe.subsets, "images": probe.images}


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Score dicts ``{"val", "test", "details"}`` united, later parts adding keys."""
    merged: dict[str, Any] = {"val": {}, "test": {}, "details": {}}
    for part in parts:
        for key in merged:
            merged[key].update(part.get(key, {}))
    return merged


def up_to_date(result: dict[str, Any], config: RunConfig, finetuned: bool = True) -> bool:
    """Whether ``result`` holds every metric that ``config``'s metric-only keys ask for,
    made with the same settings (``finetuned=False``: fine-tuning is not asked of it,
    as of the raw-pixel floor)."""
    e = config.eval
    made = result.get("label_efficient", {})
    names = [fraction_name(f) for f in e.label_fractions] + [shots_name(k) for k in e.shots]
    if any(name not in result.get("metrics", {})
           or made.get(name, {}).get("subsets") != e.label_subsets for name in names):
        return False
    if finetuned and e.finetune_epochs:
        return result.get("finetune", {}).get("settings") == finetune_settings(e)
    return True


def evaluate_run(run: RunDir, registry: Registry, parts: RunParts | None = None,
                 config: RunConfig | None = None) -> dict[str, Any]:
    """Score the final checkpoint of ``run``, write ``result.json`` and update the run's
    row in its folder's index: ``metrics`` are the test split's (tables),
    ``val_metrics`` the validation split's (choices).

    ``config``, when given, is the run's own with other metric-only evaluation keys
    (:data:`~sslreg.config.METRIC_ONLY_KEYS`, e.g. ``sslreg eval --set eval.shots=1,5``);
    it replaces ``config.json`` once the evaluation has succeeded. ``parts``, when given,
    is the run's, its method trained (pretraining hands its own over); else the run is
    assembled and the checkpoint's weights loaded."""
    stored = run.load_config(registry)
    config = stored if config is None else same_run(stored, config)
    started = time.perf_counter()
    state = run_checkpoint(run, config)
    if parts is None:
        parts = assemble(config, registry)
        parts.method.load_state_dict(state["model"])
    data = parts.data
    device = resolve_device(config.train.device)
    method = parts.method.to(device).eval()
    splits = data.evaluation(config)
    scored = _merge(score(method.features, config, data),
                    {"test": extra_metrics(method, splits["test"], data, device),
                     "val": extra_metrics(method, splits["val"], data, device)},
                    finetune(method, config, data, device) if config.eval.finetune_epochs
                    else {})
    result = {
        "metrics": scored["test"], "val_metrics": scored["val"],
        "checkpoint_epoch": state["epoch"],
        "pretrain_dataset": config.dataset, "eval_dataset": config.eval_dataset,
        **{f"eval_{name}_images": len(split) for name, split in splits.items()},
        "eval_seconds": round(time.perf_counter() - started, 2),
        **scored["details"],
        "provenance": provenance(),
    }
    if config != stored:
        write_json(run.config, config.to_dict())
    write_json(run.result, result)
    open_index(run.path.parent).record(run)  # `sslreg eval` of a run the index lists
    return result


def same_run(stored: RunConfig, config: RunConfig) -> RunConfig:
    """``config``, refused unless it differs from ``stored`` only in keys no digest holds."""
    if config.digest() != stored.digest():
        raise ConfigError(f"this config is not the run's own: only {', '.join(METRIC_ONLY_KEYS)}"
                          " (eval) may differ when a finished run is evaluated again")
    return config


def run_checkpoint(run: RunDir, config: RunConfig) -> dict[str, Any]:
    """The run's final checkpoint, refused if it was written for another config.

    A run directory is named by the digest its checkpoint was written under, so a
    checkpoint whose digest names its own directory is the run's even when the digest
    recomputed from config.json differs: a method config key added since the run was
    trained (DINO's and SwAV's ``local_size``) changes that digest, not the run.
    """
    state = load_checkpoint(run.checkpoint)
    digest = state.get("config_digest") or ""
    if digest != config.digest() and not (digest and run.path.name.endswith(digest[:8])):
        raise CheckpointError(
            f"checkpoint {run.checkpoint} was written for config {digest}, not this run's "
            f"{config.digest()}; resume with the same options or use another --out")
    return state


def extra_metrics(method: Method, split: ImageDataset, data: RunData,
                  device: torch.device) -> dict[str, float]:
    """The method's own metrics (e.g. zero-shot accuracy) on one scored split."""
    if type(method).extra_evaluation is Method.extra_evaluation:
        return {}
    images = normalize(split.images.to(device).float().div_(255), *data.stats)
    return {name: float(value)
            for name, value in method.extra_evaluation(images, split.labels.to(device)).items()}


# Floors scored in this process, by directory name and metric-only settings: a floor
# is a pure function of them, so learning tests in many temporary folders compute each
# one once.
_SCORED_FLOORS: dict[str, dict[str, Any]] = {}


def floors(config: RunConfig, registry: Registry, out: Path | str,
           suite: str | None = None) -> dict[str, dict[str, Any]]:
    """Raw pixels and a randomly initialised backbone, scored exactly like ``config``'s
    method: the same splits, probes and kNN, and, for the random init, the method's own
    ``features`` on a fresh, untrained build with the run's seed (and, when ``eval``
    asks for fine-tuning, that fresh build fine-tuned: training from scratch).

    Each floor is a run directory under ``out`` (``floor.json`` says which) recorded in
    the run index with provenance, and noted as part of ``suite`` when given (a random
    init read other than through the backbone's output names its readout as its variant,
    e.g. ``mean of patch tokens``). A floor already scored is scored again only when
    ``config`` asks for metrics its result lacks. Returns ``{floor: result}``, each
    result with ``metrics`` (test) and ``val_metrics``.
    """
    parts = assemble(config, registry)  # its method is the random init
    results = {}
    for kind in (RAW_PIXELS, RANDOM_INIT):
        run, description = floor_dir(out, parts, kind)
        if not run.result.exists() or not up_to_date(run.read_json(run.result), config,
                                                     finetuned=kind == RANDOM_INIT):
            write_floor(run, parts, kind, description)
        if suite is not None:
            readout = description["readout"]
            add_suite(run, suite, "" if readout in ("pixels", "backbone") else readout)
        open_index(out).record(run)
        results[kind] = run.read_json(run.result)
    return results


def write_floor(run: RunDir, parts: RunParts, kind: str,
                description: dict[str, Any]) -> dict[str, Any]:
    """Score one floor and write its directory: config, ``floor.json``, result."""
    config = parts.config
    result = {**_floor_result(parts, kind, run.path.name),
              "pretrain_dataset": config.dataset, "eval_dataset": config.eval_dataset,
              "provenance": provenance()}
    write_json(run.config, config.to_dict())
    write_json(run.path / FLOOR_FILE, description)
    write_json(run.result, result)
    return result


def evaluate_floor(run: RunDir, registry: Registry, config: RunConfig | None = None) -> dict:
    """Score the floor in ``run`` again (``sslreg eval FLOOR_DIR``), with ``config``'s
    metric-only keys when given, and record it in its folder's index."""
    stored = run.load_config(registry)
    config = stored if config is None else same_run(stored, config)
    kind = run.read_json(run.path / FLOOR_FILE)["floor"]
    parts = assemble(config, registry)
    expected, description = floor_dir(run.path.parent, parts, kind)
    if expected.path.name != run.path.name:
        raise SslregError(f"{run.path.name} was keyed by another evaluation protocol than "
                          f"this sslreg's ({expected.path.name}); score the floors again "
                          "with `sslreg bench`")
    return write_floor(run, parts, kind, description)


def floor_dir(out: Path | str, parts: RunParts, kind: str) -> tuple[RunDir, dict[str, Any]]:
    """The directory of one floor, named from everything that changes its scores."""
    config, random_init = parts.config, kind == RANDOM_INIT
    keyed = config.keyed_dict()  # eval.dataset, image_size: only when set, as digests
    e = keyed["eval"]
    for key in ("curve_every", "curve_images", "batch_size"):  # do not change scores
        e.pop(key)
    # The pretraining dataset stays in the key: its channel statistics normalise the
    # evaluation images the floors score.
    description = {
        "floor": kind, "dataset": config.dataset, "data_root": config.data_root, "eval": e,
        "backbone": config.backbone if random_init else "-",
        "readout": parts.method.readout if random_init else "pixels",
        "seed": config.train.seed if random_init else 0,
        **({"image_size": keyed["image_size"]} if "image_size" in keyed else {}),
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
    data = data_label(config.dataset, config.eval.dataset, "-to-")
    name = f"floor-{kind.replace(' ', '-')}-{data}-{path_safe(description['backbone'])}-" \
           f"seed{description['seed']}-{digest[:8]}"
    return RunDir(Path(out) / name), description


def readout_of(config: RunConfig, registry: Registry) -> str:
    """How ``config``'s method reads features (:attr:`Method.readout`)."""
    return assemble(config, registry).method.readout


def _floor_result(parts: RunParts, kind: str, name: str) -> dict[str, Any]:
    key = f"{name} {[getattr(parts.config.eval, k) for k in METRIC_ONLY_KEYS]}"
    if key not in _SCORED_FLOORS:
        started = time.perf_counter()
        scored = _score_floor(parts, kind)
        _SCORED_FLOORS[key] = {"metrics": scored["test"], "val_metrics": scored["val"],
                               "eval_seconds": round(time.perf_counter() - started, 2),
                               **scored["details"]}
    return _SCORED_FLOORS[key]


def _score_floor(parts: RunParts, kind: str) -> dict[str, dict[str, Any]]:
    config, data = parts.config, parts.data
    device = resolve_device(config.train.device)
    if kind == RAW_PIXELS:
        splits = data.evaluation(config)
        features = {name: pixel_features(split.images) for name, split in splits.items()}
        return _evaluate(config, features, splits, device)
    # assemble built it as the run's own: the very initialisation the run starts from.
    method = parts.method.to(device).eval()
    scored = score(method.features, config, data)
    if not config.eval.finetune_epochs:
        return scored
    return _merge(scored, finetune(method, config, data, device))  # from scratch
