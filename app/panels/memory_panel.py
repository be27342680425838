"""Before Start: the run's plan (graftlab.core.train.preflight, what `graftlab plan` prints):
the peak-memory estimate against the device, and the export compatibility findings, plus
"Copy plan" for the text.

Both are recomputed a moment after the selection, batch size, max length, checkpointing,
precision or device change (debounced: a burst of edits costs one estimate). The estimate is
shape arithmetic over the module tree, a few milliseconds even for a 70B tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graftlab.app.numbers import size_bytes as human_bytes
from PySide6.QtCore import QRectF, QSize, Qt, Slot
from PySide6.QtGui import QAction, QColor, QKeySequence, QPainter, QPalette, QPen, QShowEvent
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt.utils import qdebounced

PARTS = (("weights", "Base weights", "#7f8c9d"), ("adapter", "Adapter", "#3d7cc9"),
         ("gradients", "Gradients", "#16a0a0"), ("optimizer", "Optimizer (AdamW)", "#8e44ad"),
         ("activations", "Activations", "#e8711a"), ("overhead", "Runtime overhead", "#b0b0b0"))
VERDICT_COLOURS = {"fits": "#2e9e4f", "tight": "#d68910", "will not fit": "#c0392b"}
DEBOUNCE_MS = 200


@dataclass
class MemoryInputs:
    """What the estimate needs, gathered by the main window at refresh time."""

    tree: Any
    plan: Any
    training: Any  # graftlab.core.config.TrainingConfig
    max_length: int
    device: str = "cpu"
    """The run's setting (auto, cpu, cuda), decided against `accel` as the session does."""
    config_path: Path | None = None
    accel: Any = None
    """graftlab.core.train.device.Accelerator from the training panel's probe (None: a CPU)."""
    run: Any = None
    """The run's settings (graftlab.core.config.RunConfig) for the plan: data and training."""


class StackedBar(QWidget):
    """One horizontal bar: parts stacked left to right against a capacity marker."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.parts: list[tuple[int, str]] = []
        self.capacity = 0
        self.setMinimumHeight(22)

    def sizeHint(self) -> QSize:
        return QSize(300, 22)

    def set_parts(self, parts: list[tuple[int, str]], capacity: int) -> None:
        self.parts, self.capacity = parts, capacity
        self.update()

    def paintEvent(self, event: Any) -> None:
        p = QPainter(self)
        pal = self.palette()
        r = QRectF(self.rect().adjusted(0, 2, -1, -3))
        p.fillRect(r, pal.color(QPalette.ColorRole.AlternateBase))
        total = sum(n for n, _ in self.parts)
        scale = max(total, self.capacity, 1)
        x = r.left()
        for n, colour in self.parts:
            w = r.width() * n / scale
            p.fillRect(QRectF(x, r.top(), w, r.height()), QColor(colour))
            x += w
        p.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
        p.drawRect(r)
        if self.capacity:  # the device's free memory
            cx = r.left() + r.width() * self.capacity / scale
            p.setPen(QPen(pal.color(QPalette.ColorRole.Text), 2))
            p.drawLine(int(cx), int(r.top()) - 2, int(cx), int(r.bottom()) + 2)


class MemoryPanel(QWidget):
    """Memory estimate with a fits / tight / will-not-fit verdict, and compatibility warnings."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._inputs: Callable[[], MemoryInputs | None] | None = None
        self._config_cache: tuple[Path | None, Any] = (None, None)
        self.estimate: Any = None
        self.plan: Any = None  # graftlab.core.train.preflight.RunPlan
        self.issues: list[Any] = []

        memory_box = QGroupBox("Memory estimate")
        self.verdict_label = QLabel("–")
        font = self.verdict_label.font()
        font.setBold(True)
        self.verdict_label.setFont(font)
        self.verdict_label.setWordWrap(True)
        self.bar = StackedBar()
        self.bar.setToolTip("Peak memory by part; the black mark is the device's free memory")
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(1)
        self.part_labels: dict[str, QLabel] = {}
        for i, (key, label, colour) in enumerate(PARTS):
            swatch = QLabel("■")
            swatch.setStyleSheet(f"color: {colour};")
            value = QLabel("–")
            value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.part_labels[key] = value
            row, col = divmod(i, 2)
            grid.addWidget(swatch, row, col * 3)
            grid.addWidget(QLabel(label), row, col * 3 + 1)
            grid.addWidget(value, row, col * 3 + 2)
        grid.setColumnStretch(2, 1)
        grid.setColumnStretch(5, 1)
        self.notes_label = QLabel("")
        self.notes_label.setWordWrap(True)
        self.notes_label.setStyleSheet("color: palette(placeholder-text);")
        ml = QVBoxLayout(memory_box)
        ml.addWidget(self.verdict_label)
        ml.addWidget(self.bar)
        ml.addLayout(grid)
        ml.addWidget(self.notes_label)

        compat_box = QGroupBox("Export compatibility of this plan")
        self.compat_label = QLabel("–")
        self.compat_label.setWordWrap(True)
        self.compat_label.setTextFormat(Qt.TextFormat.RichText)
        QVBoxLayout(compat_box).addWidget(self.compat_label)

        self.copy_button = QPushButton("Copy plan")
        self.copy_button.setToolTip("Copy this pre-flight as `graftlab plan` prints it "
                                    "(Ctrl+Shift+P)")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self.copy_plan)
        self.copy_action = QAction("Copy plan", self)
        self.copy_action.setShortcut(QKeySequence("Ctrl+Shift+P"))
        self.copy_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.copy_action.triggered.connect(self.copy_plan)
        self.addAction(self.copy_action)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.copy_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(memory_box)
        layout.addWidget(compat_box)
        layout.addLayout(row)

    # ---- inputs -----------------------------------------------------------------------------
    def set_inputs(self, provider: Callable[[], MemoryInputs | None]) -> None:
        """`provider()` gathers the current inputs (None: no model or nothing ticked)."""
        self._inputs = provider
        self.schedule()

    @qdebounced(timeout=DEBOUNCE_MS)
    def schedule(self, *_args: Any) -> None:  # any change signal, whatever it carries
        """Recompute once the changes have paused for DEBOUNCE_MS (a burst costs one)."""
        self.refresh()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.schedule()  # the device probe may have finished since the last refresh

    def _model_config(self, path: Path | None) -> Any:
        if path != self._config_cache[0]:
            cfg = None
            if path is not None:
                file = path if path.is_file() else path / "config.json"
                try:
                    cfg = json.loads(file.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    cfg = None
            self._config_cache = (path, cfg)
        return self._config_cache[1]

    # ---- compute ----------------------------------------------------------------------------
    @Slot()
    def refresh(self) -> None:
        self.schedule.cancel()
        inputs = self._inputs() if self._inputs is not None else None
        if inputs is None or inputs.tree is None or inputs.plan is None:
            self.estimate, self.issues, self.plan = None, [], None
            self.copy_button.setEnabled(False)
            self.verdict_label.setText("Open a model and tick modules to see the estimate.")
            self.verdict_label.setStyleSheet("")
            self.bar.set_parts([], 0)
            for label in self.part_labels.values():
                label.setText("–")
            self.notes_label.setText("")
            self.compat_label.setText("–")
            return
        from graftlab.core.config import RunConfig
        from graftlab.core.errors import UserError
        from graftlab.core.train.device import CPU_ONLY
        from graftlab.core.train.preflight import assemble_plan

        run = inputs.run if inputs.run is not None else RunConfig(training=inputs.training)
        run.training.device = inputs.device
        run.data.max_length = max(inputs.max_length, 1)
        try:
            self.plan = assemble_plan(run, inputs.tree, inputs.plan, inputs.accel or CPU_ONLY,
                                      None, self._model_config(inputs.config_path))
        except (UserError, ValueError, ZeroDivisionError) as exc:
            self.estimate, self.plan = None, None
            self.verdict_label.setText(f"No estimate: {exc}")
            self.verdict_label.setStyleSheet("")
            self.copy_button.setEnabled(False)
            return
        self.show_estimate(self.plan.memory, self.plan.fit_warning)
        self.show_issues(self.plan.compatibility)
        self.copy_button.setEnabled(True)

    def plan_text(self) -> str:
        """The plan as `graftlab plan` prints it ("" before there is one)."""
        return self.plan.to_text() if self.plan is not None else ""

    @Slot()
    def copy_plan(self) -> None:
        """Copy the plan's text to the clipboard (the "Copy plan" button, Ctrl+Shift+P)."""
        from PySide6.QtGui import QGuiApplication

        if self.plan is not None:
            QGuiApplication.clipboard().setText(self.plan_text())

    def show_estimate(self, est: Any, fit_warning: str | None = None) -> None:
        self.estimate = est
        where = "GPU" if est.device == "cuda" else "system RAM"
        self.verdict_label.setText(
            f"{est.verdict.capitalize()}: about {human_bytes(est.total)} at peak, "
            f"{human_bytes(est.device_free)} free of {human_bytes(est.device_total)} {where}"
            + (f". {fit_warning[0].upper()}{fit_warning[1:]}" if fit_warning else ""))
        self.verdict_label.setStyleSheet(f"color: {VERDICT_COLOURS.get(est.verdict, '')};")
        self.verdict_label.setToolTip("fits: below 80% of free memory; tight: below 100%; "
                                      "will not fit: above")
        self.bar.set_parts([(est.breakdown.get(k, 0), c) for k, _l, c in PARTS], est.device_free)
        for key, label in self.part_labels.items():
            label.setText(human_bytes(est.breakdown.get(key, 0)))
        self.notes_label.setText(" · ".join(est.notes))

    def verdict(self) -> str | None:
        return self.estimate.verdict if self.estimate is not None else None

    def show_issues(self, issues: list[Any]) -> None:
        self.issues = list(issues)
        if not issues:
            self.compat_label.setText("No warnings: vLLM, llama.cpp and PEFT can load an "
                                      "adapter trained with this plan as it is.")
            self.compat_label.setToolTip("")
            return
        lines = []
        for i in issues:
            colour = VERDICT_COLOURS["will not fit"] if i.severity == "error" else \
                VERDICT_COLOURS["tight"]
            lines.append(f"<p style='margin:0 0 4px 0'><b style='color:{colour}'>"
                         f"{'✖' if i.severity == 'error' else '⚠'} {_html(i.target)}</b> "
                         f"{_html(i.message)}<br><small>Source: {_html(i.source)}</small></p>")
        self.compat_label.setText("".join(lines))
        self.compat_label.setToolTip("\n\n".join(f"{i.rule}: {i.source}" for i in issues))


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
