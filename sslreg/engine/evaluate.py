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
from typing import Any

import torch

from sslreg.config import RunConfig
from sslreg.data import ImageDataset
from sslreg.engine.checkpoint import load_checkpoint
from sslreg.engine.device import resolve_device
from sslreg.engine.splits import EVAL_SUBSET_SEED, RunData, load_run_data
from sslreg.engine.trainer import build_method
from sslreg.evaluation import evaluate_splits, extract_features, pixel_features
from sslreg.interfaces import Method
from sslreg.runs import RunDir, data_label, path_safe, write_json
from sslreg.runs.index import FLOOR_FILE, add_suite, open_index, provenance
from sslreg.views import normalize

RAW_PIXELS, RANDOM_INIT = "raw pixels", "random init"


def score(encode: Callable[[torch.Tensor], torch.Tensor], config: RunConfig,
          data: RunData) -> dict[str, dict[str, float]]:
    """``{"val": metrics, "test": metrics}`` of ``encode``'s features."""
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
    return evaluate_splits(
        features["train"], splits["train"].labels, scored,
        num_classes=splits["train"].num_classes, knn_k=config.eval.knn_k,
        knn_temperature=config.eval.knn_temperature,
        holdout_fraction=config.eval.holdout_fraction, seed=EVAL_SUBSET_SEED, device=device)


def evaluate_run(run: RunDir, registry: Any, method: Method | None = None) -> dict[str, Any]:
    """Score the final checkpoint of ``run``, write ``result.json`` and update the run's
    row in its folder's index: ``metrics`` are the test split's (tables),
    ``val_metrics`` the validation split's (choices)."""
    config = run.load_config(registry)
    started = time.perf_counter()
    data = load_run_data(config, registry)
    state = load_checkpoint(run.checkpoint, expected_digest=config.digest())
    if method is None:
        method = build_method(config, registry, data)
        method.load_state_dict(state["model"])
    device = resolve_device(config.train.device)
    method = method.to(device).eval()
    scored = score(method.features, config, data)
    splits = data.evaluation(config)
    result = {
        "metrics": {**scored["test"], **extra_metrics(method, splits["test"], data, device)},
        "val_metrics": {**scored["val"], **extra_metrics(method, splits["val"], data, device)},
        "checkpoint_epoch": state["epoch"],
        "pretrain_dataset": config.dataset, "eval_dataset": config.eval_dataset,
        **{f"eval_{name}_images": len(split) for name, split in splits.items()},
        "eval_seconds": round(time.perf_counter() - started, 2),
        "provenance": provenance(),
    }
    write_json(run.result, result)
    open_index(run.path.parent).record(run)  # `sslreg eval` of a run the index lists
    return result


def extra_metrics(method: Method, split: ImageDataset, data: RunData,
                  device: torch.device) -> dict[str, float]:
    """The method's own metrics (e.g. zero-shot accuracy) on one scored split."""
    if type(method).extra_evaluation is Method.extra_evaluation:
        return {}
    images = normalize(split.images.to(device).float().div_(255), *data.stats)
    return {name: float(value)
            for name, value in method.extra_evaluation(images, split.labels.to(device)).items()}


# Floors scored in this process, by directory name: a floor is a pure function of its
# key, so learning tests in many temporary folders compute each one once.
_SCORED_FLOORS: dict[str, dict[str, Any]] = {}


def floors(config: RunConfig, registry: Any, out: Path | str,
           suite: str | None = None) -> dict[str, dict[str, Any]]:
    """Raw pixels and a randomly initialised backbone, scored exactly like ``config``'s
    method: the same splits, probe and kNN, and, for the random init, the method's own
    ``features`` on a fresh, untrained build with the run's seed.

    Each floor is a run directory under ``out`` (``floor.json`` says which) recorded in
    the run index with provenance, and noted as part of ``suite`` when given (a random
    init read other than through the backbone's output names its readout as its variant,
    e.g. ``mean of patch tokens``). Returns ``{floor: result}``, each result with
    ``metrics`` (test) and ``val_metrics``.
    """
    results = {}
    for kind in (RAW_PIXELS, RANDOM_INIT):
        run, description = floor_dir(out, config, registry, kind)
        if not run.result.exists():
            write_json(run.config, config.to_dict())
            write_json(run.path / FLOOR_FILE, description)
            write_json(run.result, {**_floor_result(config, registry, kind, run.path.name),
                                    "pretrain_dataset": config.dataset,
                                    "eval_dataset": config.eval_dataset,
                                    "provenance": provenance()})
        if suite is not None:
            readout = description["readout"]
            add_suite(run, suite, "" if readout in ("pixels", "backbone") else readout)
        open_index(out).record(run)
        results[kind] = run.read_json(run.result)
    return results


def floor_dir(out: Path | str, config: RunConfig, registry: Any,
              kind: str) -> tuple[RunDir, dict[str, Any]]:
    """The directory of one floor, named from everything that changes its scores."""
    random_init = kind == RANDOM_INIT
    keyed = config.keyed_dict()  # eval.dataset, image_size: only when set, as digests
    e = keyed["eval"]
    for key in ("curve_every", "curve_images", "batch_size"):  # do not change scores
        e.pop(key)
    # The pretraining dataset stays in the key: its channel statistics normalise the
    # evaluation images the floors score.
    description = {
        "floor": kind, "dataset": config.dataset, "data_root": config.data_root, "eval": e,
        "backbone": config.backbone if random_init else "-",
        "readout": readout_of(config, registry) if random_init else "pixels",
        "seed": config.train.seed if random_init else 0,
        **({"image_size": keyed["image_size"]} if "image_size" in keyed else {}),
    }
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
    data = data_label(config.dataset, config.eval.dataset, "-to-")
    name = f"floor-{kind.replace(' ', '-')}-{data}-{path_safe(description['backbone'])}-" \
           f"seed{description['seed']}-{digest[:8]}"
    return RunDir(Path(out) / name), description


def readout_of(config: RunConfig, registry: Any) -> str:
    """How ``config``'s method reads features (:attr:`Method.readout`)."""
    return build_method(config, registry, load_run_data(config, registry)).readout


def _floor_result(config: RunConfig, registry: Any, kind: str, key: str) -> dict[str, Any]:
    if key not in _SCORED_FLOORS:
        started = time.perf_counter()
        scored = _score_floor(config, registry, kind)
        _SCORED_FLOORS[key] = {"metrics": scored["test"], "val_metrics": scored["val"],
                               "eval_seconds": round(time.perf_counter() - started, 2)}
    return _SCORED_FLOORS[key]


def _score_floor(config: RunConfig, registry: Any, kind: str) -> dict[str, dict[str, float]]:
    data = load_run_data(config, registry)
    device = resolve_device(config.train.device)
    if kind == RAW_PIXELS:
        splits = data.evaluation(config)
        features = {name: pixel_features(split.images) for name, split in splits.items()}
        return _evaluate(config, features, splits, device)
    torch.manual_seed(config.train.seed)  # the very initialisation the run starts from
    method = build_method(config, registry, data).to(device).eval()
    return score(method.features, config, data)
