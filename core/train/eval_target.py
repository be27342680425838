"""Score a trained adapter (a run folder or an adapter folder) on a data file, beside its base.

What `graftlab eval` runs. The data goes through the same loading and encoding as training
(``graftlab.core.data``), and the base side is the same model with its adapters disabled, so both
scores come from one loaded set of weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graftlab.core.adapter.export import ADAPTER_FILES, check_adapter_fits, read_label_names
from graftlab.core.config import DataConfig, RunConfig
from graftlab.core.errors import UserError

_PEFT_TASKS = {"SEQ_CLS": "sequence-classification", "CAUSAL_LM": "causal-lm"}


@dataclass
class EvalTarget:
    """Where an adapter and its base are, and how the run that made it read its data."""

    adapter_dir: Path
    base: str
    task: str
    max_length: int = 512
    seed: int = 0
    trust_remote_code: bool = False
    data_format: str = "auto"


def _is_adapter(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ADAPTER_FILES)


def resolve_target(target: str | Path, base: str | None = None) -> EvalTarget:
    """A run folder (run.yaml + adapter/) or an adapter folder, and the base it was trained on
    (the run's ``model.source`` or the adapter's ``base_model_name_or_path``, unless `base`)."""
    folder = Path(target)
    if not folder.exists():
        raise UserError(f"{folder} does not exist; pass a run folder (with run.yaml) or an "
                        "adapter folder (with adapter_config.json).")
    if (folder / "run.yaml").is_file():
        cfg = RunConfig.load(folder / "run.yaml")
        adapter = folder / "adapter"
        if not _is_adapter(adapter):
            raise UserError(f"the run folder {folder} has no trained adapter yet (no "
                            f"{adapter.name}/{ADAPTER_FILES[0]}); let the run finish, or pass "
                            "a checkpoint's or an exported adapter folder.")
        return EvalTarget(adapter, base or cfg.model.source, cfg.model.task,
                          cfg.data.max_length, cfg.training.seed, cfg.model.trust_remote_code,
                          cfg.data.format)
    if not _is_adapter(folder):
        raise UserError(f"{folder} is neither a run folder (no run.yaml) nor an adapter folder "
                        f"(needs {' and '.join(ADAPTER_FILES)}); pass the run folder or its "
                        "adapter/.")
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{folder / 'adapter_config.json'} is not valid JSON; restore the "
                        "adapter folder from its run.") from None
    base = base or config.get("base_model_name_or_path") or ""
    if not base:
        raise UserError(f"the adapter in {folder} does not name its base model; pass it with "
                        "--base MODEL.")
    task = _PEFT_TASKS.get(str(config.get("task_type") or ""), "auto")
    return EvalTarget(folder, base, task)


def _load(target: EvalTarget, label_names: list[str] | None) -> tuple[Any, Any, str]:
    """The base with the adapter attached (PeftModel), its tokenizer and the task."""
    import torch
    from graftlab.core.model.loading import load_base_model, quiet_libraries
    from peft import PeftModel
    from transformers import set_seed

    quiet_libraries()
    check_adapter_fits(target.adapter_dir, target.base, target.task, target.trust_remote_code)
    set_seed(target.seed)  # a head the base lacks is initialised as the run initialised it
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, task = load_base_model(
        target.base, target.task, trust_remote_code=target.trust_remote_code,
        label_names=label_names, device=device)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    try:
        peft_model = PeftModel.from_pretrained(model, str(target.adapter_dir))
    except (RuntimeError, ValueError) as exc:  # size mismatch, no matching module
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"the adapter in {target.adapter_dir} does not fit {target.base} "
                        f"({first}); pass the base it was trained on with --base.") from None
    return peft_model, tokenizer, task


def evaluate_target(target: EvalTarget, data: str, data_format: str | None = None,
                    max_examples: int | None = None, batch_size: int = 8) -> dict[str, Any]:
    """Scores of the adapted model and of its base (adapters disabled) on a data file.

    Returns:
        ``graftlab eval --json``'s object: the adapted scores with a ``base`` entry.
    """
    from graftlab.core.data.dataset import make_collator, prepare
    from graftlab.core.data.sources import resolve_data_path
    from graftlab.core.train.scoring import evaluate

    if max_examples is not None and max_examples < 1:
        raise UserError(f"--max-examples is {max_examples}; use at least 1 (or leave it out "
                        "for the whole file).")
    if not data.strip():
        raise UserError("--data is empty; pass a jsonl/json/csv/parquet/txt file.")
    resolve_data_path(data)  # a missing file is one sentence before any weight loads
    label_names = read_label_names(target.adapter_dir)
    model, tokenizer, task = _load(target, label_names)
    if task == "sequence-classification" and label_names is None:
        label_names = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    cfg = DataConfig(path=data, format=data_format or target.data_format,
                     max_length=target.max_length, max_examples=max_examples)
    prepared = prepare(cfg, tokenizer, task, target.seed,
                       label_names=label_names if task == "sequence-classification" else None)
    collator = make_collator(tokenizer, task)
    adapted = evaluate(model, prepared.train, collator, task, batch_size)
    base = evaluate(model, prepared.train, collator, task, batch_size, base=True)
    out = adapted.to_json()
    out["base"] = {k: v for k, v in base.to_json().items() if k not in ("task", "n")}
    return out
