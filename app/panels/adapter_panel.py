"""Adapter settings (rank, alpha, dropout, variant) and the live trainable-parameter counts:
total, share of the base model, and a bar chart per layer stacked by module kind.

The numbers shown are the core's (graftlab.core.adapter.plan.AdapterPlan), never recomputed here.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from graftlab.app.errors import ErrorLabel
from graftlab.app.numbers import compact, exact, percent
from graftlab.core.adapter.plan import AdapterPlan
from graftlab.core.config import check_lora_values
from graftlab.core.errors import UserError
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

VARIANTS = (("lora", "LoRA"), ("rslora", "rsLoRA (rank-stabilised scale α/√r)"),
            ("dora", "DoRA (weight-decomposed)"))


def style_plot(plot: pg.PlotWidget) -> None:
    """Follow the system palette (light or dark) instead of pyqtgraph's black background."""
    pal = plot.palette()
    plot.setBackground(pal.color(QPalette.ColorRole.Base))
    fg = pal.color(QPalette.ColorRole.Text)
    for name in ("left", "bottom"):
        axis = plot.getPlotItem().getAxis(name)
        axis.setPen(fg)
        axis.setTextPen(fg)


def static_plot(bottom: str, left: str) -> pg.PlotWidget:
    """A plot that shows, not explores: palette colours, no menu, no mouse zoom or buttons."""
    plot = pg.PlotWidget()
    style_plot(plot)
    item = plot.getPlotItem()
    item.setMenuEnabled(False)
    item.setMouseEnabled(x=False, y=False)
    item.hideButtons()
    item.setLabel("bottom", bottom)
    item.setLabel("left", left)
    return plot


class AdapterPanel(QWidget):
    settings_changed = Signal()
    """Valid rank/alpha/dropout/variant were entered (invalid ones show an error instead)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rank_spin = QSpinBox()
        self.rank_spin.setRange(0, 1_000_000)  # 0 can be typed, and the core explains why not
        self.rank_spin.setValue(8)
        self.rank_spin.setToolTip("LoRA rank r: the inner dimension of B·A (8 or 16 are common)")
        self.alpha_spin = QDoubleSpinBox()
        self.alpha_spin.setRange(0.0, 1e6)
        self.alpha_spin.setDecimals(2)
        self.alpha_spin.setValue(16.0)
        self.alpha_spin.setToolTip("Scale numerator: the update is (alpha/r)·B·A")
        self.dropout_spin = QDoubleSpinBox()
        self.dropout_spin.setRange(0.0, 1.0)
        self.dropout_spin.setSingleStep(0.05)
        self.dropout_spin.setDecimals(3)
        self.dropout_spin.setToolTip("Dropout on the adapter input, in [0, 1)")
        self.variant_combo = QComboBox()
        for key, label in VARIANTS:
            self.variant_combo.addItem(label, key)
        self.error_label = ErrorLabel()
        for w in (self.rank_spin, self.alpha_spin, self.dropout_spin):
            w.valueChanged.connect(self._on_edited)
            w.setKeyboardTracking(False)  # one update per committed value, not per keystroke
        self.variant_combo.currentIndexChanged.connect(self._on_edited)

        self.total_label = QLabel("–")
        big = QFont(self.total_label.font())
        big.setPointSizeF(big.pointSizeF() * 1.6)
        big.setBold(True)
        self.total_label.setFont(big)
        self.total_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.share_label = QLabel("")
        self.share_label.setWordWrap(True)
        self.warnings_label = QLabel("")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.hide()
        self.shown_trainable: int | None = None

        self.plot = static_plot("layer", "trainable params")
        item = self.plot.getPlotItem()
        item.showGrid(y=True, alpha=0.3)
        self.legend = item.addLegend(offset=(-10, 10), colCount=4)
        self.plot.setMinimumHeight(180)
        self._bars: list[pg.BarGraphItem] = []
        self._bar_kinds: list[str] = []
        self._ticks: list | None = None

        form = QFormLayout()
        form.addRow("Rank", self.rank_spin)
        form.addRow("Alpha", self.alpha_spin)
        form.addRow("Dropout", self.dropout_spin)
        form.addRow("Variant", self.variant_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addSpacing(6)
        layout.addWidget(QLabel("Trainable parameters"))
        layout.addWidget(self.total_label)
        layout.addWidget(self.share_label)
        layout.addWidget(self.warnings_label)
        layout.addWidget(self.plot, 1)
        self._last_valid = self.values()

    # ---- values ---------------------------------------------------------------------------
    def values(self) -> tuple[int, float, float, str]:
        return (self.rank_spin.value(), self.alpha_spin.value(), self.dropout_spin.value(),
                str(self.variant_combo.currentData()))

    def valid_values(self) -> tuple[int, float, float, str]:
        """The last values that passed the core's checks (what the tree and plan use)."""
        return self._last_valid

    def set_values(self, rank: int, alpha: float, dropout: float, variant: str) -> None:
        widgets = (self.rank_spin, self.alpha_spin, self.dropout_spin, self.variant_combo)
        for w in widgets:
            w.blockSignals(True)
        self.rank_spin.setValue(rank)
        self.alpha_spin.setValue(alpha)
        self.dropout_spin.setValue(dropout)
        self.variant_combo.setCurrentIndex(max(self.variant_combo.findData(variant), 0))
        for w in widgets:
            w.blockSignals(False)
        self._on_edited()

    def validate(self) -> None:
        rank, alpha, dropout, _ = self.values()
        check_lora_values(rank, alpha, dropout, "adapter settings", "adapter.")

    @Slot()
    def _on_edited(self, *_: object) -> None:
        try:
            self.validate()
        except UserError as exc:
            self.error_label.show_message(exc.message)
            return
        self.error_label.clear_message()
        if self.values() != self._last_valid:
            self._last_valid = self.values()
            self.settings_changed.emit()

    def show_field_error(self, message: str) -> None:
        self.error_label.show_message(message)

    # ---- counts ---------------------------------------------------------------------------
    def show_plan(self, plan: AdapterPlan | None, base_params: int, kinds: list[str],
                  num_layers: int, error: str | None = None) -> None:
        """Show the core's plan; None (nothing ticked or an error) shows zero."""
        trainable = plan.trainable_params if plan is not None else 0
        self.shown_trainable = trainable
        self.total_label.setText(exact(trainable))
        if plan is None:
            self.share_label.setText(error or "No modules ticked: tick modules in the layer "
                                              "tree or choose a preset.")
            self.warnings_label.hide()
            self._draw({}, kinds, num_layers)
            return
        extra = ""
        if plan.saved_modules:
            extra = f", plus the classification head trained in full " \
                    f"({exact(sum(plan.saved_modules.values()))})"
        self.share_label.setText(
            f"{percent(plan.percent)} of {compact(base_params)} base parameters · "
            f"{len(plan.modules):,} modules with adapters{extra}")
        if plan.warnings:
            shown = plan.warnings[:3] + ([f"… and {len(plan.warnings) - 3} more"]
                                         if len(plan.warnings) > 3 else [])
            self.warnings_label.setText("⚠ " + "\n⚠ ".join(shown))
            self.warnings_label.show()
        else:
            self.warnings_label.hide()
        self._draw(plan.by_layer(), kinds, num_layers)

    def _draw(self, by_layer: dict[int | None, dict[str, int]], kinds: list[str],
              num_layers: int) -> None:
        """Stacked bars, one BarGraphItem per kind, updated in place (a few ms for 80 layers)."""
        item = self.plot.getPlotItem()
        layers = sorted(k for k in by_layer if k is not None)
        other = None in by_layer
        keys: list[int | None] = [*layers, *([None] if other else [])]
        xs = np.array([*layers, *([-1] if other else [])], dtype=float)
        all_kinds = list(kinds) + sorted({k for v in by_layer.values() for k in v} - set(kinds))
        shown = all_kinds  # fixed per model: no legend rebuild while ticking
        if shown != self._bar_kinds:  # rebuild items and legend only when the kinds change
            for bar in self._bars:
                item.removeItem(bar)
            self.legend.clear()
            self._bars = []
            for kind in shown:
                i = all_kinds.index(kind)
                color = pg.intColor(i, hues=max(len(all_kinds), 7), values=1, maxValue=220)
                bar = pg.BarGraphItem(x=[0], height=[0], width=0.8, brush=color,
                                      pen=pg.mkPen(None))
                item.addItem(bar)
                self.legend.addItem(bar, kind)
                self._bars.append(bar)
            self._bar_kinds = shown
        bottom = np.zeros(len(xs))
        width = 0.8 if len(xs) < 40 else 0.9
        for bar, kind in zip(self._bars, shown, strict=True):
            heights = np.array([by_layer[k].get(kind, 0) for k in keys], dtype=float)
            bar.setOpts(x=xs, height=heights, y0=bottom.copy(), width=width)
            bottom += heights
        ticks = [[(x, str(x)) for x in _nice_ticks(list(range(max(num_layers, 1))))]]
        if other:
            ticks[0].insert(0, (-1, "other"))
        if ticks != self._ticks:
            item.getAxis("bottom").setTicks(ticks)
            self._ticks = ticks
        lo = -1.5 if other else -0.5
        item.setXRange(lo, max(num_layers, 1) - 0.5, padding=0.02)
        top = float(bottom.max()) * 1.25 if bottom.size and bottom.max() > 0 else 1.0
        item.setYRange(0, top, padding=0)


def _nice_ticks(layers: list[int]) -> list[int]:
    if not layers:
        return []
    step = max(1, len(range(layers[0], layers[-1] + 1)) // 10)
    return list(range(layers[0], layers[-1] + 1, step))
