"""Pieces of the Try tab: the prompt box, the decoding options, an output column and the
label-probability bars of a classifier."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

ENTER_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter)


def is_submit(event: QKeyEvent) -> bool:
    """Ctrl+Enter (Cmd+Enter on macOS): generate."""
    return (event.key() in ENTER_KEYS
            and bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier))


class PromptEdit(QPlainTextEdit):
    """A text box that leaves Ctrl+Enter to the Try tab instead of inserting a line."""

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if is_submit(event) or event.key() == Qt.Key.Key_Escape:
            event.ignore()  # the parent (the Try tab) generates or stops
            return
        super().keyPressEvent(event)


class DecodeForm(QGroupBox):
    """Greedy by default; temperature, top-p and seed apply when Sample is ticked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Decoding", parent)
        self.sample_check = QCheckBox("Sample (off: greedy, the same answer every time)")
        self.temperature = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=5.0, value=0.7,
                                          singleStep=0.05)
        self.top_p = QDoubleSpinBox(decimals=2, minimum=0.01, maximum=1.0, value=0.95,
                                    singleStep=0.05)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1, value=0)
        self.seed.setSpecialValueText("random")
        self.seed.setToolTip("The same seed repeats a sampled answer; -1 draws a new one")
        self.max_new_tokens = QSpinBox(minimum=1, maximum=32768, value=64)
        form = QFormLayout(self)
        form.addRow(self.sample_check)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Seed", self.seed)
        self.sample_check.toggled.connect(self._on_sample_toggled)
        self._on_sample_toggled(False)

    def _on_sample_toggled(self, on: bool) -> None:
        for w in (self.temperature, self.top_p, self.seed):
            w.setEnabled(on)

    def options(self) -> dict[str, Any]:
        """DecodeOptions fields (graftlab.core.adapter.playground)."""
        out: dict[str, Any] = {"max_new_tokens": self.max_new_tokens.value()}
        if self.sample_check.isChecked():
            out.update(temperature=self.temperature.value(), top_p=self.top_p.value(),
                       seed=None if self.seed.value() < 0 else self.seed.value())
        return out


class ProbabilityBars(QWidget):
    """One bar per label: name, probability bar, percentage."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._grid = QGridLayout(self)
        self._grid.setColumnStretch(1, 1)
        self.bars: dict[str, QProgressBar] = {}

    def show_probs(self, probs: list[tuple[str, float]]) -> None:
        while self._grid.count():
            item = self._grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.bars = {}
        for row, (label, p) in enumerate(probs):
            bar = QProgressBar(maximum=1000, value=round(p * 1000), textVisible=True)
            bar.setFormat(f"{p:.1%}")
            self._grid.addWidget(QLabel(str(label)), row, 0)
            self._grid.addWidget(bar, row, 1)
            self.bars[str(label)] = bar
        self._grid.setRowStretch(len(probs), 1)

    def values(self) -> dict[str, float]:
        return {k: b.value() / 1000 for k, b in self.bars.items()}


class OutputColumn(QWidget):
    """One side (base or an adapter): a heading, then streamed text or label bars."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.side: str | None = None
        self.heading = QLabel()
        self.heading.setStyleSheet("font-weight: bold;")
        self.text = QPlainTextEdit(readOnly=True)
        self.text.setPlaceholderText("The answer streams here.")
        self.bars = ProbabilityBars()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.text)
        self.stack.addWidget(self.bars)
        self.footer = QLabel()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.heading)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.footer)

    def set_side(self, side: str | None, heading: str) -> None:
        self.side = side
        self.heading.setText(heading)
        self.setVisible(side is not None)

    def set_classifier(self, on: bool) -> None:
        self.stack.setCurrentWidget(self.bars if on else self.text)

    def clear(self) -> None:
        self.text.clear()
        self.footer.clear()

    def append(self, piece: str) -> None:
        cursor = self.text.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(piece)
        self.text.setTextCursor(cursor)

    def answer(self) -> str:
        return self.text.toPlainText()

