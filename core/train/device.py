"""The one rule for which device and precision a run uses."""

from __future__ import annotations

from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError


def pick_device_and_precision(cfg: RunConfig) -> tuple[str, str, list[str]]:
    """Resolve ``auto`` device/precision; never fp16 on CPU (accelerate ignores it there)."""
    import torch

    notes: list[str] = []
    t = cfg.training
    cuda = torch.cuda.is_available()
    if t.device == "cuda" and not cuda:
        raise UserError("training.device is cuda but no CUDA GPU is available; set "
                        "`training.device: auto` or cpu.", field="training.device")
    device = "cuda" if (t.device == "auto" and cuda) or t.device == "cuda" else "cpu"
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device == "cpu":
        notes.append("fp16 is not available on CPU (accelerate would silently run fp32); "
                     "training in fp32.")
        precision = "fp32"
    return device, precision, notes
