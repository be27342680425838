"""Quantized bases (`model.quantization`): bitsandbytes 8-bit and 4-bit NF4 loading for QLoRA.

The frozen base is loaded through transformers' bitsandbytes integration; the LoRA weights stay
in full precision, so the saved adapter is a plain PEFT folder that loads on the unquantized
base. What this module decides:

- 4-bit is NF4 with double quantization (the absmax of each 64-weight block is itself
  quantized to 8 bits, in groups of 256), computing in bf16 where the run trains in bf16 (a
  GPU that supports it) and in fp32 otherwise.
- The output and classification heads stay unquantized: a head trained in full
  (``modules_to_save``) cannot be a quantized weight, and transformers keeps ``lm_head``
  unquantized by default anyway.
- Checks before any weight is loaded, each one sentence: bitsandbytes missing, a checkpoint
  already quantized another way, and 8-bit with DoRA on CPU (bitsandbytes 0.50.2 fails on
  the second forward pass: PEFT's DoRA weight norm leaves the int8 layer's column statistics
  unset).
- ``quantization.json`` beside a trained adapter records how its base was quantized, so a
  later merge can say that it merges into the unquantized weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from graftlab.core.errors import UserError

QUANTIZATION_FILE = "quantization.json"
LABELS = {"8bit": "8-bit (LLM.int8)", "4bit": "4-bit (NF4, double quantization)"}
_FIELD = "model.quantization"


def bitsandbytes_available() -> bool:
    """Whether bitsandbytes is installed, without importing it (nor torch: the window asks)."""
    import importlib.util

    try:
        return importlib.util.find_spec("bitsandbytes") is not None
    except (ImportError, ValueError):  # a broken install, or an import blocked on purpose
        return False


def bitsandbytes_version() -> str | None:
    """The installed bitsandbytes version, or None when it cannot be imported."""
    try:
        import bitsandbytes
    except ImportError:  # also a package that is present but broken
        return None
    return str(getattr(bitsandbytes, "__version__", "unknown"))


def check_quantization(quantization: str, variant: str, device: str,
                       model_config: dict[str, Any] | None = None) -> None:
    """Refuse a quantized run that cannot work here, before any weight is loaded.

    Args:
        quantization: ``none``, ``8bit`` or ``4bit``.
        variant: the adapter variant (``lora``, ``rslora``, ``dora``).
        device: the resolved device, ``cpu`` or ``cuda``.
        model_config: the model's config.json as a dict, when known.
    """
    existing = (model_config or {}).get("quantization_config")
    if isinstance(existing, dict):
        _check_prequantized(existing, quantization)
    if quantization == "none":
        return
    if not bitsandbytes_available():
        raise UserError(f"model.quantization: {quantization} needs bitsandbytes, which is not "
                        "installed here; run pip install bitsandbytes, or "
                        "set model.quantization: none.", field=_FIELD)
    if quantization == "8bit" and variant == "dora" and device == "cpu":
        raise UserError("model.quantization: 8bit with adapter.variant: dora fails on CPU "
                        "(bitsandbytes loses the int8 weight statistics after the first step); "
                        "use model.quantization: 4bit or adapter.variant: lora.", field=_FIELD)


def _check_prequantized(existing: dict[str, Any], quantization: str) -> None:
    method = str(existing.get("quant_method", "unknown"))
    if method == "bitsandbytes":
        stored = "4bit" if existing.get("load_in_4bit") else "8bit"
        if quantization == stored:
            return
        raise UserError(f"this checkpoint is already quantized to {stored} with bitsandbytes, "
                        f"so model.quantization: {quantization} cannot apply; set "
                        f"model.quantization: {stored}, or train from the unquantized model.",
                        field=_FIELD)
    if quantization != "none":
        raise UserError(f"this checkpoint is already quantized ({method}), which bitsandbytes "
                        f"cannot quantize again; set model.quantization: none, or use the "
                        "unquantized model.", field=_FIELD)


def bnb_config(quantization: str, dtype: Any, keep: list[str]) -> Any:
    """The transformers ``BitsAndBytesConfig`` for `quantization`, computing in `dtype` (the
    dtype the run loads its weights in: bf16 on a bf16 GPU, else fp32); `keep` names modules
    that stay unquantized (the heads)."""
    from transformers import BitsAndBytesConfig

    skip = sorted(set(keep) | {"lm_head"})
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype,
                                  llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def device_map(device: str) -> dict[str, Any]:
    """Where bitsandbytes puts the quantized weights: this process's GPU, or the CPU."""
    if device != "cuda":
        return {"": "cpu"}
    import os

    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def quiet_bitsandbytes() -> None:
    """bitsandbytes logs a line per 8-bit matmul on CPU (inputs cast to fp16) and one about an
    optional kernels package; neither is something the user can act on."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def prepare_for_training(model: Any) -> Any:
    """PEFT's k-bit preparation: freeze the base, cast its remaining fp16/bf16 weights (norms,
    embeddings, heads) to fp32 for stable training. Checkpointing is left to the Trainer
    (`training.gradient_checkpointing`), which uses the non-reentrant kind."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def describe(quantization: str, dtype: Any) -> str:
    """The run-log line for a quantized load."""
    name = str(dtype).removeprefix("torch.")
    return (f"base quantized to {LABELS[quantization]} with bitsandbytes "
            f"{bitsandbytes_version()}, computing in {name}; the adapter trains in fp32")


def quantization_record(model: Any) -> dict[str, Any] | None:
    """How `model`'s base is quantized (for ``quantization.json``), or None when it is not."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None:
        return None
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    if get("load_in_4bit"):
        return {"quantization": "4bit", "library": "bitsandbytes",
                "quant_type": str(get("bnb_4bit_quant_type", "nf4")),
                "double_quant": bool(get("bnb_4bit_use_double_quant", False)),
                "compute_dtype": str(get("bnb_4bit_compute_dtype", "float32"))
                .removeprefix("torch.")}
    if get("load_in_8bit"):
        return {"quantization": "8bit", "library": "bitsandbytes"}
    return None


def write_record(adapter_dir: Path, model: Any) -> None:
    """Write ``quantization.json`` into `adapter_dir` when `model`'s base is quantized."""
    record = quantization_record(model)
    if record is not None:
        (adapter_dir / QUANTIZATION_FILE).write_text(json.dumps(record, indent=2) + "\n",
                                                     encoding="utf-8")


def trained_quantization(adapter_dir: str | Path) -> str:
    """How the base of an adapter was quantized in training: from ``quantization.json`` in
    the adapter folder, else from the run.yaml of the run folder it sits in; ``none``."""
    folder = Path(adapter_dir)
    try:
        record = json.loads((folder / QUANTIZATION_FILE).read_text(encoding="utf-8"))
        if isinstance(record, dict) and record.get("quantization") in LABELS:
            return str(record["quantization"])
    except (OSError, ValueError):
        pass
    run_yaml = folder.parent / "run.yaml"
    if run_yaml.is_file():
        import yaml

        try:
            data = yaml.safe_load(run_yaml.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return "none"
        value = (data.get("model") or {}).get("quantization") if isinstance(data, dict) else None
        if value in LABELS:
            return str(value)
    return "none"


def merge_note(adapter_dir: str | Path, base: str) -> str | None:
    """What a merge says about an adapter trained on a quantized base (None otherwise)."""
    quantization = trained_quantization(adapter_dir)
    if quantization == "none":
        return None
    return (f"the adapter was trained on a {LABELS[quantization]} copy of {base}; it is merged "
            "into the unquantized base weights, loaded fresh, so the merged model differs from "
            "the quantized training model by the quantization error only.")
