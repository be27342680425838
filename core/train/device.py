"""The one rule for which device and precision a run uses, and the probe it is decided from.

`decide` works on plain values (the run's `device` and `precision` strings and what a probe
found), so the window can show the decision without initialising CUDA in its own process: it
gets the `Accelerator` from `probe_accelerator` run in a short-lived child process. The
training session and the memory estimate call the same rule with a probe made where they run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError


@dataclass(frozen=True)
class Accelerator:
    """What torch reports about the machine (JSON-able, so a child process can send it)."""

    cuda: bool = False
    bf16: bool = False
    """`torch.cuda.is_bf16_supported()` on device 0; False without CUDA."""
    name: str = "CPU"
    total_bytes: int = 0
    """GPU memory of device 0 (0 without CUDA)."""
    free_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Accelerator:
        return cls(bool(data.get("cuda")), bool(data.get("bf16")), str(data.get("name", "CPU")),
                   int(data.get("total_bytes", 0)), int(data.get("free_bytes", 0)))


CPU_ONLY = Accelerator()


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    """``cuda`` or ``cpu``."""
    precision: str
    """``bf16``, ``fp16`` or ``fp32``."""
    notes: tuple[str, ...] = ()
    """Why a setting was changed (fp16 asked for on CPU)."""


def probe_accelerator() -> Accelerator:
    """Ask torch (initialises CUDA: call it in a training or short-lived child process)."""
    import torch

    if not torch.cuda.is_available():
        return CPU_ONLY
    free, total = torch.cuda.mem_get_info()
    return Accelerator(True, bool(torch.cuda.is_bf16_supported()), torch.cuda.get_device_name(0),
                       int(total), int(free))


def decide(device: str, precision: str, accel: Accelerator) -> DeviceChoice:
    """Resolve ``auto`` device and precision for a machine described by `accel`.

    bf16 is chosen only where the probe says the GPU supports it; fp16 on CPU becomes fp32
    (accelerate would silently train in fp32 there).

    Raises:
        UserError: ``device: cuda`` on a machine without a CUDA GPU.
    """
    if device == "cuda" and not accel.cuda:
        raise UserError("training.device is cuda but no CUDA GPU is available; set "
                        "`training.device: auto` or cpu.", field="training.device")
    resolved = "cuda" if device == "cuda" or (device == "auto" and accel.cuda) else "cpu"
    notes: list[str] = []
    if precision == "auto":
        precision = "bf16" if resolved == "cuda" and accel.bf16 else "fp32"
    if precision == "fp16" and resolved == "cpu":
        notes.append("fp16 is not available on CPU (accelerate would silently run fp32); "
                     "training in fp32.")
        precision = "fp32"
    return DeviceChoice(resolved, precision, tuple(notes))


def pick_device_and_precision(cfg: RunConfig,
                              accel: Accelerator | None = None) -> tuple[str, str, list[str]]:
    """`decide` for a run, probing this process's torch unless `accel` is given."""
    choice = decide(cfg.training.device, cfg.training.precision,
                    accel if accel is not None else probe_accelerator())
    return choice.device, choice.precision, list(choice.notes)
