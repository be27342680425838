"""The layer heatmap: rows are layer indices, columns the module kinds of the architecture.

Before training a cell shows whether its module gets an adapter and with which rank; during and
after training it shows the relative update size ‖ΔW‖_F / ‖W‖_F from `UpdateNorms` events (log
colour scale, colour bar on the right). Modules outside the repeated layers (embeddings, the
head) sit in a strip below the grid.

The grid is one QWidget painted in one pass: the cell colours are a rows×kinds ARGB image
computed with numpy and drawn scaled (nearest neighbour), so a 70B grid (80 × 7) refreshes in
about a millisecond and no widget exists per cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from graftlab.app.numbers import compact
from graftlab.app.plots.heatmap_grid import (
    LUT_ARGB,
    MAX_CELL,
    CellInfo,
    colour_bar,
    format_value,
    label_step,
    log_ticks,
    nice_log_range,
)
from PySide6.QtCore import QEvent, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFontMetrics,
    QHelpEvent,
    QImage,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import QToolTip, QWidget


class HeatmapWidget(QWidget):
    """Layers × kinds grid plus an outside-layers strip; click emits `module_clicked(name)`."""

    module_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setMinimumSize(320, 220)
        self.value_label = "Relative update size ‖ΔW‖ / ‖W‖"
        self.mode = "plan"  # "plan": colour = rank; "values": colour = log10(value)
        self.step: int | None = None
        self._rows, self._kinds = 0, []
        self._cells: list[CellInfo] = []
        self._index: dict[str, int] = {}  # name -> flat cell index (grid: r*cols+c; strip after)
        self._outside: list[int] = []  # cell indices in the strip, in model order
        self._strip_pos: dict[int, int] = {}  # cell index -> position in the strip
        self._col: dict[str, int] = {}
        self._slot_cell = np.zeros(0, dtype=np.int64)  # grid slot -> cell index or -1
        self._values = np.zeros(0)
        self._vrange = (-4.0, -1.0)
        self._highlight: set[int] = set()
        self._hover = -1
        self._image: QImage | None = None
        self._scaled: QPixmap | None = None
        self._geom: dict[str, object] = {}

    # ---- data -------------------------------------------------------------------------------
    def set_grid(self, rows: int, kinds: list[str], cells: Iterable[CellInfo]) -> None:
        """The modules to show; replaces everything (values, highlight)."""
        self._rows, self._kinds = rows, list(kinds)
        self._cells = list(cells)
        col = self._col = {k: i for i, k in enumerate(self._kinds)}
        self._index, self._outside = {}, []
        self._slot_cell = np.full(rows * len(self._kinds), -1, dtype=np.int64)
        for i, c in enumerate(self._cells):
            self._index[c.name] = i
            if c.layer is not None and c.kind in col and 0 <= c.layer < rows:
                self._slot_cell[c.layer * len(self._kinds) + col[c.kind]] = i
            else:
                self._outside.append(i)
        self._strip_pos = {i: j for j, i in enumerate(self._outside)}
        self._values = np.full(len(self._cells), np.nan)
        self._highlight, self._hover, self.step = set(), -1, None
        self.mode = "plan"
        self._relayout()

    def set_adapters(self, adapters: dict[str, tuple[int, float, int]]) -> None:
        """name -> (rank, alpha, params) for the modules with an adapter; others have none."""
        for i, c in enumerate(self._cells):
            c.rank, c.alpha, c.params = adapters.get(c.name, (None, None, None))
            if c.rank is None:
                self._values[i] = np.nan
        self._refresh()

    def set_values(self, values: dict[str, float], step: int | None = None) -> int:
        """Colour by `values` (name -> update size); returns how many modules were matched."""
        self._values[:] = np.nan
        hit = 0
        index = self._index
        for name, v in values.items():
            i = index.get(name)
            if i is not None:
                self._values[i] = v
                hit += 1
        self.step = step
        self.mode = "values"
        finite = self._values[np.isfinite(self._values) & (self._values > 0)]
        if finite.size:
            self._vrange = nice_log_range(float(finite.min()), float(finite.max()))
        self._refresh()
        return hit

    def clear_values(self) -> None:
        self._values[:] = np.nan
        self.step = None
        self.mode = "plan"
        self._refresh()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self._refresh()

    def has_values(self) -> bool:
        return bool(np.isfinite(self._values).any())

    def value_of(self, name: str) -> float | None:
        i = self._index.get(name)
        if i is None or not math.isfinite(self._values[i]):
            return None
        return float(self._values[i])

    def cell(self, name: str) -> CellInfo | None:
        i = self._index.get(name)
        return self._cells[i] if i is not None else None

    def names(self) -> list[str]:
        return [c.name for c in self._cells]

    def set_highlight(self, names: Iterable[str]) -> None:
        new = {self._index[n] for n in names if n in self._index}
        if new != self._highlight:
            self._highlight = new
            self.update()

    def highlighted(self) -> list[str]:
        return sorted(self._cells[i].name for i in self._highlight)

    # ---- colours ----------------------------------------------------------------------------
    def cell_argb(self) -> np.ndarray:
        """One ARGB colour per cell (what is painted), for tests and the grid image."""
        pal = self.palette()
        empty = pal.color(QPalette.ColorRole.AlternateBase).rgba()
        n = len(self._cells)
        out = np.full(n, empty, dtype=np.uint32)
        ranks = np.array([c.rank or 0 for c in self._cells], dtype=float)
        adapted = ranks > 0
        if self.mode == "values":
            v = self._values
            ok = np.isfinite(v)
            lo, hi = self._vrange
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (np.log10(np.where(ok & (v > 0), v, 10.0 ** lo)) - lo) / (hi - lo)
            idx = np.clip((t * 255).round(), 0, 255).astype(np.int64)
            out[ok] = LUT_ARGB[idx[ok]]
            out[adapted & ~ok] = QColor(150, 150, 150).rgba()  # adapted, no value yet
        elif adapted.any():
            lr = np.log2(ranks[adapted])
            span = lr.max() - lr.min()
            t = (lr - lr.min()) / span if span > 0 else np.full(lr.shape, 0.6)
            # light to dark blue: a larger rank reads as "more"
            r = (170 - 140 * t).astype(np.uint32)
            g = (200 - 110 * t).astype(np.uint32)
            b = np.full(lr.shape, 235, dtype=np.uint32) - (40 * t).astype(np.uint32)
            out[adapted] = 0xFF000000 | (r << 16) | (g << 8) | b
        return out

    def _refresh(self) -> None:
        colours = self.cell_argb()
        cols = len(self._kinds)
        slots = self._slot_cell
        grid = np.full(slots.shape, self.palette().color(QPalette.ColorRole.Window).rgba(),
                       dtype=np.uint32)
        present = slots >= 0
        grid[present] = colours[slots[present]]
        self._cell_colours = colours
        if self._rows and cols:
            buf = np.ascontiguousarray(grid.reshape(self._rows, cols))
            self._image = QImage(buf.data, cols, self._rows, cols * 4,
                                 QImage.Format.Format_ARGB32).copy()
        else:
            self._image = None
        self._scaled = None
        self.update()

    def _grid_pixmap(self, size: QSize) -> QPixmap | None:
        """The cell image at its painted size, scaled once per refresh (not per paint)."""
        if self._image is None:
            return None
        if self._scaled is None or self._scaled.size() != size:
            self._scaled = QPixmap.fromImage(self._image.scaled(
                size, Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.FastTransformation))
        return self._scaled

    # ---- geometry ---------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:
        self._relayout()
        super().resizeEvent(event)

    def _relayout(self) -> None:
        fm = QFontMetrics(self.font())
        cols, rows = len(self._kinds), self._rows
        w, h = self.width(), self.height()
        left = fm.horizontalAdvance(f"{max(rows - 1, 0)}") + 14
        legend_w = fm.horizontalAdvance("1e-10 ") + 34
        strip_n = len(self._outside)
        avail_w = max(w - left - legend_w - 8, 40)
        cw = max(4, min(MAX_CELL.width(), avail_w // max(cols, 1)))
        widest = max((fm.horizontalAdvance(k) for k in self._kinds), default=0)
        rotate = widest > cw - 6
        top = (min(widest, 150) + 10) if rotate else fm.height() + 8
        top += fm.height() + 4  # title line
        strip_h = (min(MAX_CELL.height(), 24) + 2 * fm.height() + 14) if strip_n else 0
        avail_h = max(h - top - strip_h - 8, 20)
        ch = max(2, min(MAX_CELL.height(), avail_h // max(rows, 1)))
        grid = QRect(left, top, cw * cols, ch * rows)
        label_w = max((fm.horizontalAdvance(self._cells[i].name.rpartition(".")[2])
                       for i in self._outside), default=0) + 10
        strip_cw = max(4, min(max(cw, label_w), (w - left - legend_w) // max(strip_n, 1)))
        strip = QRect(left, grid.bottom() + fm.height() + 12, strip_cw * strip_n,
                      min(MAX_CELL.height(), 24))
        legend = QRect(grid.right() + 18, top, 14, max(min(grid.height(), 260), 60))
        self._geom = {"grid": grid, "cw": cw, "ch": ch, "rotate": rotate, "strip": strip,
                      "strip_cw": strip_cw, "legend": legend, "title_y": fm.ascent() + 2}
        if self._image is None or self._image.width() != cols:
            self._refresh()
        self.update()

    def cell_rect(self, name: str) -> QRect | None:
        """Where a module's cell is painted (widget coordinates)."""
        i = self._index.get(name)
        return self._rect_of(i) if i is not None else None

    def _rect_of(self, i: int) -> QRect | None:
        if not self._geom:
            return None
        j = self._strip_pos.get(i)
        if j is not None:
            s: QRect = self._geom["strip"]  # type: ignore[assignment]
            scw: int = self._geom["strip_cw"]  # type: ignore[assignment]
            return QRect(s.left() + j * scw, s.top(), scw, s.height())
        c = self._cells[i]
        g: QRect = self._geom["grid"]  # type: ignore[assignment]
        cw, ch = self._geom["cw"], self._geom["ch"]
        col = self._col[c.kind]
        return QRect(g.left() + col * cw, g.top() + (c.layer or 0) * ch, cw, ch)  # type: ignore

    def cell_at(self, pos: QPoint) -> str | None:
        i = self._cell_index_at(pos)
        return self._cells[i].name if i >= 0 else None

    def _cell_index_at(self, pos: QPoint) -> int:
        if not self._geom:
            return -1
        g: QRect = self._geom["grid"]  # type: ignore[assignment]
        if g.contains(pos):
            col = (pos.x() - g.left()) // self._geom["cw"]  # type: ignore[operator]
            row = (pos.y() - g.top()) // self._geom["ch"]  # type: ignore[operator]
            if 0 <= row < self._rows and 0 <= col < len(self._kinds):
                return int(self._slot_cell[row * len(self._kinds) + col])
            return -1
        s: QRect = self._geom["strip"]  # type: ignore[assignment]
        if s.contains(pos):
            j = (pos.x() - s.left()) // self._geom["strip_cw"]  # type: ignore[operator]
            return self._outside[j] if 0 <= j < len(self._outside) else -1
        return -1

    # ---- painting ---------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.Text)
        fm = p.fontMetrics()
        p.fillRect(self.rect(), pal.color(QPalette.ColorRole.Base))
        if not self._cells or not self._geom:
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No modules to show")
            return
        g: QRect = self._geom["grid"]  # type: ignore[assignment]
        cw: int = self._geom["cw"]  # type: ignore[assignment]
        ch: int = self._geom["ch"]  # type: ignore[assignment]
        p.setPen(text)
        title = ("Rank per module (plan)" if self.mode == "plan" else self.value_label
                 + (f" at step {self.step}" if self.step is not None else "") + " (log colour)")
        p.drawText(4, int(self._geom["title_y"]), title)  # type: ignore[arg-type]
        pixmap = self._grid_pixmap(g.size())
        if pixmap is not None:
            p.drawPixmap(g.topLeft(), pixmap)
            p.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
            p.drawRect(g.adjusted(-1, -1, 0, 0))
        if cw >= 10 and ch >= 8:  # cell separators only where cells are big enough to see them
            p.setPen(QPen(pal.color(QPalette.ColorRole.Base), 1))
            for c in range(len(self._kinds) + 1):
                p.drawLine(g.left() + c * cw, g.top(), g.left() + c * cw, g.bottom() + 1)
            for r in range(self._rows + 1):
                p.drawLine(g.left(), g.top() + r * ch, g.right() + 1, g.top() + r * ch)
        self._paint_headers(p, fm, g, cw, ch, text)
        self._paint_strip(p, fm, text)
        if ch >= fm.height() and cw >= 24:
            self._paint_cell_text(p, fm)
        self._paint_legend(p, fm, text)
        hl = QPen(pal.color(QPalette.ColorRole.Highlight), 2)
        p.setBrush(Qt.BrushStyle.NoBrush)
        for i in self._highlight:
            r = self._rect_of(i)
            if r is not None:
                p.setPen(hl)
                p.drawRect(r.adjusted(1, 1, -1, -1))
        if self._hover >= 0:
            r = self._rect_of(self._hover)
            if r is not None:
                p.setPen(QPen(text, 1))
                p.drawRect(r.adjusted(0, 0, -1, -1))

    def _paint_headers(self, p: QPainter, fm, g: QRect, cw: int, ch: int, text: QColor) -> None:
        p.setPen(text)
        rotate = self._geom["rotate"]
        for c, kind in enumerate(self._kinds):
            x = g.left() + c * cw
            if rotate:
                label = fm.elidedText(kind, Qt.TextElideMode.ElideLeft, 150)
                p.save()
                p.translate(x + cw / 2 + fm.ascent() / 2 - 1, g.top() - 6)
                p.rotate(-90)
                p.drawText(0, 0, label)
                p.restore()
            else:
                p.drawText(QRect(x, g.top() - fm.height() - 6, cw, fm.height()),
                           Qt.AlignmentFlag.AlignCenter, kind)
        step = label_step(self._rows, ch, fm.height())
        for r in range(0, self._rows, step):
            p.drawText(QRect(0, g.top() + r * ch + ch // 2 - fm.height() // 2, g.left() - 6,
                             fm.height()),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, str(r))

    def _paint_strip(self, p: QPainter, fm, text: QColor) -> None:
        if not self._outside:
            return
        s: QRect = self._geom["strip"]  # type: ignore[assignment]
        p.setPen(text)
        p.drawText(s.left(), s.top() - fm.descent() - 3, "Outside the repeated layers")
        sep = QPen(self.palette().color(QPalette.ColorRole.Base), 1)
        for i in self._outside:
            r = self._rect_of(i)
            assert r is not None
            p.fillRect(r, QColor.fromRgba(int(self._cell_colours[i])))
            p.setPen(sep)
            p.drawRect(r.adjusted(0, 0, -1, -1))
            p.setPen(QPen(self.palette().color(QPalette.ColorRole.Mid), 1))
            p.drawRect(r.adjusted(0, 0, -1, -1) if r.width() < 10 else r.adjusted(1, 1, -2, -2))
            p.setPen(text)
            label = self._cells[i].name.rpartition(".")[2]
            p.drawText(QRect(r.left(), r.bottom() + 2, r.width(), fm.height()),
                       Qt.AlignmentFlag.AlignHCenter,
                       fm.elidedText(label, Qt.TextElideMode.ElideMiddle, r.width() - 2))

    def _paint_cell_text(self, p: QPainter, fm) -> None:
        for i, c in enumerate(self._cells):
            if c.rank is None and self.mode == "plan":
                continue
            t = (str(c.rank) if self.mode == "plan" else format_value(self.value_of(c.name))
                 if c.rank is not None or self.value_of(c.name) is not None else "")
            r = self._rect_of(i)
            if not t or r is None or fm.horizontalAdvance(t) > r.width() - 4:
                continue
            colour = QColor.fromRgba(int(self._cell_colours[i]))
            luma = 0.299 * colour.red() + 0.587 * colour.green() + 0.114 * colour.blue()
            p.setPen(Qt.GlobalColor.black if luma > 140 else Qt.GlobalColor.white)
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, t)

    def _paint_legend(self, p: QPainter, fm, text: QColor) -> None:
        lg: QRect = self._geom["legend"]  # type: ignore[assignment]
        p.setPen(text)
        if self.mode == "values":
            p.drawImage(lg.topLeft(), colour_bar(lg.size()))
            lo, hi = self._vrange
            last_y = 1e9
            for v in log_ticks(lo, hi):  # bottom to top; skip labels that would overlap
                y = lg.bottom() - (math.log10(v) - lo) / (hi - lo) * lg.height()
                if last_y - y < fm.height():
                    continue
                last_y = y
                p.drawLine(lg.right(), int(y), lg.right() + 3, int(y))
                p.drawText(lg.right() + 5, int(y + fm.ascent() / 2 - 1), f"{v:g}")
            p.drawText(lg.left(), lg.bottom() + fm.height() + 2, "log")
            return
        ranks = sorted({c.rank for c in self._cells if c.rank})
        colours = {c.rank: self._cell_colours[i] for i, c in enumerate(self._cells) if c.rank}
        entries = [(f"r {r}", colours[r]) for r in ranks[:12]]
        entries.append(("none", self.palette().color(QPalette.ColorRole.AlternateBase).rgba()))
        y = lg.top()
        for label, argb in entries:
            p.fillRect(QRect(lg.left(), y, 12, 12), QColor.fromRgba(int(argb)))
            p.setPen(text)
            p.drawRect(QRect(lg.left(), y, 12, 12))
            p.drawText(lg.left() + 17, y + 11, label)
            y += max(16, fm.height() + 2)

    # ---- interaction ------------------------------------------------------------------------
    def tooltip_text(self, name: str) -> str:
        c = self.cell(name)
        if c is None:
            return ""
        lines = [name]
        v = self.value_of(name)
        if c.rank is None and v is None:
            lines.append("no adapter")
        elif c.rank is not None:
            lines.append(f"rank {c.rank} · alpha {c.alpha:g}")
            if c.params is not None:
                lines.append(f"{c.params:,} parameters ({compact(c.params)})")
        if v is not None:
            lines.append(f"{self.value_label}: {format_value(v)}"
                         + (f" (step {self.step})" if self.step is not None else ""))
        return "\n".join(lines)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            assert isinstance(event, QHelpEvent)
            name = self.cell_at(event.pos())
            if name:
                QToolTip.showText(event.globalPos(), self.tooltip_text(name), self)
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().event(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        i = self._cell_index_at(event.position().toPoint())
        if i != self._hover:
            self._hover = i
            self.update()
        super().mouseMoveEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self._hover = -1
        self.update()
        super().leaveEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            name = self.cell_at(event.position().toPoint())
            if name:
                self.set_highlight([name])
                self.module_clicked.emit(name)
                return
        super().mousePressEvent(event)
