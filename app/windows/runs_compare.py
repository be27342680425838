"""The runs library's comparison of the selected runs: their curves overlaid (RunsOverlay) and
their run.yaml files side by side (ConfigDiffView).

Curves are read only here, only for selected runs, off the GUI thread
(graftlab.core.train.run_index.read_curves reads every line of metrics.jsonl), and kept per run
folder until its metrics.jsonl changes (size or modification time). A selection made while a
read is in flight is shown once that read returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from graftlab.app.plots.runs_overlay import OverlayRun, RunsOverlay
from graftlab.app.run.background import BackgroundCall
from graftlab.app.windows.runs_diff import ConfigDiffView
from graftlab.core.train.run_diff import read_run_yaml
from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QColor

MAX_OVERLAY = 12  # more selected runs: the first twelve are overlaid (and diffed)
Curves = dict[str, tuple[np.ndarray, np.ndarray]]


def _stamp(run_dir: str) -> tuple[int, int]:
    with contextlib.suppress(OSError):
        st = (Path(run_dir) / "metrics.jsonl").stat()
        return st.st_size, st.st_mtime_ns
    return -1, -1


def load_curves(run_dirs: Sequence[str]) -> dict[str, tuple[tuple[int, int], Curves]]:
    """{run_dir: (stamp, {"loss": (steps, values), "eval_loss": ...})}; background thread."""
    from graftlab.core.train.run_index import read_curves

    out = {}
    for run in run_dirs:
        stamp = _stamp(run)
        curves = read_curves(run)
        out[run] = (stamp, {k: (np.asarray(x, dtype=float), np.asarray(y, dtype=float))
                            for k, (x, y) in curves.items()})
    return out


class RunsCompare(QObject):
    """Feeds the overlay and the diff from the selected runs (`show`)."""

    shown = Signal()  # the overlay and the diff show the latest selection

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.overlay = RunsOverlay()
        self.diff = ConfigDiffView()
        self._cache: dict[str, tuple[tuple[int, int], Curves]] = {}
        self._wanted: list[tuple[str, str, QColor]] = []  # (run_dir, name, colour)
        self._call = BackgroundCall(self)
        self._call.succeeded.connect(self._on_loaded)
        self._call.failed.connect(self._on_load_failed)

    def is_loading(self) -> bool:
        return self._call.is_running()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        return self._call.wait(timeout_ms)

    def show(self, runs: Sequence[tuple[str, str, QColor]]) -> None:
        """Compare `runs` ((run_dir, name, colour), at most MAX_OVERLAY of them)."""
        self._wanted = list(runs)[:MAX_OVERLAY]
        self.diff.show_configs([n for _r, n, _c in self._wanted],
                               [c for _r, _n, c in self._wanted],
                               [read_run_yaml(r) for r, _n, _c in self._wanted])
        self._load_or_draw(fresh=True)

    def forget(self, run_dirs: Sequence[str]) -> None:
        for r in run_dirs:
            self._cache.pop(r, None)

    def _load_or_draw(self, fresh: bool) -> None:
        """Read the curves not in the cache (with `fresh`: also those whose file changed since
        they were read), then draw."""
        if self._call.is_running():
            return  # `_on_loaded` comes back here for the latest selection
        missing = [r for r, _n, _c in self._wanted if r not in self._cache
                   or (fresh and self._cache[r][0] != _stamp(r))]
        if missing:
            self._call.start(load_curves, missing)
            return
        self._draw()

    def _draw(self) -> None:
        empty = (np.empty(0), np.empty(0))
        runs = []
        for run_dir, name, colour in self._wanted:
            curves = self._cache.get(run_dir, ((0, 0), {}))[1]
            steps, loss = curves.get("loss", empty)
            eval_steps, eval_loss = curves.get("eval_loss", empty)
            runs.append(OverlayRun(name, colour, steps, loss, eval_steps, eval_loss))
        self.overlay.show_runs(runs)
        self.shown.emit()

    @Slot(object)
    def _on_loaded(self, loaded: dict[str, tuple[tuple[int, int], Curves]]) -> None:
        self._cache.update(loaded)
        self._load_or_draw(fresh=False)  # a live run's file grows all the time: no re-read

    @Slot(object)
    def _on_load_failed(self, exc: object) -> None:
        self.overlay.hint.setText(f"Could not read the curves: {exc}")
        for run_dir, _n, _c in self._wanted:  # draw what there is; do not retry in a loop
            self._cache.setdefault(run_dir, (_stamp(run_dir), {}))
        self._draw()
