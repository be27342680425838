"""The runs library: every run folder under the user's runs roots, in a table that sorts and
filters; the selected runs compared (curves overlaid, run.yaml files side by side); and what
can be done with a run: open its configuration in the main window, resume it, reveal it in the
file manager, open it in TensorBoard, move it to the trash.

Rows come from graftlab.core.train.run_index.read_runs, which reads only run.yaml and the head
and tail of each metrics.jsonl, off the GUI thread; curves are read only for the runs being
compared (runs_compare.py). Rows of running and paused runs are read again every few seconds
while the window shows. The roots are kept in the settings (a default one, ./runs, until the
user changes them); the main window adds the folder its form trains into.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from graftlab.app.errors import reports_errors, show_dialog
from graftlab.app.plots.runs_overlay import run_colour
from graftlab.app.run.background import BackgroundCall
from graftlab.app.run.tensorboard import NOT_INSTALLED, TensorBoardLauncher, tensorboard_available
from graftlab.app.settings import AppSettings
from graftlab.app.windows.actions import make_action
from graftlab.app.windows.runs_compare import MAX_OVERLAY, RunsCompare
from graftlab.app.windows.runs_table import (
    ACTIVE,
    COLUMN,
    RunsFilterProxy,
    RunsTableModel,
    display_names,
)
from graftlab.app.windows.runs_trash import ask_move_to_trash, move_to_trash, refuse_training
from graftlab.core.errors import UserError
from graftlab.core.train.run_index import STATUSES, RunSummary, read_run, read_runs
from PySide6.QtCore import QModelIndex, QPoint, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QCloseEvent, QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

LIVE_REFRESH_MS = 3000  # running and paused rows are read again this often
_RESUMABLE = ("stopped", "killed", "failed")


class RunsLibraryWindow(QMainWindow):
    """The runs library (see the module docstring). `open_config(run_dir)` and
    `resume(run_dir)` are the main window's; without them those actions are hidden."""

    populated = Signal()  # the table shows a fresh read of the roots

    def __init__(self, settings: AppSettings, *, parent: QWidget | None = None,
                 extra_roots: Callable[[], list[Path]] = list,
                 open_config: Callable[[Path], None] | None = None,
                 resume: Callable[[Path], None] | None = None) -> None:
        super().__init__(parent)
        self.setWindowFlag(Qt.WindowType.Window, True)
        self.setObjectName("runsLibrary")
        self.setWindowTitle("Runs library — Graftlab")
        self.resize(1320, 860)
        self.settings, self.extra_roots = settings, extra_roots
        self.open_config_callback, self.resume_callback = open_config, resume
        self.last_error: str | None = None
        self.open_url = QDesktopServices.openUrl  # tests replace it
        self.confirm = ask_move_to_trash  # (window, run_dirs) -> bool; tests replace it
        self.tensorboard = TensorBoardLauncher(self)
        self.tensorboard.failed.connect(self._on_tensorboard_failed)
        self.model = RunsTableModel(self)
        self.proxy = RunsFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.compare = RunsCompare(self)
        self._scan = BackgroundCall(self)
        self._scan.succeeded.connect(self._on_scanned)
        self._scan.failed.connect(self._on_scan_failed)
        self._scanning: list[str] = []
        self._selection_timer = QTimer(self, singleShot=True, interval=120)
        self._selection_timer.timeout.connect(self._on_selection_settled)
        self._live_timer = QTimer(self, interval=LIVE_REFRESH_MS)
        self._live_timer.timeout.connect(self.refresh_live_rows)
        self._build_widgets()
        self._build_actions()
        self._update_actions()
        self.rescan()

    # ---- construction -------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.filter_edit = QLineEdit(placeholderText="Filter: run, model, targets, status…",
                                     clearButtonEnabled=True)
        self.filter_edit.textChanged.connect(self._on_filter_changed)
        self.status_combo = QComboBox()
        self.status_combo.addItem("Any status", "")
        for s in STATUSES:
            self.status_combo.addItem(s.capitalize(), s)
        self.status_combo.currentIndexChanged.connect(self._on_status_changed)
        self.roots_label = QLabel()
        self.roots_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.roots_button = QToolButton(text="Roots")
        self.roots_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.roots_menu = QMenu(self.roots_button)
        self.roots_menu.aboutToShow.connect(self._fill_roots_menu)
        self.roots_button.setMenu(self.roots_menu)
        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 2)
        bar.addWidget(self.status_combo)
        bar.addSpacing(12)
        bar.addWidget(self.roots_label, 3)
        bar.addWidget(self.roots_button)

        self.table = QTableView()
        self.table.setObjectName("runsTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COLUMN["Started"], Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_context_menu)
        self.table.doubleClicked.connect(self._on_double_clicked)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(False)
        em = self.fontMetrics().horizontalAdvance("m")
        # Fixed widths: fitting columns to their contents would format every row.
        for name, width in (("Status", 6), ("Run", 16), ("Model", 14), ("Targets", 14),
                            ("Steps", 8), ("Final loss", 6), ("Eval", 7), ("Duration", 5),
                            ("Started", 10)):
            self.table.setColumnWidth(COLUMN[name], width * em)
        header.setSectionResizeMode(COLUMN["Targets"], QHeaderView.ResizeMode.Stretch)

        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.compare.overlay)
        bottom.addWidget(self.compare.diff)
        bottom.setSizes([640, 640])
        self.split = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(6, 6, 6, 0)
        top_layout.addLayout(bar)
        top_layout.addWidget(self.table, 1)
        self.split.addWidget(top)
        self.split.addWidget(bottom)
        self.split.setSizes([400, 460])
        self.split.setChildrenCollapsible(False)
        self.setCentralWidget(self.split)
        self.counts_label = QLabel()  # runs, shown, selected; messages show over it for a while
        self.statusBar().addWidget(self.counts_label, 1)

    def _build_actions(self) -> None:
        def act(*args: object, **kwargs: object):  # noqa: ANN202
            return make_action(self, *args, **kwargs)  # type: ignore[arg-type]

        self.refresh_action = act("&Refresh", self.rescan, QKeySequence.StandardKey.Refresh,
                                  "Read the runs roots again (F5)")
        self.open_config_action = act(
            "&Open configuration", self.open_selected_config, "Ctrl+O",
            "Load the run's run.yaml into the main window (also Enter, or a double-click)")
        for key in ("Return", "Enter"):  # on the table only: Enter elsewhere is theirs
            QShortcut(QKeySequence(key), self.table, self.open_selected_config,
                      context=Qt.ShortcutContext.WidgetShortcut)
        self.resume_action = act("Re&sume", self.resume_selected, "Ctrl+R",
                                 "Continue a stopped, killed or failed run from its last "
                                 "checkpoint in the main window")
        self.reveal_action = act("Re&veal in file manager", self.reveal_selected,
                                 "Ctrl+Shift+R", "Open the run folder in the file manager")
        self.tensorboard_action = act("Open in &TensorBoard", self.open_tensorboard, "Ctrl+T",
                                      "Start TensorBoard on the selected runs' event files "
                                      "and open it in the browser")
        self.delete_action = act("&Move to trash…", self.delete_selected,
                                 QKeySequence.StandardKey.Delete,
                                 "Move the selected run folders to the system trash")
        self.add_root_action = act("&Add root…", self.ask_add_root, "Ctrl+Shift+A",
                                   "Also list the runs in another folder")
        act("Filter", self._focus_filter, QKeySequence.StandardKey.Find)
        act("Close", self.close, QKeySequence.StandardKey.Close)
        if not tensorboard_available():
            self.tensorboard_action.setToolTip(NOT_INSTALLED)
            self.tensorboard_action.setStatusTip(NOT_INSTALLED)
        self.open_config_action.setVisible(self.open_config_callback is not None)
        self.resume_action.setVisible(self.resume_callback is not None)
        tools = self.addToolBar("Runs")
        tools.setObjectName("runsToolbar")
        tools.setMovable(False)
        tools.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a in self._row_actions():
            if a is None:
                tools.addSeparator()
            else:
                tools.addAction(a)
        tools.addSeparator()
        tools.addAction(self.refresh_action)

    def _row_actions(self) -> list:
        return [self.open_config_action, self.resume_action, self.reveal_action,
                self.tensorboard_action, None, self.delete_action]

    # ---- roots and reading --------------------------------------------------------------------
    def roots(self) -> list[str]:
        """The settings' roots, then the main window's (the folder its form trains into)."""
        out: list[str] = []
        seen: set[str] = set()
        for r in [*self.settings.runs_roots(), *map(str, self.extra_roots())]:
            key = str(Path(r).expanduser().absolute())
            if key not in seen:
                seen.add(key)
                out.append(key)
        return out

    def add_root(self, folder: str | Path) -> None:
        roots = self.settings.runs_roots()
        folder = str(Path(folder).expanduser().absolute())
        if folder not in roots:
            self.settings.set_runs_roots([*roots, folder])
        self.rescan()

    def remove_root(self, folder: str) -> None:
        self.settings.set_runs_roots([r for r in self.settings.runs_roots() if r != folder])
        self.rescan()

    @Slot()
    def ask_add_root(self) -> None:
        roots = self.roots()
        folder = QFileDialog.getExistingDirectory(self, "Folder that holds runs",
                                                  roots[-1] if roots else str(Path.cwd()))
        if folder:
            self.add_root(folder)

    @Slot()
    def _fill_roots_menu(self) -> None:
        menu = self.roots_menu
        menu.clear()
        menu.addAction(self.add_root_action)
        stored = self.settings.runs_roots()
        if stored:
            menu.addSeparator()
        for r in stored:
            menu.addAction(f"Remove {r}", lambda r=r: self.remove_root(r))

    def is_scanning(self) -> bool:
        return self._scan.is_running()

    @Slot()
    def rescan(self) -> None:
        """Read every run folder under the roots again (in the background)."""
        roots = self.roots()
        shown = "; ".join(roots) if roots else "no folder (Roots > Add root…)"
        self.roots_label.setText(f"Runs in: {shown}")
        self.roots_label.setToolTip("\n".join(roots))
        if self._scan.is_running():
            return  # `_on_scanned` reads again when the roots changed meanwhile
        self._scanning = roots
        self.counts_label.setText("Reading runs…")
        self._scan.start(read_runs, [r for r in roots if Path(r).is_dir()])

    @Slot(object)
    def _on_scanned(self, rows: list[RunSummary]) -> None:
        if self._scanning != self.roots():
            self.rescan()
            return
        selected = set(self.selected_dirs())
        self.model.set_rows(rows)
        self.compare.forget([r.run_dir for r in rows])  # a refresh reads curves again
        self._select(selected)
        self._show_counts()
        self._live_timer.start()
        self.populated.emit()

    @Slot(object)
    def _on_scan_failed(self, exc: object) -> None:
        self.model.set_rows([])
        self.counts_label.setText(f"Could not read the runs: {exc}")
        self.populated.emit()

    @Slot()
    def refresh_live_rows(self) -> None:
        """Read the running and paused rows again (cheap: a few small reads each)."""
        if not self.isVisible():
            return
        live = [r.run_dir for r in self.model.rows if r.status in ACTIVE]
        if live:
            self.model.update_rows(read_run(r) for r in live)
            self._update_actions()

    def _show_counts(self) -> None:
        n, shown, picked = len(self.model.rows), self.proxy.rowCount(), len(self.selected_dirs())
        text = f"{n} run{'s' if n != 1 else ''} in {len(self.roots())} folder" \
            f"{'s' if len(self.roots()) != 1 else ''}"
        if shown != n:
            text += f", {shown} shown"
        if picked:
            text += f", {picked} selected"
            if picked > MAX_OVERLAY:
                text += f" (the first {MAX_OVERLAY} are compared)"
        self.counts_label.setText(text)

    # ---- selection ----------------------------------------------------------------------------
    def selected_rows(self) -> list[RunSummary]:
        """The selected runs, in the table's order."""
        rows = self.table.selectionModel().selectedRows()
        rows.sort(key=lambda i: i.row())
        return [self.model.rows[self.proxy.mapToSource(i).row()] for i in rows]

    def selected_dirs(self) -> list[str]:
        return [r.run_dir for r in self.selected_rows()]

    def select_runs(self, run_dirs: list[str]) -> None:
        """Select exactly these runs (those shown), as a click and ctrl-clicks would."""
        self._select(set(map(str, run_dirs)))
        self._on_selection_settled()

    def _select(self, run_dirs: set[str]) -> None:
        sel = self.table.selectionModel()
        sel.clearSelection()
        flags = sel.SelectionFlag.Select | sel.SelectionFlag.Rows
        for d in run_dirs:
            i = self.model.row_of(d)
            if i >= 0:
                index = self.proxy.mapFromSource(self.model.index(i, 0))
                if index.isValid():
                    sel.select(index, flags)

    @Slot()
    def _on_selection_changed(self, *_args: object) -> None:
        self._update_actions()
        self._selection_timer.start()  # a drag over many rows compares once, at its end

    @Slot()
    def _on_selection_settled(self) -> None:
        rows = self.selected_rows()[:MAX_OVERLAY]
        names = display_names(r.run_dir for r in rows)
        colours = {r.run_dir: run_colour(i) for i, r in enumerate(rows)}
        self.model.set_colours(colours)
        self.compare.show([(r.run_dir, names[r.run_dir], colours[r.run_dir]) for r in rows])
        self._show_counts()

    def _update_actions(self) -> None:
        rows = self.selected_rows()
        one = rows[0] if len(rows) == 1 else None
        self.open_config_action.setEnabled(one is not None)
        self.resume_action.setEnabled(one is not None and one.status in _RESUMABLE)
        self.reveal_action.setEnabled(bool(rows))
        self.delete_action.setEnabled(bool(rows))
        self.tensorboard_action.setEnabled(bool(rows) and tensorboard_available())

    # ---- filtering ----------------------------------------------------------------------------
    @Slot(str)
    def _on_filter_changed(self, text: str) -> None:
        self.proxy.set_text(text)
        self._show_counts()

    @Slot(int)
    def _on_status_changed(self, _i: int) -> None:
        self.proxy.set_status(self.status_combo.currentData() or "")
        self._show_counts()

    def _focus_filter(self) -> None:
        self.filter_edit.setFocus()
        self.filter_edit.selectAll()

    # ---- actions ------------------------------------------------------------------------------
    def _one_selected(self) -> RunSummary:
        rows = self.selected_rows()
        if len(rows) != 1:
            raise UserError("select one run for this (a click on its row).")
        return rows[0]

    @reports_errors
    def open_selected_config(self) -> None:
        if self.open_config_callback is not None:
            self.open_config_callback(Path(self._one_selected().run_dir))

    @reports_errors
    def resume_selected(self) -> None:
        row = self._one_selected()
        if row.status not in _RESUMABLE:
            raise UserError(f"run {Path(row.run_dir).name} is {row.status}; only a stopped, "
                            "killed or failed run can be resumed.")
        if self.resume_callback is not None:
            self.resume_callback(Path(row.run_dir))

    @reports_errors
    def reveal_selected(self) -> None:
        for run_dir in self.selected_dirs()[:MAX_OVERLAY]:
            self.open_url(QUrl.fromLocalFile(run_dir))

    @reports_errors
    def open_tensorboard(self) -> None:
        url = self.tensorboard.open(self.selected_dirs())
        self.statusBar().showMessage(f"Starting TensorBoard at {url}…", 8000)

    @Slot(str)
    def _on_tensorboard_failed(self, message: str) -> None:
        self.report_error(UserError(message))

    @reports_errors
    def delete_selected(self) -> None:
        """Move the selected run folders to the trash, after a confirmation (runs_trash.py:
        never a run that a process trains in, checked again just before each)."""
        rows = self.selected_rows()
        if not rows:
            return
        refuse_training(rows)
        dirs = [r.run_dir for r in rows]
        if not self.confirm(self, dirs):
            return
        gone: list[str] = []
        try:
            move_to_trash(dirs, gone)
        finally:
            self.model.remove_runs(gone)
            self.compare.forget(gone)
            self._on_selection_settled()
        self.statusBar().showMessage(f"Moved {len(gone)} run folder"
                                     f"{'s' if len(gone) != 1 else ''} to the trash", 8000)

    def context_menu(self) -> QMenu:
        """The table's right-click menu: the row actions (enabled for the selection)."""
        menu = QMenu(self)
        for a in self._row_actions():
            if a is None:
                menu.addSeparator()
            elif a.isVisible():
                menu.addAction(a)
        menu.addSeparator()
        menu.addAction(self.refresh_action)
        menu.aboutToHide.connect(menu.deleteLater)
        return menu

    @Slot(QPoint)
    def _on_context_menu(self, pos: QPoint) -> None:
        self.context_menu().popup(self.table.viewport().mapToGlobal(pos))

    @Slot(QModelIndex)
    def _on_double_clicked(self, _index: QModelIndex) -> None:
        self.open_selected_config()

    # ---- errors and closing -------------------------------------------------------------------
    def report_error(self, exc: BaseException, tb: str | None = None) -> None:
        """Errors of this window's actions: a sentence (or a traceback) in a dialog here."""
        self.last_error = exc.message if isinstance(exc, UserError) else f"{exc}"
        self.statusBar().showMessage(self.last_error, 8000)
        show_dialog(self, exc, tb)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._live_timer.stop()
        self.tensorboard.shutdown()
        self._scan.wait(30_000)  # never drop a read that is still running
        self.compare.wait(30_000)
        super().closeEvent(event)
