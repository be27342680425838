"""A bounded run log: messages, failures and milestones of a training run.

`setMaximumBlockCount` keeps memory flat however long a run talks; old lines scroll away.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from graftlab.core.train.events import (
    Checkpoint,
    Event,
    Failed,
    Finished,
    Message,
    Paused,
    Resumed,
    Started,
)
from PySide6.QtCore import Slot
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

MAX_LINES = 5_000
_COLORS = {"warning": "#b9770e", "error": "#c0392b"}


class LogView(QPlainTextEdit):
    """Read-only log of Message and Failed events (plus start, checkpoints and the end)."""

    def __init__(self, parent: QWidget | None = None, max_lines: int = MAX_LINES) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(max_lines)
        self.setUndoRedoEnabled(False)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("Run messages appear here.")

    def add_line(self, text: str, level: str = "info") -> None:
        prefix = "" if level == "info" else f"{level}: "
        color = _COLORS.get(level)
        escaped = html.escape(prefix + text).replace("\n", "<br>")
        self.appendHtml(f'<span style="color:{color}">{escaped}</span>' if color else escaped)

    @Slot(object)
    def append_events(self, batch: Iterable[Event]) -> None:
        for ev in batch:
            if isinstance(ev, Message):
                self.add_line(ev.text, ev.level)
            elif isinstance(ev, Failed):
                self.add_line(ev.message, "error")
                if ev.traceback:
                    self.appendPlainText(ev.traceback.rstrip())
            elif isinstance(ev, Started):
                self.add_line(f"started: {ev.num_examples} examples, {ev.total_steps} steps on "
                              f"{ev.device} ({ev.precision}), {ev.trainable_params:,} trainable "
                              f"parameters; run folder {ev.run_dir}")
            elif isinstance(ev, Checkpoint):
                self.add_line(f"checkpoint at step {ev.step}: {ev.path}")
            elif isinstance(ev, Paused):
                self.add_line(f"paused at step {ev.step}")
            elif isinstance(ev, Resumed):
                self.add_line(f"resumed at step {ev.step}")
            elif isinstance(ev, Finished):
                how = "stopped early" if ev.stopped_early else "finished"
                loss = f", train loss {ev.train_loss:.4g}" if ev.train_loss is not None else ""
                saved = f"; adapter saved to {ev.adapter_dir}" if ev.adapter_dir else ""
                self.add_line(f"{how} at step {ev.step} after {ev.elapsed_s:.1f} s{loss}{saved}")
