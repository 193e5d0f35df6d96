"""benchmarks/throughput.py measures real rows on a tiny setting (the lightly half needs
the optional peer group and is skipped without it)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from sslreg.plugins import load_registry

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("throughput_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def check_row(row, stage: str, side: str, backbone: str, batch: int) -> None:
    assert (row.stage, row.side, row.backbone, row.batch) == (stage, side, backbone, batch)
    assert math.isfinite(row.images_per_s) and row.images_per_s > 0
    # No GPU: no peak FLOPs to invent an MFU from, no CUDA memory to report.
    assert row.mfu is None and row.peak_memory_mb is None


def test_our_views_and_training_rows(bench, registry) -> None:
    views = bench.our_views(registry, CPU, batch=8, batches=2, warmup=1)
    check_row(views, "views", "sslreg", "-", 8)
    step = bench.our_training(registry, "resnet18-narrow", CPU, batch=8, steps=1, warmup=1)
    check_row(step, "train step", "sslreg", "resnet18-narrow", 8)


def test_flops_cover_backbone_and_projector(bench, registry) -> None:
    config = bench.simclr_config(registry, "resnet18-narrow", 8, CPU)
    flops = bench.model_flops_per_image(registry, config)
    # 15.3 MFLOPs of backbone plus a 128-2048-128 projector (~1 MFLOP), x 3 x 2 views.
    assert 6 * 15.2e6 < flops < 6 * 17e6


def test_table_pairs_the_sides(bench) -> None:
    rows = [
        bench.Row("views", "sslreg", "-", 8, 1000.0),
        bench.Row("views", "lightly", "-", 8, 250.0),
        bench.Row("train step", "sslreg", "resnet18", 8, 300.0, 0.25, 1024.0),
        bench.Row("train step", "lightly", "resnet18", 8, 100.0, None, None),
    ]
    lines = bench.table(rows)
    assert "| views | - | 8 | 1,000 | 250 | 4.0x | - | - | - | - |" in lines
    assert "| train step | resnet18 | 8 | 300 | 100 | 3.0x | 25.0% | - | 1,024 | - |" in lines
    assert "not met, 4.0x at worst" in bench.cpu_views_goal(rows, CPU)
    assert "not measured here" in bench.h100_goal(rows, CPU)


def test_lightly_rows(bench, registry) -> None:
    pytest.importorskip("lightly")
    # workers=0: the same transform in this process; the benchmark uses every core.
    views = bench.lightly_views(registry, CPU, batch=8, batches=2, warmup=1, workers=0)
    check_row(views, "views", "lightly", "-", 8)
    step = bench.lightly_training(registry, "resnet18-narrow", CPU, batch=8, steps=1,
                                  warmup=1, workers=0)
    check_row(step, "train step", "lightly", "resnet18-narrow", 8)


def test_missing_lightly_says_how_to_install(bench, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "lightly", None)  # makes `import lightly` fail
    with pytest.raises(SystemExit) as exit_info:
        bench.require_lightly()
    assert exit_info.value.code == 2
    assert 'pip install -e ".[peer]"' in capsys.readouterr().err
