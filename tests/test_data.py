"""The built-in datasets: each loader reads small files written in the real on-disk format."""

from __future__ import annotations

import importlib.util
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from datafiles import cifar_batch as _cifar_batch
from datafiles import pattern as _pattern
from datafiles import write_fashion as _write_fashion
from datafiles import write_png as _write_png

from sslreg import DataError, load_registry
from sslreg.data import (
    ImageDataset,
    cifar,
    digits,
    idx,
    imagefolder,
    load_dataset,
    stl10,
    synthetic,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never read the real home or reach the network from a test.
    monkeypatch.setenv("SSLREG_DATA", str(tmp_path / "sslreg-data"))
    monkeypatch.setenv("SSLREG_OFFLINE", "1")


# --- ImageDataset -------------------------------------------------------------------------


def _dataset(count: int = 50, channels: int = 3) -> ImageDataset:
    images = torch.from_numpy(_pattern((count, channels, 6, 6)))
    labels = torch.arange(count) % 4
    return ImageDataset(images=images, labels=labels, classes="abcd", name="toy")


def test_dataset_properties() -> None:
    data = _dataset()
    assert (len(data), data.num_classes, data.channels, data.image_size) == (50, 4, 3, 6)
    assert data.classes == ("a", "b", "c", "d")
    wide = ImageDataset(
        images=torch.zeros(2, 1, 4, 8, dtype=torch.uint8),
        labels=torch.zeros(2, dtype=torch.int64),
        classes=("x",),
        name="w",
    )
    assert wide.image_size == (4, 8)


@pytest.mark.parametrize(
    "images, labels",
    [
        (torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64)),  # float images
        (torch.zeros(4, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64)),  # 3-d
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64)),
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.full((4,), 2, dtype=torch.int64)),
        (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int32)),
    ],
)
def test_dataset_validation(images: torch.Tensor, labels: torch.Tensor) -> None:
    with pytest.raises(DataError):
        ImageDataset(images=images, labels=labels, classes=("a", "b"), name="bad")


def test_subset_is_deterministic_and_sized() -> None:
    data = _dataset()
    first, again, other = data.subset(20, seed=3), data.subset(20, seed=3), data.subset(20, 4)
    assert len(first) == 20
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)
    assert data.subset(0, seed=1) is data and data.subset(50, seed=1) is data


def test_channel_stats_match_float64() -> None:
    data = _dataset(count=300)
    mean, std = data.channel_stats()
    pixels = data.images.to(torch.float64) / 255
    expected_mean = pixels.mean(dim=(0, 2, 3))
    expected_std = pixels.transpose(0, 1).reshape(3, -1).std(dim=1, unbiased=False)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), expected_mean, atol=1e-12)
    assert torch.allclose(torch.tensor(std, dtype=torch.float64), expected_std, atol=1e-12)


def test_to_device_keeps_data() -> None:
    data = _dataset()
    moved = data.to("cpu")
    assert torch.equal(moved.images, data.images) and moved.classes == data.classes


# --- Fashion-MNIST (IDX) ------------------------------------------------------------------


@pytest.fixture
def no_system_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(idx, "SYSTEM_DIRS", (tmp_path / "no-such-system-dir",))


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_reads_idx(tmp_path: Path, compress: bool, no_system_copy: None) -> None:
    images = _write_fashion(tmp_path / "fm", compress)
    data = idx.load("test", root=tmp_path / "fm")
    assert data.images.shape == (7, 1, 28, 28) and data.images.dtype == torch.uint8
    assert int(data.images[2, 0, 3, 5]) == int(images[2, 3, 5])  # row 3, column 5
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 5, 6] and data.num_classes == 10


def test_fashion_found_in_sslreg_data(tmp_path: Path, no_system_copy: None) -> None:
    _write_fashion(tmp_path / "sslreg-data" / "fashion-mnist", compress=True)
    assert len(idx.load("train")) == 7


@pytest.mark.parametrize("damage", ["magic", "truncate", "header"])
def test_fashion_malformed_file(tmp_path: Path, damage: str, no_system_copy: None) -> None:
    _write_fashion(tmp_path, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    content = path.read_bytes()
    broken = {
        "magic": struct.pack(">I", 0x801) + content[4:],
        "truncate": content[:-10],
        "header": content[:9],
    }[damage]
    path.write_bytes(broken)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        idx.load("test", root=tmp_path)


def test_fashion_missing_names_places_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_system_copy: None
) -> None:
    monkeypatch.delenv("SSLREG_OFFLINE")
    monkeypatch.setattr(idx, "download", lambda target: "download failed: offline")
    with pytest.raises(DataError) as error:
        idx.load("train", root=tmp_path / "empty")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "empty") in message
    assert "apt-get install dataset-fashion-mnist" in message and "$SSLREG_DATA" in message


def test_fashion_offline_skips_download(tmp_path: Path, no_system_copy: None) -> None:
    with pytest.raises(DataError, match="SSLREG_OFFLINE"):
        idx.load("train")
    assert not (tmp_path / "sslreg-data" / "fashion-mnist").exists()


def test_unknown_split_lists_valid_ones() -> None:
    for loader in (idx.load, cifar.load_cifar10, stl10.load, digits.load, synthetic.load):
        with pytest.raises(DataError, match="choose from: train, test"):
            loader("validation")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    train, test = idx.load("train"), idx.load("test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.num_classes == 10 and train.labels.bincount().tolist() == [6000] * 10
    assert train.classes[9] == "Ankle boot"


# --- CIFAR --------------------------------------------------------------------------------


def test_cifar10_reads_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    batches = [_pattern((3, 3, 32, 32), seed) for seed in range(6)]
    for number in range(1, 6):
        _cifar_batch(folder / f"data_batch_{number}", batches[number - 1], [number] * 3, b"labels")
    _cifar_batch(folder / "test_batch", batches[5], [9, 0, 4], b"labels")
    train = cifar.load_cifar10("train", root=tmp_path)
    assert train.images.shape == (15, 3, 32, 32) and train.classes[3] == "class3"
    assert train.labels.tolist() == [n for n in range(1, 6) for _ in range(3)]
    # Channel 2 (blue), row 1, column 30 of the second image of batch 2.
    assert int(train.images[4, 2, 1, 30]) == int(batches[1][1, 2, 1, 30])


def test_cifar100_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)], b"coarse_label_names": []}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    images = _pattern((4, 3, 32, 32))
    batch = {b"data": images.reshape(4, -1), b"fine_labels": [99, 0, 5, 42], b"coarse_labels": [0]}
    (folder / "test").write_bytes(pickle.dumps(batch))
    monkeypatch.setenv("SSLREG_DATA", str(tmp_path))
    data = cifar.load_cifar100("test")
    assert data.num_classes == 100 and data.labels.tolist() == [99, 0, 5, 42]
    assert np.array_equal(data.images.numpy(), images)


def test_cifar_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar-10-batches-py/batches.meta.*cifar.html"):
        cifar.load_cifar10("train", root=tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read"):
        cifar.load_cifar10("test", root=tmp_path)


# --- STL-10 -------------------------------------------------------------------------------


def test_stl10_transposes_column_major(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = np.zeros((2, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W) as they should load
    images[1, 0, 5, 70] = 200  # red, row 5, column 70: a transpose bug moves it
    images[0, 2] = _pattern((96, 96))
    # The file stores each channel column-major: x (column) outer, y (row) inner.
    (folder / "train_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
    (folder / "train_y.bin").write_bytes(bytes([10, 1]))
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    data = stl10.load("train", root=tmp_path)
    assert data.images.shape == (2, 3, 96, 96) and data.labels.tolist() == [9, 0]
    assert int(data.images[1, 0, 5, 70]) == 200 and int(data.images[1, 0, 70, 5]) == 0
    assert np.array_equal(data.images.numpy(), images) and data.classes[9] == "c9"


def test_stl10_missing_and_bad_size(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="stl10_binary/test_X.bin"):
        stl10.load("test", root=tmp_path)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "test_X.bin").write_bytes(bytes(1000))
    with pytest.raises(DataError, match="not a multiple"):
        stl10.load("test", root=tmp_path)


# --- ImageFolder --------------------------------------------------------------------------


def test_imagefolder_rgb(tmp_path: Path) -> None:
    cat, dog = _pattern((5, 7, 3), 1), _pattern((5, 7, 3), 2)  # H=5, W=7
    _write_png(tmp_path / "train" / "cat" / "a.png", cat)
    _write_png(tmp_path / "train" / "dog" / "b.png", dog)
    _write_png(tmp_path / "test" / "emu" / "c.png", cat)
    data = imagefolder.load("train", root=tmp_path)
    assert data.classes == ("cat", "dog", "emu") and data.labels.tolist() == [0, 1]
    assert data.images.shape == (2, 3, 5, 7) and data.image_size == (5, 7)
    assert int(data.images[1, 2, 4, 6]) == int(dog[4, 6, 2])
    assert np.array_equal(data.images[0].numpy(), cat.transpose(2, 0, 1))
    assert imagefolder.load("test", root=tmp_path).labels.tolist() == [2]


def test_imagefolder_grayscale_stays_one_channel(tmp_path: Path) -> None:
    gray = _pattern((9, 9))
    _write_png(tmp_path / "test" / "x" / "0.png", gray)
    _write_png(tmp_path / "test" / "y" / "1.png", gray[::-1].copy())
    data = imagefolder.load("test", root=tmp_path)
    assert data.images.shape == (2, 1, 9, 9) and np.array_equal(data.images[0, 0].numpy(), gray)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="imagefolder needs --data-root PATH"):
        imagefolder.load("train")
    with pytest.raises(DataError, match=r"no images in .*/\*; put files ending in .*train/<cl"):
        imagefolder.load("train", root=tmp_path)
    _write_png(tmp_path / "test" / "a" / "0.png", _pattern((8, 8)))
    with pytest.raises(DataError, match="train.* is missing"):
        imagefolder.load("train", root=tmp_path)
    _write_png(tmp_path / "train" / "a" / "0.png", _pattern((8, 8)))
    _write_png(tmp_path / "train" / "a" / "1.png", _pattern((8, 9)))
    with pytest.raises(DataError, match=r"1\.png is 9x8 .* set image_size=N"):
        imagefolder.load("train", root=tmp_path)
    with pytest.raises(DataError, match="choose from"):
        imagefolder.load("val", root=tmp_path)


# --- digits and synthetic -----------------------------------------------------------------


def test_digits_split() -> None:
    if importlib.util.find_spec("sklearn") is None:  # importing sklearn itself takes seconds
        pytest.skip("scikit-learn is not installed")
    train, test = digits.load("train"), digits.load("test")
    assert train.images.shape == (1500, 1, 8, 8) and test.images.shape == (297, 1, 8, 8)
    assert int(train.images.max()) == 255 and train.num_classes == 10
    assert torch.equal(digits.load("train").images, train.images)


def test_digits_without_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    real = digits.importlib.util.find_spec
    monkeypatch.setattr(
        digits.importlib.util, "find_spec", lambda name: None if name == "sklearn" else real(name)
    )
    with pytest.raises(DataError, match="pip install scikit-learn"):
        digits.load("train")


@pytest.fixture(scope="module")
def synthetic_splits() -> tuple[ImageDataset, ImageDataset]:
    return synthetic.load("train"), synthetic.load("test")


def test_synthetic_is_deterministic(synthetic_splits: tuple[ImageDataset, ImageDataset]) -> None:
    first, test = synthetic_splits
    again = synthetic.load("train")
    assert first.images.shape == (2000, 1, 28, 28) and len(test) == 500
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert first.labels.bincount().tolist() == [200] * 10
    assert not torch.equal(first.images[:500], test.images)  # test draws are new images


def test_synthetic_is_learnable_not_trivial(
    synthetic_splits: tuple[ImageDataset, ImageDataset],
) -> None:
    train, test = synthetic_splits
    pixels, test_pixels = train.images.flatten(1).double(), test.images.flatten(1).double()
    means = torch.stack([pixels[train.labels == c].mean(0) for c in range(10)])
    predicted = torch.cdist(test_pixels, means).argmin(1)
    accuracy = (predicted == test.labels).double().mean().item()
    assert 0.5 < accuracy < 0.95  # nearest class mean: clearly above chance (0.1), not solved


# --- registry -----------------------------------------------------------------------------


def test_registry_lists_the_built_in_datasets(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    registry = load_registry()
    names = {"fashion-mnist", "cifar10", "cifar100", "stl10", "stl10-unlabeled", "imagefolder",
             "digits", "synthetic"}
    assert names <= set(registry.datasets.names())
    assert registry.datasets.get("imagefolder").needs_root
    data = load_dataset(registry, "synthetic", "test")
    assert isinstance(data, ImageDataset) and len(data) == 500
    assert not [f for f in registry.failures if f.name == "sslreg.builtins.datasets"]
    with pytest.raises(DataError, match="no cifar-10-batches-py/batches.meta in"):
        load_dataset(registry, "cifar10", "train", root=tmp_path)
    monkeypatch.delenv("SSLREG_DATA")
    with pytest.raises(DataError, match="pass --data-root PATH or set \\$SSLREG_DATA"):
        load_dataset(registry, "stl10", "test")


def test_validation_split_is_stratified_disjoint_and_fixed():
    from sslreg.data import synthetic

    data = synthetic.generate(1000, seed=0)
    rest, held = data.split(0.1, seed=0)
    assert len(rest) + len(held) == len(data)
    counts = torch.bincount(data.labels, minlength=10)
    assert torch.equal(torch.bincount(held.labels, minlength=10), torch.round(counts * 0.1).long())
    # Disjoint: no image of the held part is in the rest (compared as whole images).
    flat = {bytes(image.numpy()) for image in rest.images}
    assert not any(bytes(image.numpy()) in flat for image in held.images)
    again, held_again = data.split(0.1, seed=0)
    assert torch.equal(held.images, held_again.images) and torch.equal(rest.images, again.images)
    other = data.split(0.1, seed=1)[1]
    assert not torch.equal(held.images, other.images)


def test_a_split_that_leaves_one_side_empty_is_refused():
    from sslreg.data import synthetic

    with pytest.raises(DataError, match="leaves one side empty"):
        synthetic.generate(5, seed=0).split(0.01, seed=0)
