"""Training events: plain dataclasses, one JSON line each.

A training session sends every event to its sinks: the GUI worker (through a batcher), the CLI
progress bar, and ``metrics.jsonl`` in the run folder, which is the full history. The plots are a
view of that file; a detached runner can stream the same lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from time import monotonic
from typing import Any, ClassVar


@dataclass
class Event:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind} | asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)


@dataclass
class Started(Event):
    kind: ClassVar[str] = "started"
    run_dir: str
    total_steps: int
    trainable_params: int
    base_params: int
    device: str
    precision: str
    num_examples: int
    start_step: int = 0
    world_size: int = 1
    """Training processes (data-parallel ranks); tokens/s counts all of them."""
    quantization: str = "none"
    """How the frozen base was loaded: ``none``, ``8bit`` or ``4bit`` (model.quantization)."""


@dataclass
class Step(Event):
    """One logged optimizer step. Rates exclude paused time."""

    kind: ClassVar[str] = "step"
    step: int
    loss: float
    learning_rate: float
    grad_norm: float | None
    epoch: float
    tokens_per_s: float
    tokens_seen: int
    elapsed_s: float
    eta_s: float | None
    memory_mb: float
    gpu_memory_mb: float | None = None


@dataclass
class Eval(Event):
    """Scores on the eval split. ``base`` marks the base model's scores (adapters disabled),
    computed once before training; the rest are the adapted model's at ``step``.

    Causal LM: ``eval_loss`` is the mean cross-entropy per trained token (labels != -100, as
    training computes it) and ``perplexity`` is exp(eval_loss). Classification: ``eval_loss``
    is the mean cross-entropy per example, plus accuracy, macro-F1, the class names, the true
    count per class and the confusion matrix (rows: true class, columns: predicted).
    """

    kind: ClassVar[str] = "eval"
    step: int
    eval_loss: float
    base: bool = False
    task: str | None = None
    n: int | None = None
    perplexity: float | None = None
    accuracy: float | None = None
    f1_macro: float | None = None
    labels: list[str] | None = None
    counts: list[int] | None = None
    confusion: list[list[int]] | None = None


@dataclass
class UpdateNorms(Event):
    """Relative update size ‖scale·B·A‖_F / ‖W‖_F per adapted module (the layer heatmap)."""

    kind: ClassVar[str] = "update_norms"
    step: int
    sizes: dict[str, float]


@dataclass
class Sample(Event):
    """What the adapter makes of one of ``training.sample_prompts`` at ``step``: the greedy
    continuation only (special tokens skipped), or a classifier's predicted label."""

    kind: ClassVar[str] = "sample"
    step: int
    prompt: str
    text: str


@dataclass
class Checkpoint(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str


@dataclass
class Paused(Event):
    kind: ClassVar[str] = "paused"
    step: int


@dataclass
class Resumed(Event):
    kind: ClassVar[str] = "resumed"
    step: int


@dataclass
class Message(Event):
    """A line for the log view (warnings from the plan, data statistics, notices)."""

    kind: ClassVar[str] = "message"
    text: str
    level: str = "info"


@dataclass
class Download(Event):
    """Base weights arriving from the hub (a run or merge of a model not downloaded yet)."""

    kind: ClassVar[str] = "download"
    done_bytes: int
    total_bytes: int
    file: str


@dataclass
class Saving(Event):
    """A checkpoint or the adapter is being written; the process must not be killed now."""

    kind: ClassVar[str] = "saving"
    step: int
    what: str  # "checkpoint" or "adapter"


@dataclass
class Finished(Event):
    kind: ClassVar[str] = "finished"
    step: int
    stopped_early: bool
    adapter_dir: str | None
    train_loss: float | None
    elapsed_s: float


@dataclass
class Failed(Event):
    kind: ClassVar[str] = "failed"
    message: str
    user_error: bool = True
    traceback: str = ""
    field: str | None = None  # the run.yaml key a user error is about (the GUI marks it)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (Started, Step, Eval, Sample, UpdateNorms, Checkpoint, Paused, Resumed, Message,
                Download, Saving, Finished, Failed)
}

Sink = Callable[[Event], None]


def event_from_dict(data: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[data["event"]]
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def read_metrics(path: str | Path) -> list[Event]:
    """Events from a metrics.jsonl file (a torn last line after a crash is skipped)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(event_from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return out


FLUSH_S = 0.5  # step lines reach the file (not the disk) at least this often


class JsonlSink:
    """Appends each event to metrics.jsonl: fsynced at starts, pauses, checkpoints and the end,
    flushed every FLUSH_S seconds in between, so `graftlab status` and an attached window
    follow a run from its file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the run
        self._flushed = monotonic()

    def __call__(self, event: Event) -> None:
        self._fh.write(event.to_json() + "\n")
        if isinstance(event, Checkpoint | Finished | Failed | Started | Paused | Resumed):
            self.sync()
        elif monotonic() - self._flushed > FLUSH_S:  # readers (status, attach) see it soon
            self._fh.flush()
            self._flushed = monotonic()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._flushed = monotonic()

    def close(self) -> None:
        if not self._fh.closed:
            self.sync()
            self._fh.close()


@dataclass
class EventBatcher:
    """Collects events and hands them on in batches at most every `interval_s` seconds.

    Used by the GUI worker so the UI gets about ten signals a second however fast the steps
    are. Events other than steps (started, finished, failed...) flush at once.
    """

    flush_to: Callable[[list[Event]], None]
    interval_s: float = 0.1
    clock: Callable[[], float] = monotonic
    _pending: list[Event] = field(default_factory=list)
    _last: float = field(default=-1e9)

    def __call__(self, event: Event) -> None:
        self._pending.append(event)
        if not isinstance(event, Step) or self.clock() - self._last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.flush_to(batch)
        self._last = self.clock()
