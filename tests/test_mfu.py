"""MFU helpers: the peak table, the 3x forward convention, and no invented numbers."""

from __future__ import annotations

import pytest

from sslreg.engine.mfu import mfu, peak_flops, peak_flops_for_name, training_flops_per_image


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA A10G", 70e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA GeForce RTX 4090", 165.2e12),
    ],
)
def test_peak_flops_for_known_gpus(name: str, peak: float) -> None:
    assert peak_flops_for_name(name) == peak


def test_unknown_gpu_and_cpu_have_no_peak() -> None:
    assert peak_flops_for_name("NVIDIA GeForce GTX 1080") is None
    assert peak_flops_for_name("Some Future Accelerator") is None
    # Whole words only: an RTX A1000 is not an A100.
    assert peak_flops_for_name("NVIDIA RTX A1000 6GB Laptop GPU") is None
    assert peak_flops("cpu") is None


def test_training_flops_are_three_forwards_per_view() -> None:
    # 1 MFLOP forward, 2 views: (1 forward + 2 backward) x 2 views = 6 MFLOPs per image.
    assert training_flops_per_image(1e6, views=2) == 6e6
    assert training_flops_per_image(15_268_992, views=1) == 3 * 15_268_992


def test_mfu_is_achieved_over_peak() -> None:
    # 1000 images/s x 6e9 FLOPs = 6e12 FLOP/s on a 312e12 peak: 1.923%.
    assert mfu(1000, 6e9, 312e12) == pytest.approx(6e12 / 312e12)
    assert mfu(1000, 6e9, None) is None
