"""Fused kernels (`training.kernels`): Liger's Triton kernels on CUDA, where they exist.

Liger (the ``liger-kernel`` package) replaces a model's RMSNorm, rotary embedding and SwiGLU
MLP with fused Triton kernels, per architecture (``liger_kernel.transformers.monkey_patch``'s
table of ``apply_liger_kernel_to_<arch>`` functions). They need CUDA and Triton, so:

- ``auto`` applies them on CUDA when liger-kernel is installed and knows the model type, and
  otherwise skips them with one line in the run log (always on CPU);
- ``on`` requires them: anything missing is one sentence before any weight is loaded;
- ``off`` never applies them.

The loss is never Liger's: its fused linear cross-entropy would replace the model's forward and
with it Graftlab's own loss (the chunked loss, exact against the plain one and tested on every
device), so ``fused_linear_cross_entropy`` and ``cross_entropy`` are always passed as False.
The kernels are applied to the loaded base before PEFT wraps its layers: the patched MLP
forward calls its projections as modules, so LoRA (and 4-bit) layers inside still run.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from typing import Any

from graftlab.core.errors import UserError

_FIELD = "training.kernels"
_NO_LOSS = {"fused_linear_cross_entropy": False, "cross_entropy": False}


@dataclass(frozen=True)
class KernelChoice:
    use: bool
    message: str
    """The run-log line: what was chosen and why."""


def liger_installed() -> bool:
    try:
        return importlib.util.find_spec("liger_kernel") is not None
    except (ImportError, ValueError):  # a broken install, or an import blocked on purpose
        return False


def _supported_types() -> set[str] | None:
    """Model types Liger patches; None when liger-kernel does not import here."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except Exception:  # noqa: BLE001 - no Triton, an old transformers: Liger is unusable
        return None
    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def decide_kernels(mode: str, device: str, model_type: str, task: str) -> KernelChoice:
    """Whether this run uses Liger kernels (``training.kernels`` on `device`).

    Raises:
        UserError: ``on`` where they cannot be used.
    """
    if mode == "off":
        return KernelChoice(False, "fused kernels: off (training.kernels: off)")
    why = None
    if device != "cuda":
        why = "Liger's Triton kernels need a CUDA GPU and this run trains on the CPU"
    elif task != "causal-lm":
        why = f"Liger patches causal language models, not {task} models"
    elif not liger_installed():
        why = "liger-kernel is not installed (pip install liger-kernel)"
    else:
        supported = _supported_types()
        if supported is None:
            why = "liger-kernel is installed but does not import (check Triton and its version)"
        elif model_type not in supported:
            why = f"liger-kernel has no kernels for model type {model_type!r}"
    if why is None:
        return KernelChoice(True, f"fused kernels: Liger RMSNorm, RoPE and SwiGLU for "
                                  f"{model_type} (the loss stays Graftlab's)")
    if mode == "on":
        raise UserError(f"training.kernels is on but {why}; set training.kernels: auto (or "
                        "off) to train without fused kernels.", field=_FIELD)
    return KernelChoice(False, f"fused kernels: skipped ({why})")


def apply_kernels(model: Any) -> None:
    """Patch the loaded base `model` (before get_peft_model) with Liger's kernels for its
    type, never its loss."""
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    apply = MODEL_TYPE_TO_APPLY_LIGER_FN[model.config.model_type]
    accepted = inspect.signature(apply).parameters
    apply(model=model, **{k: v for k, v in _NO_LOSS.items() if k in accepted})
