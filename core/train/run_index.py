"""What a run folder says about its run, from a cheap read: the status, model, targets,
progress, final loss, eval metric, start time and duration.

The summary comes from ``run.yaml``, the folder's live lock and ``live.json``
(graftlab.core.train.live) and the head and tail of ``metrics.jsonl``: a folder with thousands
of step lines costs two small reads. Curves (every step) are read only on request
(`read_curves`).

Status: the last of the started / finished / failed events decides: ``finished``, ``stopped``
(finished early) or ``failed``. Without a final event (a resume cuts the earlier one away), a
live writer (it holds the folder's lock) means ``running``, or ``paused`` when it is paused;
a writer that is gone means the run was ``killed``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

HEAD_BYTES = 16_384
TAIL_BYTES = 8_192
EVAL_SEARCH_BYTES = 1_048_576  # how far back to look for the last eval line
STATUSES = ("running", "paused", "finished", "stopped", "failed", "killed")


@dataclass
class RunSummary:
    """One row of the runs library and of `graftlab runs`."""

    run_dir: str
    status: str
    model: str = ""
    targets: str = ""
    steps: int = 0
    max_steps: int | None = None
    final_loss: float | None = None
    eval: float | None = None
    eval_name: str = ""
    started_at: float | None = None
    duration_s: float | None = None
    adapter: str | None = None
    message: str = ""
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        keys = ("run_dir", "status", "model", "steps", "max_steps", "final_loss", "eval",
                "started_at", "duration_s", "adapter")
        d = asdict(self)
        return {k: d[k] for k in keys} | {"targets": self.targets, "eval_name": self.eval_name,
                                          "message": self.message}


def is_run_dir(path: str | Path) -> bool:
    """A Graftlab run folder: a run.yaml next to metrics.jsonl (or an adapter/ or live.json)."""
    p = Path(path)
    return (p / "run.yaml").is_file() and any(
        (p / n).exists() for n in ("metrics.jsonl", "adapter", "live.json"))


def find_runs(roots: Iterable[str | Path], depth: int = 2) -> list[Path]:
    """Run folders under each root (the root itself, its children and grandchildren)."""
    seen: set[Path] = set()
    out: list[Path] = []

    def visit(p: Path, d: int) -> None:
        if is_run_dir(p):
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(p)
            return
        if d <= 0:
            return
        try:
            children = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:
            return
        for c in children:
            visit(c, d - 1)

    for root in roots:
        visit(Path(root).expanduser(), depth)
    return out


def _lines(data: bytes, only: bytes = b"") -> list[dict[str, Any]]:
    """The JSON objects of `data`'s lines (those holding `only`, when given)."""
    out = []
    for line in data.split(b"\n"):
        if not line.strip() or only not in line:
            continue
        try:
            d = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a torn line, or the cut at the start of a tail
        if isinstance(d, dict):
            out.append(d)
    return out


def _eval_value(d: dict[str, Any]) -> tuple[str, float | None]:
    for key in ("accuracy", "f1_macro", "eval_loss"):
        if isinstance(d.get(key), int | float):
            return key, float(d[key])
    return "", None


def _targets_summary(targets: list[str]) -> str:
    kinds: list[str] = []
    for t in targets:
        k = t.rsplit(".", 1)[-1]
        if k not in kinds:
            kinds.append(k)
    return f"{len(targets)}: {', '.join(kinds)}" if targets else ""


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_run(run_dir: str | Path) -> RunSummary:
    """The summary of one run folder (see the module docstring); never raises for a damaged
    folder: what cannot be read stays empty."""
    run = Path(run_dir)
    s = RunSummary(str(run), "killed")
    cfg: dict[str, Any] = {}
    with contextlib.suppress(OSError, yaml.YAMLError, UnicodeDecodeError):
        cfg = yaml.load((run / "run.yaml").read_text(encoding="utf-8"), Loader=_Loader) or {}
    model, adapter, training, data = (cfg.get(k) or {} for k in
                                      ("model", "adapter", "training", "data"))
    s.model = str(model.get("source", ""))
    s.targets = _targets_summary(list(adapter.get("targets") or []))
    if isinstance(training.get("max_steps"), int) and training["max_steps"] > 0:
        s.max_steps = training["max_steps"]
    head: list[dict[str, Any]] = []
    tail: list[dict[str, Any]] = []
    metrics = run / "metrics.jsonl"
    try:
        with open(metrics, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            head = _lines(fh.read(min(HEAD_BYTES, size)), b'"event": "started"')
            start = max(size - TAIL_BYTES, 0)
            fh.seek(start)
            if start == 0:
                fh.seek(0)
                head = tail = _lines(fh.read())
            else:
                tail = _lines(fh.read())
            ev = [d for d in tail if d.get("event") == "eval" and not d.get("base")]
            if not ev and start > 0 and float(data.get("eval_fraction") or 0) > 0:
                back = max(size - EVAL_SEARCH_BYTES, 0)
                fh.seek(back)
                chunk = fh.read(start - back)
                at = chunk.rfind(b'"event": "eval"')
                while at >= 0 and not ev:
                    lo = chunk.rfind(b"\n", 0, at) + 1
                    hi = chunk.find(b"\n", at)
                    ev = [d for d in _lines(chunk[lo:hi if hi >= 0 else None])
                          if not d.get("base")]
                    at = chunk.rfind(b'"event": "eval"', 0, lo)
            if ev:
                s.eval_name, s.eval = _eval_value(ev[-1])
    except OSError:
        pass
    if s.started_at is None:
        with contextlib.suppress(OSError):
            s.started_at = (run / "run.yaml").stat().st_mtime
    for d in head + tail:
        if d.get("event") == "started" and isinstance(d.get("total_steps"), int) \
                and d["total_steps"] > 0:
            s.max_steps = d["total_steps"]
    steps = [d for d in tail if d.get("event") == "step"]
    if steps:
        s.steps = int(steps[-1].get("step", 0))
        loss = steps[-1].get("loss")
        s.final_loss = float(loss) if isinstance(loss, int | float) else None
        el = steps[-1].get("elapsed_s")
        s.duration_s = float(el) if isinstance(el, int | float) else None
    last = None  # the last started / finished / failed event decides when no writer lives
    lifecycle = None
    for d in tail:
        kind = d.get("event")
        if kind in ("started", "finished", "failed"):
            last = d
        if kind in ("paused", "resumed", "started"):
            lifecycle = kind
    if last is None:
        last = next((d for d in reversed(head) if d.get("event") in ("started", "finished",
                                                                      "failed")), None)
    if last is not None and last.get("event") == "finished":
        s.status = "stopped" if last.get("stopped_early") else "finished"
        s.steps = max(s.steps, int(last.get("step") or 0))
        if isinstance(last.get("elapsed_s"), int | float) and last["elapsed_s"] > 0:
            s.duration_s = float(last["elapsed_s"])
    elif last is not None and last.get("event") == "failed":
        s.status = "failed"
        s.message = str(last.get("message", ""))
    open_ended = last is None or last.get("event") == "started"
    if open_ended:
        from graftlab.core.train.live import is_live, read_live

        live = read_live(run)
        if isinstance(live.get("pid"), int):
            s.pid = live["pid"]
        if is_live(run):  # the kernel holds the lock for exactly as long as the writer lives
            s.status = "paused" if live.get("phase") == "paused" or lifecycle == "paused" \
                else "running"
    if (run / "adapter" / "adapter_config.json").is_file():
        s.adapter = str(run / "adapter")
    return s


def read_runs(roots: Iterable[str | Path]) -> list[RunSummary]:
    """Summaries of every run folder under `roots`, newest first."""
    rows = [read_run(p) for p in find_runs(roots)]
    rows.sort(key=lambda r: r.started_at or 0.0, reverse=True)
    return rows


def read_curves(run_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """The whole history's loss and eval curves: {"loss": (steps, values), "eval_loss": ...}."""
    out: dict[str, tuple[list[int], list[float]]] = {"loss": ([], []), "eval_loss": ([], [])}
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return out
    with open(path, "rb") as fh:
        for line in fh:
            if b'"event": "step"' in line:
                name = "loss"
            elif b'"event": "eval"' in line:
                name = "eval_loss"
            else:
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if d.get("base") or not isinstance(d.get(name), int | float):
                continue
            out[name][0].append(int(d.get("step", 0)))
            out[name][1].append(float(d[name]))
    return out
