"""How the run.yaml files of several runs differ: each file flattened to dotted keys
(``training.learning_rate``, ``adapter.overrides[0].rank``), one row per key with every run's
value and whether they differ.

The files are read as plain YAML, not through RunConfig: a run written by an older Graftlab (a
key that no longer exists, a value that no longer validates) still shows what it holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MISSING = object()  # a key that one run.yaml does not have
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class DiffRow:
    """One key of the run.yaml files: its value in each run (MISSING where absent)."""

    key: str
    values: tuple[Any, ...]
    differs: bool


def read_run_yaml(run_dir: str | Path) -> dict[str, Any]:
    """The run folder's run.yaml as a dict ({} when missing or unreadable)."""
    with contextlib.suppress(OSError, yaml.YAMLError, UnicodeDecodeError):
        data = yaml.load((Path(run_dir) / "run.yaml").read_text(encoding="utf-8"),
                         Loader=_Loader)
        if isinstance(data, dict):
            return data
    return {}


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; a list of dicts to indexed keys (``overrides[0].rank``).
    Lists of plain values (targets, report_to) stay one value."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        if not data and prefix:
            out[prefix] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for i, v in enumerate(data):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = data
    return out


def diff_configs(configs: Sequence[dict[str, Any]]) -> list[DiffRow]:
    """Every key of any of `configs`, in the order the files hold them, with each run's value."""
    flat = [flatten(c) for c in configs]
    keys: dict[str, None] = {}
    for f in flat:
        keys.update(dict.fromkeys(f))
    rows = []
    for key in keys:
        values = tuple(f.get(key, MISSING) for f in flat)
        rows.append(DiffRow(key, values, any(v != values[0] for v in values[1:])))
    return rows


def format_value(value: Any, short: bool = False) -> str:
    """A value as one line: YAML's flow style (``[q_proj, v_proj]``), ``—`` when missing.
    `short`: a list of more than three module names as their count and kinds, as the runs
    table shows targets (``32: q_proj, v_proj``)."""
    if short and isinstance(value, list) and len(value) > 3 \
            and all(isinstance(v, str) for v in value):
        kinds = list(dict.fromkeys(v.rsplit(".", 1)[-1] for v in value))
        return f"{len(value)}: {', '.join(kinds)}"
    if value is MISSING:
        return "—"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str | int):
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
