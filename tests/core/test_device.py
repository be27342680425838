"""The one device/precision rule, from plain values (what the window and the estimate use)."""

from __future__ import annotations

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train.device import (
    CPU_ONLY,
    Accelerator,
    decide,
    pick_device_and_precision,
)

BF16_GPU = Accelerator(cuda=True, bf16=True, name="H100", total_bytes=80 << 30,
                       free_bytes=79 << 30)
OLD_GPU = Accelerator(cuda=True, bf16=False, name="T4")


@pytest.mark.parametrize(("device", "precision", "accel", "expected"), [
    ("auto", "auto", CPU_ONLY, ("cpu", "fp32")),
    ("auto", "auto", BF16_GPU, ("cuda", "bf16")),
    ("auto", "auto", OLD_GPU, ("cuda", "fp32")),  # bf16 only where torch says so
    ("cpu", "auto", BF16_GPU, ("cpu", "fp32")),
    ("cuda", "fp16", OLD_GPU, ("cuda", "fp16")),
    ("auto", "bf16", CPU_ONLY, ("cpu", "bf16")),
])
def test_decide(device, precision, accel, expected):
    choice = decide(device, precision, accel)
    assert (choice.device, choice.precision) == expected and not choice.notes


def test_fp16_on_cpu_becomes_fp32_with_a_note():
    choice = decide("auto", "fp16", CPU_ONLY)
    assert (choice.device, choice.precision) == ("cpu", "fp32")
    assert "fp16 is not available on CPU" in choice.notes[0]


def test_cuda_without_a_gpu_is_a_user_error_naming_the_field():
    with pytest.raises(UserError, match="no CUDA GPU") as info:
        decide("cuda", "auto", CPU_ONLY)
    assert info.value.field == "training.device"


def test_the_session_form_uses_the_same_rule():
    cfg = RunConfig()
    cfg.training.precision = "fp16"
    assert pick_device_and_precision(cfg, BF16_GPU) == ("cuda", "fp16", [])
    device, precision, notes = pick_device_and_precision(cfg, CPU_ONLY)
    assert (device, precision) == ("cpu", "fp32") and len(notes) == 1


def test_an_accelerator_survives_json():
    assert Accelerator.from_dict(BF16_GPU.to_dict()) == BF16_GPU
