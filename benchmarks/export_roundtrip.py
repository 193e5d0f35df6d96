"""Export -> load -> equal features, for every registered backbone and every format it has.

For each backbone: a short real SimCLR run on Fashion-MNIST, ``sslreg export``, then each
exported file is loaded by the code its model card shows (torchvision, timm, or sslreg's
own registry) and its features on real, normalised test images are compared with the run's backbone
through ``sslreg.load_backbone``. Prints a Markdown table; ``--out`` also writes it.

    OMP_NUM_THREADS=1 python benchmarks/export_roundtrip.py --out benchmarks/results/export-cpu.md
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import sslreg
from sslreg.engine.device import device_name
from sslreg.engine.splits import load_run_data

BUDGET = {"train.train_subset": 512, "eval.train_subset": 500, "eval.val_subset": 200,
          "eval.test_subset": 500}


def roundtrip(backbone: str, out: Path, registry) -> list[dict]:
    started = time.perf_counter()
    run = sslreg.pretrain("simclr", backbone=backbone, epochs=1, batch_size=128, out=out,
                          overrides=BUDGET, registry=registry)
    folder = out / f"export-{backbone.replace('/', '-')}"
    sslreg.export(run, folder, registry=registry)
    card = json.loads((folder / "export.json").read_text())
    images = real_images(run.config, registry, card["inputs"])
    with torch.no_grad():
        expected = sslreg.load_backbone(run, registry=registry)(images)
    rows = []
    for library, code in card["loaders"].items():
        name = "backbone" if library == "sslreg" else library
        scope = {"path": str(folder / f"{name}.safetensors")}
        exec(code, scope)
        with torch.no_grad():
            features = scope["model"](images)
        rows.append({"backbone": backbone, "format": library,
                     "model": type(scope["model"]).__module__.split(".")[0] + "." +
                     type(scope["model"]).__name__,
                     "max |diff|": float((features - expected).abs().max()),
                     "equal": bool(torch.allclose(features, expected, atol=1e-5, rtol=1e-5)),
                     "seconds": round(time.perf_counter() - started, 1)})
    return rows


@torch.no_grad()
def real_images(config, registry, inputs: dict) -> torch.Tensor:
    pixels = load_run_data(config, registry).test.images[:256].float() / 255
    mean = torch.tensor(inputs["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(inputs["std"]).view(1, -1, 1, 1)
    return (pixels - mean) / std


def table(rows: list[dict]) -> str:
    lines = ["| backbone | format | loaded as | max abs diff | equal (1e-5) |",
             "|:--|:--|:--|--:|:--|"]
    lines += [f"| {r['backbone']} | {r['format']} | `{r['model']}` | {r['max |diff|']:.2e} | "
              f"{'yes' if r['equal'] else 'NO'} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--backbones", nargs="*", help="default: every registered backbone")
    args = parser.parse_args()
    registry = sslreg.load_registry()
    names = args.backbones or registry.backbones.names()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sslreg-export-") as scratch:
        for name in names:
            rows += roundtrip(name, Path(scratch), registry)
            print(f"{name}: done", flush=True)
    text = table(rows)
    print(text)
    if args.out:
        note = (f"Measured {time.strftime('%Y-%m-%d')} on {device_name(torch.device('cpu'))}, "
                f"no GPU, torch {torch.__version__}: "
                "`OMP_NUM_THREADS=1 python benchmarks/export_roundtrip.py --out "
                f"{args.out}`. Each backbone: one epoch of SimCLR on 512 Fashion-MNIST "
                "images, `sslreg export`, each file loaded by its model card's code, "
                "features of 256 real test images compared with `sslreg.load_backbone`.")
        args.out.write_text(f"## Export round trip\n\n{text}\n\n{note}\n")


if __name__ == "__main__":
    main()
