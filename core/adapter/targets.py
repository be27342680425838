"""What a Try target names: a run folder, an adapter folder or a model, and the base it needs.

Reading a target never loads weights: it answers which base model to load (and as which task,
with how many labels), which adapter folder goes with it and what to call that adapter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graftlab.core.errors import UserError

BASE = "base"  # the name of the side that runs with every adapter disabled
_TASKS = {"CAUSAL_LM": "causal-lm", "SEQ_CLS": "sequence-classification"}


@dataclass(frozen=True)
class Target:
    """A resolved target.

    Attributes:
        base: the base model spec (folder, cached/hub id, ``demo:<name>``).
        task: ``causal-lm``, ``sequence-classification`` or ``auto``.
        adapter_dir: the adapter folder, or None for a bare model.
        name: a default name for the adapter (the run or adapter folder's name).
        label_names: classifier label names stored with the adapter, if any.
        num_labels: classifier head size when known (from the run or the adapter's head).
    """

    base: str
    task: str = "auto"
    adapter_dir: Path | None = None
    name: str = ""
    label_names: tuple[str, ...] | None = None
    num_labels: int | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read as JSON ({type(exc).__name__}); the adapter "
                        "folder is damaged.", field="adapter_dir") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object; the adapter folder is damaged.",
                        field="adapter_dir")
    return data


def _run_model(run_dir: Path) -> tuple[str, str, int | None]:
    from graftlab.core.config import RunConfig

    cfg = RunConfig.load(run_dir / "run.yaml")
    return cfg.model.source, cfg.model.task, cfg.model.num_labels


def adapter_name(folder: Path) -> str:
    """A PEFT-safe adapter name from a folder: the run's name for ``RUN/adapter``."""
    folder = folder.resolve()
    raw = folder.parent.name if folder.name == "adapter" and folder.parent.name else folder.name
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_") or "adapter"
    return "adapter_" + name if name == BASE else name


def adapter_labels(folder: Path) -> tuple[str, ...] | None:
    """Label names stored with a classifier adapter: an ``id2label`` in adapter_config.json,
    in an ``id2label.json`` or in a ``config.json`` beside it; None when none is there."""
    for path, key in ((folder / "adapter_config.json", "id2label"),
                      (folder / "id2label.json", None), (folder / "config.json", "id2label")):
        if not path.is_file():
            continue
        data = _read_json(path)
        mapping = data.get(key) if key else data
        if isinstance(mapping, dict) and mapping:
            try:
                return tuple(str(mapping[k]) for k in sorted(mapping, key=int))
            except (TypeError, ValueError):
                continue
        if isinstance(mapping, list) and mapping:
            return tuple(str(x) for x in mapping)
    return None


def _head_size(folder: Path, config: dict[str, Any]) -> int | None:
    """Rows of the saved classifier head (``modules_to_save``), read from tensor shapes."""
    saved = config.get("modules_to_save") or []
    if isinstance(saved, str):
        saved = [saved]
    weights = folder / "adapter_model.safetensors"
    if not saved or not weights.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                if key.endswith(".weight") and "lora_" not in key and any(
                        f"{s}." in key for s in saved):
                    shape = fh.get_slice(key).get_shape()
                    if len(shape) == 2:
                        return int(shape[0])
    except Exception:  # a damaged file is reported when the adapter is loaded
        return None
    return None


def read_target(target: str | Path) -> Target:
    """Resolve a run folder, an adapter folder or a model spec (see :class:`Target`)."""
    text = str(target).strip()
    if not text:
        raise UserError("no target given; pass a run folder, an adapter folder or a model.",
                        field="target")
    path = Path(text).expanduser()
    if path.is_dir() and (path / "run.yaml").is_file():
        base, task, num_labels = _run_model(path)
        adapter = path / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise UserError(f"the run in {path} has no adapter yet (no adapter/ folder); train "
                            "it first, or pass the base model to try the base alone.",
                            field="target")
        found = adapter_target(adapter)
        return Target(base, task, adapter, found.name, found.label_names,
                      num_labels or found.num_labels)
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return adapter_target(path)
    return Target(text)


def adapter_target(folder: str | Path) -> Target:
    """The base and adapter of a PEFT adapter folder (a run's ``adapter/`` uses its run.yaml)."""
    folder = Path(folder).expanduser()
    from graftlab.core.adapter.export import check_adapter_dir

    check_adapter_dir(folder)
    config = _read_json(folder / "adapter_config.json")
    task = _TASKS.get(str(config.get("task_type") or ""), "auto")
    labels = adapter_labels(folder)
    num_labels = len(labels) if labels else _head_size(folder, config)
    if (folder.parent / "run.yaml").is_file():
        base, run_task, run_labels = _run_model(folder.parent)
        return Target(base, run_task if run_task != "auto" else task, folder,
                      adapter_name(folder), labels, run_labels or num_labels)
    base = config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{folder / 'adapter_config.json'} does not name its base model "
                        "(base_model_name_or_path); pass the base model as TARGET and the "
                        "folder with --adapter.", field="adapter_dir")
    return Target(str(base), task, folder, adapter_name(folder), labels, num_labels)
