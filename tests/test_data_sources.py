"""Training on one's own data: unlabelled images, pretraining on one dataset and scoring
on another, resizing, dataset specs that mean something, and one clear line for bad
data. Every file is written small to tmp_path."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from pathlib import Path

import attrs
import datafiles
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sslreg import DataError, DatasetSpec, load_registry
from sslreg.cli import cli
from sslreg.config import METRIC_ONLY_KEYS, RunConfig
from sslreg.data import ImageDataset, checked_load, cifar, imagefolder, load_dataset, stl10
from sslreg.data.dataset import resize_center_crop
from sslreg.engine.parts import build_method
from sslreg.engine.splits import load_run_data
from sslreg.errors import ConfigError, PluginError
from sslreg.runs import RunDir, open_index
from sslreg.suites.leaderboard import summary


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never read the real home or reach the network from a test.
    monkeypatch.setenv("SSLREG_DATA", str(tmp_path / "sslreg-data"))
    monkeypatch.setenv("SSLREG_OFFLINE", "1")


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _pattern(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _flat_folder(folder: Path, count: int, shape: tuple[int, ...] = (28, 28)) -> Path:
    """``count`` unlabelled images directly in ``folder`` (no class folders)."""
    for i in range(count):
        _png(folder / f"{i:03d}.png", _pattern(shape, seed=i))
    return folder


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


def _assert_one_line(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- unlabelled ImageDataset and resizing -------------------------------------------------


def test_unlabelled_dataset_subsets_but_draws_no_validation_split() -> None:
    images = torch.from_numpy(_pattern((10, 1, 8, 8)))
    data = ImageDataset(images=images, labels=None, classes=(), name="folder/train")
    assert not data.labelled and data.num_classes == 0
    part = data.subset(4, seed=0)
    assert len(part) == 4 and part.labels is None
    with pytest.raises(DataError, match="folder/train has no labels.*eval.dataset"):
        data.split(0.1, seed=0)
    with pytest.raises(DataError, match="no labels; an unlabelled dataset has classes=()"):
        ImageDataset(images=images, labels=None, classes=("a",), name="x")


def test_resize_keeps_the_aspect_and_crops_the_centre() -> None:
    images = torch.from_numpy(_pattern((2, 3, 4, 8)))  # H=4, W=8: shorter side already 4
    cropped = resize_center_crop(images, 4)
    assert cropped.shape == (2, 3, 4, 4) and cropped.dtype == torch.uint8
    assert torch.equal(cropped, images[..., 2:6])  # the middle columns, not a squeeze
    flat = torch.full((1, 1, 16, 32), 77, dtype=torch.uint8)
    assert torch.equal(resize_center_crop(flat, 8), torch.full((1, 1, 8, 8), 77,
                                                               dtype=torch.uint8))


# --- imagefolder --------------------------------------------------------------------------


def test_imagefolder_flat_folder_is_unlabelled_train_only(tmp_path: Path) -> None:
    _flat_folder(tmp_path, 3, shape=(6, 6))
    data = imagefolder.load("train", root=tmp_path)
    assert data.images.shape == (3, 1, 6, 6) and data.labels is None and data.classes == ()
    assert np.array_equal(data.images[1, 0].numpy(), _pattern((6, 6), seed=1))
    with pytest.raises(DataError, match="unlabelled images .* no test split.*eval.dataset"):
        imagefolder.load("test", root=tmp_path)


def test_imagefolder_train_folder_without_class_folders_is_unlabelled(tmp_path: Path) -> None:
    _flat_folder(tmp_path / "train", 2, shape=(5, 5))
    assert imagefolder.load("train", root=tmp_path).labels is None


def test_imagefolder_resizes_shorter_side_and_centre_crops(tmp_path: Path) -> None:
    wide = _pattern((6, 12, 3), seed=1)  # H=6, W=12
    _png(tmp_path / "train" / "a" / "wide.png", wide)
    _png(tmp_path / "train" / "b" / "big.png", _pattern((20, 30, 3), seed=2))
    data = imagefolder.load("train", root=tmp_path, image_size=6)
    assert data.images.shape == (2, 3, 6, 6) and data.labels.tolist() == [0, 1]
    # Shorter side already 6: only the centre columns 3..8 are kept, nothing stretched.
    assert np.array_equal(data.images[0].numpy(), wide[:, 3:9].transpose(2, 0, 1))


def test_imagefolder_mixed_gray_and_rgb_all_become_rgb(tmp_path: Path) -> None:
    gray = _pattern((4, 4), seed=3)
    _png(tmp_path / "g.png", gray)
    _png(tmp_path / "c.png", _pattern((4, 4, 3), seed=4))
    data = imagefolder.load("train", root=tmp_path)
    assert data.channels == 3
    # Sorted by name: c.png then g.png; the gray file repeats its channel.
    assert all(np.array_equal(data.images[1, c].numpy(), gray) for c in range(3))


def test_imagefolder_file_that_is_not_an_image_is_named(tmp_path: Path) -> None:
    _flat_folder(tmp_path, 1)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"cannot read .*notes\.png.*fix or remove it"):
        imagefolder.load("train", root=tmp_path)


def test_imagefolder_truncated_image_is_named(tmp_path: Path) -> None:
    path = _png(tmp_path / "cut.png", _pattern((16, 16, 3)))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut\.png.*fix or remove it"):
        imagefolder.load("train", root=tmp_path)


def test_imagefolder_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(DataError, match=r"no images in .*; put files ending in \.png"):
        imagefolder.load("train", root=tmp_path)
    with pytest.raises(DataError, match=r"holds no images; create train/<class>/ and test/"):
        imagefolder.load("test", root=tmp_path)


# --- STL-10 unlabelled, truncated CIFAR ---------------------------------------------------


def test_stl10_unlabeled_reads_column_major_without_labels(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = _pattern((3, 3, 96, 96))
    (folder / "unlabeled_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
    data = load_dataset(load_registry(), "stl10-unlabeled", "train", root=tmp_path)
    assert data.labels is None and data.name == "stl10-unlabeled/train"  # spec: 0 classes
    assert np.array_equal(data.images.numpy(), images)
    with pytest.raises(DataError, match="only a train split.*eval.dataset=stl10"):
        stl10.load_unlabeled("test", root=tmp_path)
    (folder / "unlabeled_X.bin").write_bytes(images.tobytes()[:-5])
    with pytest.raises(DataError, match=r"unlabeled_X\.bin holds .* bytes, not a multiple"):
        stl10.load_unlabeled("train", root=tmp_path)


def test_truncated_cifar_batch_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    batch = pickle.dumps({b"data": _pattern((4, 3072)), b"labels": [0, 1, 2, 3]})
    (folder / "test_batch").write_bytes(batch[: len(batch) // 2])
    with pytest.raises(DataError, match=r"cannot read .*test_batch.*download it again"):
        cifar.load_cifar10("test", root=tmp_path)


# --- dataset specs ------------------------------------------------------------------------


def _gray_loader(split: str, root: str | None = None) -> ImageDataset:
    return ImageDataset(images=torch.zeros(4, 1, 8, 8, dtype=torch.uint8),
                        labels=torch.tensor([0, 1, 0, 1]), classes=("a", "b"), name=f"g/{split}")


def test_spec_fields_are_checked_against_the_loaded_split() -> None:
    undeclared = DatasetSpec(name="g", loader=_gray_loader)  # None: the files decide
    assert len(checked_load(_gray_loader, "g", "train", None, spec=undeclared)) == 4
    right = DatasetSpec(name="g", loader=_gray_loader, num_classes=2, channels=1, image_size=8)
    checked_load(_gray_loader, "g", "train", None, spec=right)
    # The spec describes what the loader returns; a run's image_size resizes after.
    resized = checked_load(_gray_loader, "g", "train", None, spec=right, image_size=16)
    assert resized.images.shape == (4, 1, 16, 16)
    wrong = DatasetSpec(name="g", loader=_gray_loader, channels=3)
    with pytest.raises(PluginError, match="dataset 'g' declares channels=3 but g/train has "
                                          "channels=1"):
        checked_load(_gray_loader, "g", "train", None, spec=wrong)
    with pytest.raises(ValueError, match="0 .unlabelled. or >= 2"):
        DatasetSpec(name="g", loader=_gray_loader, num_classes=1)


# --- pretrain on one dataset, evaluate on another -----------------------------------------


def test_config_digest_unchanged_while_new_keys_are_at_defaults(registry) -> None:
    config = RunConfig.build(registry, "simclr")
    old_style = config.to_dict()  # what digest() hashed before eval.dataset existed
    for section, key in (("eval", "dataset"), ("eval", "data_root")):
        del old_style[section][key]
    for key in METRIC_ONLY_KEYS:  # these only add metrics, so they never enter the digest
        del old_style["eval"][key]
    del old_style["image_size"]
    old_style["views"] = ""  # the method's default policy, stored unresolved before
    del old_style["default_views"]
    for key in ("device", "checkpoint_every"):  # where and how often: never the result
        old_style["train"].pop(key)
    text = json.dumps(old_style, sort_keys=True, default=str)
    assert config.digest() == hashlib.sha256(text.encode()).hexdigest()[:12]
    other = RunConfig.build(registry, "simclr", ["eval.dataset=synthetic"])
    assert other.digest() != config.digest()
    assert RunConfig.from_dict(other.to_dict(), registry) == other


def test_config_names_the_view_policy_that_ran_and_keeps_its_digest(registry) -> None:
    resolved = RunConfig.build(registry, "simclr")
    assert resolved.views == "simclr" and resolved.to_dict()["views"] == "simclr"
    as_stored_before = attrs.evolve(resolved, views="", default_views="")
    assert resolved.digest() == as_stored_before.digest()
    old_json = {**resolved.to_dict(), "views": ""}
    del old_json["default_views"]
    assert RunConfig.from_dict(old_json, registry) == resolved
    # A policy named on the command line was keyed by its name, even the default one.
    named = RunConfig.build(registry, "simclr", ["views=simclr"])
    assert named.default_views == "" and named.digest() != resolved.digest()
    assert RunConfig.build(registry, "simclr", ["views=byol"]).views == "byol"


def test_unlabelled_folder_pretrains_and_labelled_dataset_scores(registry,
                                                                 tmp_path: Path) -> None:
    _flat_folder(tmp_path, 40)
    config = RunConfig.build(registry, "simclr", ["eval.dataset=synthetic"],
                             dataset="imagefolder", data_root=str(tmp_path))
    data = load_run_data(config, registry)
    folder = imagefolder.load("train", root=tmp_path)
    assert len(data.pretraining(config)) == 40 and data.pretraining(config).labels is None
    assert data.stats == folder.channel_stats()  # normalised by the pretraining images
    assert data.train.name == "synthetic/train" and len(data.train) + len(data.val) == 2000
    assert data.test.name == "synthetic/test"


def test_label_using_method_refuses_unlabelled_pretraining(registry, tmp_path: Path) -> None:
    _flat_folder(tmp_path, 4)
    config = RunConfig.build(registry, "supervised", ["eval.dataset=synthetic"],
                             dataset="imagefolder", data_root=str(tmp_path))
    with pytest.raises(ConfigError, match="method 'supervised' trains with labels but "
                                          "imagefolder/train has none"):
        build_method(config, registry, load_run_data(config, registry))


def test_evaluation_images_must_match_channels_and_size(registry, tmp_path: Path) -> None:
    _flat_folder(tmp_path / "rgb", 4, shape=(28, 28, 3))
    rgb = RunConfig.build(registry, "simclr", ["eval.dataset=synthetic"],
                          dataset="imagefolder", data_root=str(tmp_path / "rgb"))
    with pytest.raises(DataError, match="3-channel images but synthetic/train has 1"):
        load_run_data(rgb, registry)
    _flat_folder(tmp_path / "big", 4, shape=(32, 40))
    big = RunConfig.build(registry, "simclr", ["eval.dataset=synthetic"],
                          dataset="imagefolder", data_root=str(tmp_path / "big"))
    with pytest.raises(DataError, match="32x40 images but synthetic/train has 28x28; "
                                        "--set image_size=N"):
        load_run_data(big, registry)
    resized = RunConfig.build(registry, "simclr", ["eval.dataset=synthetic", "image_size=28"],
                              dataset="imagefolder", data_root=str(tmp_path / "big"))
    assert load_run_data(resized, registry).pretraining(resized).images.shape == (4, 1, 28, 28)


def test_leaderboard_names_both_datasets_where_they_differ() -> None:
    frame = pd.DataFrame({"method": ["simclr", "byol"], "variant": ["", ""],
                          "backbone": ["r", "r"], "seed": [0, 0],
                          "status": ["evaluated"] * 2, "linear_acc": [0.5, 0.6],
                          "data": ["imagefolder → fashion-mnist", "fashion-mnist"]})
    table = summary(frame)
    assert table.set_index("method")["data"]["simclr"] == "imagefolder → fashion-mnist"
    assert "data" not in summary(frame.assign(data="fashion-mnist"))


# --- through the command line -------------------------------------------------------------

TINY = ["--backbone", "resnet18-narrow", "--epochs", "1", "--batch-size", "16", "--quiet",
        "--set", "eval.train_subset=100", "--set", "eval.val_subset=50",
        "--set", "eval.test_subset=50"]


def test_cli_pretrains_on_a_folder_and_scores_on_synthetic(tmp_path: Path) -> None:
    folder = _flat_folder(tmp_path / "pictures", 32)
    out = tmp_path / "runs"
    result = _run("pretrain", "--method", "simclr", "--dataset", "imagefolder",
                  "--data-root", str(folder), "--set", "eval.dataset=synthetic", *TINY,
                  "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "pretrained on imagefolder, evaluated on synthetic" in result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert "-imagefolder-to-synthetic-" in run_dir.name
    saved = RunDir(run_dir).read_json(RunDir(run_dir).result)
    assert (saved["pretrain_dataset"], saved["eval_dataset"]) == ("imagefolder", "synthetic")
    (row,) = open_index(out).rows()
    assert (row["dataset"], row["eval_dataset"]) == ("imagefolder", "synthetic")


def test_cli_unlabelled_folder_for_evaluation_is_one_line(tmp_path: Path) -> None:
    folder = _flat_folder(tmp_path / "pictures", 4)
    out = tmp_path / "runs"
    result = _run("pretrain", "--method", "simclr", "--dataset", "imagefolder",
                  "--data-root", str(folder), *TINY, "--out", str(out))
    _assert_one_line(result, "imagefolder/train has no labels", "--set eval.dataset=NAME")
    assert not out.exists()


def test_cli_truncated_idx_is_one_line(tmp_path: Path) -> None:
    images = _pattern((5, 28, 28))
    header = struct.pack(">IIII", 0x803, 5, 28, 28)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + images.tobytes()[:-100])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, 5) + bytes(5))
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"")
    out = tmp_path / "runs"
    result = _run("pretrain", "--method", "simclr", "--dataset", "fashion-mnist",
                  "--data-root", str(tmp_path), *TINY, "--out", str(out))
    _assert_one_line(result, "train-images-idx3-ubyte holds 3820 data bytes",
                     "download the original again")
    assert not out.exists()


# --- Every method on a folder of a user's photos ---------------------------------------------

MIXED_PHOTOS_SUITE = """
name = "photos"
dataset = "imagefolder"
methods = ["*"]
seeds = [0]
[budget.cpu]
backbone = "resnet18-narrow"
vit_backbone = "vit-mini"
set = ["data_root={root}", "image_size={size}", "train.epochs=1", "train.batch_size=8",
       "eval.val_fraction=0.25", "eval.curve_every=0"]
[budget.gpu]
backbone = "resnet18-narrow"
vit_backbone = "vit-mini"
set = ["data_root={root}", "image_size={size}", "train.epochs=1", "train.batch_size=8",
       "eval.val_fraction=0.25", "eval.curve_every=0"]
"""


@pytest.mark.slow
@pytest.mark.parametrize("size", [32, 64, 96])
def test_every_method_pretrains_and_evaluates_on_mixed_size_photos(tmp_path, size):
    # Photos of 40-90 px: 32 px shrinks every one, 96 px enlarges every one.
    datafiles.write_mixed_photos(tmp_path / "photos", per_class=12)
    suite = tmp_path / "photos.toml"
    suite.write_text(MIXED_PHOTOS_SUITE.format(root=tmp_path / "photos", size=size))
    ran = CliRunner().invoke(cli, ["bench", str(suite), "--out", str(tmp_path / "runs"),
                                   "--quiet"])
    assert ran.exit_code == 0, ran.output
    runs = [row for row in open_index(tmp_path / "runs").rows() if row["status"] != "floor"]
    assert sorted(row["method"] for row in runs) == sorted(load_registry().methods.names())
    assert all(row["status"] == "evaluated" for row in runs), runs
    assert {json.loads(row["config"])["image_size"] for row in runs} == {size}
