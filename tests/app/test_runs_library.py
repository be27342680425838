"""The runs library window: rows for every status, sorting and filtering, the overlay and the
config diff of selected runs, and its actions (open the configuration in the main window,
resume, reveal, move to the trash, TensorBoard). Run folders are written through the real
event writer (tests/core/test_run_index.make_run)."""

from __future__ import annotations

import sys
from pathlib import Path

import graftlab.app.windows.runs_library as runs_library
import graftlab.app.windows.runs_trash as runs_trash
import pytest
from graftlab.app.run.tensorboard import NOT_INSTALLED
from graftlab.app.settings import AppSettings
from graftlab.app.windows.runs_diff import HIGHLIGHT
from graftlab.app.windows.runs_library import RunsLibraryWindow
from graftlab.app.windows.runs_table import COLUMN
from graftlab.core.config import RunConfig
from graftlab.core.train.events import Failed, Finished
from gui_waits import wait_loaded
from PySide6.QtCore import QProcess, Qt
from PySide6.QtWidgets import QMessageBox

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))
from test_run_index import make_run  # noqa: E402

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window


@pytest.fixture
def root(tmp_path):
    """A runs root with one run of each ending, and one that trains now."""
    r = tmp_path / "runs"
    make_run(r, "a-finished", 500, Finished(500, False, None, 2.6, 250.0), alive=False,
             eval_every=100)
    make_run(r, "b-stopped", 120, Finished(120, True, None, 2.9, 60.0), alive=False,
             eval_every=60)
    make_run(r, "c-failed", 40, Failed("training diverged", True), alive=False)
    make_run(r, "d-killed", 77, None, alive=False)
    make_run(r, "e-running", 10, None, alive=True)
    return r


def open_library(qtbot, qsettings, roots, **kwargs) -> RunsLibraryWindow:
    settings = AppSettings(qsettings)
    settings.set_runs_roots([str(x) for x in roots])
    w = RunsLibraryWindow(settings, **kwargs)
    qtbot.addWidget(w)
    w.resize(1320, 860)
    w.show()
    qtbot.waitUntil(lambda: not w.is_scanning() and w.model.rowCount() > 0, timeout=10_000)
    return w


def shown(w, column="Run") -> list[str]:
    col = COLUMN[column]
    return [w.proxy.index(i, col).data() for i in range(w.proxy.rowCount())]


def compared(qtbot, w, run_dirs) -> None:
    """Select `run_dirs` and wait until the overlay and the diff show them."""
    with qtbot.waitSignal(w.compare.shown, timeout=10_000):
        w.select_runs([str(d) for d in run_dirs])


def test_rows_for_every_status(qtbot, qsettings, root):
    w = open_library(qtbot, qsettings, [root])
    by_name = {Path(r.run_dir).name: r for r in w.model.rows}
    assert {k: r.status for k, r in by_name.items()} == {
        "a-finished": "finished", "b-stopped": "stopped", "c-failed": "failed",
        "d-killed": "killed", "e-running": "running"}
    row = w.model.row_of(str(root / "a-finished"))
    cells = {name: w.model.index(row, c).data() for name, c in COLUMN.items()}
    assert cells["Steps"] == "500 / 500" and cells["Final loss"] == "2.5000"
    assert cells["Eval"] == "2.2500 loss" and cells["Duration"] == "4:10"
    assert cells["Model"] == "demo:tiny-llama" and cells["Targets"] == "3: q_proj, up_proj"
    assert cells["Started"][:2] == "20"
    failed = w.model.row_of(str(root / "c-failed"))
    assert "training diverged" in w.model.index(failed, 0).data(Qt.ItemDataRole.ToolTipRole)
    assert w.counts_label.text() == "5 runs in 1 folder"


def test_sort_and_filter(qtbot, qsettings, root):
    w = open_library(qtbot, qsettings, [root])
    w.table.sortByColumn(COLUMN["Final loss"], Qt.SortOrder.AscendingOrder)
    assert shown(w) == ["a-finished", "b-stopped", "d-killed", "c-failed", "e-running"]
    w.table.sortByColumn(COLUMN["Eval"], Qt.SortOrder.DescendingOrder)
    assert shown(w)[:2] == ["b-stopped", "a-finished"]  # runs without eval stay last
    w.table.sortByColumn(COLUMN["Steps"], Qt.SortOrder.DescendingOrder)
    assert shown(w, "Steps")[0] == "500 / 500"
    w.filter_edit.setText("KILL")
    assert shown(w) == ["d-killed"]
    w.filter_edit.setText("demo stopped")  # every word somewhere in the row
    assert shown(w) == ["b-stopped"]
    w.filter_edit.clear()
    w.status_combo.setCurrentIndex(w.status_combo.findData("failed"))
    assert shown(w) == ["c-failed"]
    assert w.counts_label.text() == "5 runs in 1 folder, 1 shown"


def test_overlay_draws_one_named_curve_per_selected_run(qtbot, qsettings, root):
    w = open_library(qtbot, qsettings, [root])
    runs = [root / "a-finished", root / "b-stopped", root / "d-killed"]
    compared(qtbot, w, runs)
    overlay = w.compare.overlay
    assert sorted(overlay.loss_names()) == ["a-finished", "b-stopped", "d-killed"]
    assert sorted(overlay.eval_names()) == ["a-finished", "b-stopped"]  # d has no eval
    colours = {Path(d).name: c.name() for d, c in w.model.colours.items()}
    assert len(set(colours.values())) == 3  # each run its own colour, also in the table
    legend = {label.text: sample.item.opts["pen"].color().name()
              for sample, label in overlay.legend.items}
    assert legend == colours
    loss = [c for c in overlay.loss_plot.getPlotItem().listDataItems() if c.name() == "a-finished"]
    assert len(loss[0].getOriginalDataset()[0]) == 500  # the whole curve, decimated when drawn
    overlay.smooth_box.setChecked(False)  # raw curves only: still one per run
    assert len(overlay.loss_plot.getPlotItem().listDataItems()) == 3
    compared(qtbot, w, [])
    assert overlay.loss_names() == [] and w.model.colours == {}


def test_config_diff_highlights_the_differing_key(qtbot, qsettings, tmp_path):
    root = tmp_path / "runs"
    for name, lr in (("lr-2e-4", 2e-4), ("lr-1e-3", 1e-3)):
        run = make_run(root, name, 20, Finished(20, False, None, 2.9, 5.0), alive=False)
        cfg = RunConfig.load(run / "run.yaml")
        cfg.training.learning_rate = lr
        cfg.save(run / "run.yaml")
    w = open_library(qtbot, qsettings, [root])
    compared(qtbot, w, [root / "lr-2e-4", root / "lr-1e-3"])
    diff = w.compare.diff
    assert diff.model.differing_keys() == ["training.learning_rate"]
    assert diff.model.rowCount() == 1  # the run folders always differ: not listed
    index = diff.model.index(0, 2)
    assert {diff.model.index(0, c).data() for c in range(3)} == {
        "training.learning_rate", "0.0002", "0.001"}
    assert index.data(Qt.ItemDataRole.BackgroundRole) == HIGHLIGHT
    assert index.data(Qt.ItemDataRole.FontRole).bold()  # differs from the first run's value
    assert diff.model.index(0, 1).data(Qt.ItemDataRole.FontRole) is None  # the first run's
    assert "1 of" in diff.summary.text() and "differ between 2 runs" in diff.summary.text()
    diff.only_box.setChecked(False)
    keys = [diff.model.index(i, 0).data() for i in range(diff.model.rowCount())]
    assert "model.source" in keys and "training.output_dir" in keys
    source = diff.model.index(keys.index("model.source"), 1)
    assert source.data(Qt.ItemDataRole.BackgroundRole) is None


def test_delete_moves_to_the_trash_after_confirming(qtbot, qsettings, root, monkeypatch):
    trashed: list[str] = []
    monkeypatch.setattr(runs_trash, "send2trash", trashed.append)
    asked: list[str] = []

    def question(_parent, _title, text, *_args):
        asked.append(text)
        return answer

    monkeypatch.setattr(QMessageBox, "question", question)
    w = open_library(qtbot, qsettings, [root])
    w.select_runs([str(root / "c-failed"), str(root / "d-killed")])
    answer = QMessageBox.StandardButton.Cancel
    w.delete_action.trigger()
    assert len(asked) == 1 and "c-failed" in asked[0] and trashed == []
    answer = QMessageBox.StandardButton.Yes
    w.delete_action.trigger()
    assert sorted(trashed) == [str(root / "c-failed"), str(root / "d-killed")]
    assert sorted(shown(w)) == ["a-finished", "b-stopped", "e-running"]
    assert "Moved 2 run folders to the trash" in w.statusBar().currentMessage()


def test_a_running_run_is_never_deleted(qtbot, qsettings, root, monkeypatch):
    trashed: list[str] = []
    monkeypatch.setattr(runs_trash, "send2trash", trashed.append)
    w = open_library(qtbot, qsettings, [root])
    w.confirm = lambda parent, dirs: pytest.fail("asked to delete a running run")
    w.select_runs([str(root / "a-finished"), str(root / "e-running")])
    w.delete_action.trigger()
    assert trashed == [] and w.model.row_of(str(root / "e-running")) >= 0
    assert w.last_error == ("run e-running is still training; stop it first (Train > Stop, "
                            "or graftlab stop RUN), then delete it.")


def test_a_run_that_starts_training_after_the_question_stays(qtbot, qsettings, root,
                                                           monkeypatch):
    import fcntl
    import os

    from graftlab.core.train.live import LOCK_NAME

    trashed: list[str] = []
    monkeypatch.setattr(runs_trash, "send2trash", trashed.append)
    w = open_library(qtbot, qsettings, [root])
    held: list[int] = []

    def resumed_meanwhile(_parent, dirs):  # another terminal resumes the run: it holds the lock
        fd = os.open(root / "d-killed" / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(fd)
        return True

    w.confirm = resumed_meanwhile
    w.select_runs([str(root / "d-killed")])
    try:
        w.delete_action.trigger()
    finally:
        os.close(held[0])
    assert trashed == [] and "started training again" in w.last_error
    assert w.model.row_of(str(root / "d-killed")) >= 0


def test_resume_and_reveal_hand_the_run_folder_on(qtbot, qsettings, root):
    resumed: list[Path] = []
    w = open_library(qtbot, qsettings, [root], resume=resumed.append)
    opened: list = []
    w.open_url = opened.append
    for name, can in (("b-stopped", True), ("d-killed", True), ("a-finished", False),
                      ("e-running", False)):
        w.select_runs([str(root / name)])
        assert w.resume_action.isEnabled() is can, name
    w.select_runs([str(root / "d-killed")])
    w.resume_action.trigger()
    assert resumed == [root / "d-killed"]
    w.reveal_action.trigger()
    assert [u.toLocalFile() for u in opened] == [str(root / "d-killed")]
    assert not w.open_config_action.isVisible()  # no main window to open it in
    menu = [a.text() for a in w.context_menu().actions() if not a.isSeparator()]
    assert menu == ["Re&sume", "Re&veal in file manager", "Open in &TensorBoard",
                    "&Move to trash…", "&Refresh"]
    keys = {a.text(): a.shortcut().toString() for a in (
        w.resume_action, w.reveal_action, w.tensorboard_action, w.delete_action,
        w.refresh_action, w.open_config_action)}
    assert keys == {"Re&sume": "Ctrl+R", "Re&veal in file manager": "Ctrl+Shift+R",
                    "Open in &TensorBoard": "Ctrl+T", "&Move to trash…": "Del",
                    "&Refresh": "F5", "&Open configuration": "Ctrl+O"}


def test_roots_are_kept_in_the_settings(qtbot, qsettings, root, tmp_path):
    settings = AppSettings(qsettings)
    assert settings.runs_roots() == [str(Path("runs").absolute())]  # ./runs, training's default
    other = tmp_path / "more"
    make_run(other, "x-more", 5, Finished(5, False, None, 3.0, 1.0), alive=False)
    w = open_library(qtbot, qsettings, [root])
    with qtbot.waitSignal(w.populated, timeout=10_000):
        w.add_root(other)
    assert "x-more" in shown(w) and settings.runs_roots() == [str(root), str(other)]
    with qtbot.waitSignal(w.populated, timeout=10_000):
        w.remove_root(str(root))
    assert shown(w) == ["x-more"] and AppSettings(qsettings).runs_roots() == [str(other)]
    settings.set_runs_roots([])
    assert settings.runs_roots() == []


def test_live_rows_follow_their_run(qtbot, qsettings, root):
    from graftlab.core.train.events import JsonlSink, Step

    w = open_library(qtbot, qsettings, [root])
    sink = JsonlSink(root / "e-running" / "metrics.jsonl")
    sink(Step(11, 2.5, 2e-4, 1.0, 0.1, 100.0, 110, 5.5, 1.0, 100.0))
    sink.close()
    w.refresh_live_rows()
    row = w.model.rows[w.model.row_of(str(root / "e-running"))]
    assert (row.steps, row.final_loss) == (11, 2.5)


def test_tensorboard_command_line(qtbot, qsettings, root, monkeypatch):
    started: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(QProcess, "start", lambda self, program, args: started.append(
        (program, list(args))))
    for name in ("a-finished", "b-stopped"):
        (root / name / "tensorboard").mkdir()
    w = open_library(qtbot, qsettings, [root])
    w.select_runs([str(root / "c-failed")])
    w.tensorboard_action.trigger()
    assert started == [] and "no TensorBoard event files" in w.last_error
    w.select_runs([str(root / "a-finished")])
    w.tensorboard_action.trigger()
    program, args = started[-1]
    assert program == sys.executable and args[:2] == ["-m", "tensorboard.main"]
    assert args[args.index("--logdir") + 1] == str(root / "a-finished" / "tensorboard")
    assert args[args.index("--host") + 1] == "127.0.0.1"
    port = int(args[args.index("--port") + 1])
    assert w.tensorboard.url == f"http://127.0.0.1:{port}/"
    w.select_runs([str(root / "a-finished"), str(root / "b-stopped"), str(root / "c-failed")])
    w.tensorboard_action.trigger()
    spec = started[-1][1][started[-1][1].index("--logdir_spec") + 1]
    assert sorted(spec.split(",")) == [f"a-finished:{root / 'a-finished' / 'tensorboard'}",
                                       f"b-stopped:{root / 'b-stopped' / 'tensorboard'}"]


def test_tensorboard_missing_disables_the_action(qtbot, qsettings, root, monkeypatch):
    monkeypatch.setattr(runs_library, "tensorboard_available", lambda: False)
    w = open_library(qtbot, qsettings, [root])
    w.select_runs([str(root / "a-finished")])
    assert not w.tensorboard_action.isEnabled()
    assert w.tensorboard_action.toolTip() == NOT_INSTALLED


@pytest.mark.slow
def test_tensorboard_serves_and_stops_with_the_window(qtbot, qsettings, root):
    import urllib.request

    (root / "a-finished" / "tensorboard").mkdir()
    w = open_library(qtbot, qsettings, [root])
    opened: list = []
    w.tensorboard.open_url = opened.append
    w.select_runs([str(root / "a-finished")])
    with qtbot.waitSignal(w.tensorboard.ready, timeout=120_000):
        w.tensorboard_action.trigger()
    assert [u.toString() for u in opened] == [w.tensorboard.url]
    with urllib.request.urlopen(w.tensorboard.url, timeout=10) as page:
        assert page.status == 200
    proc = w.tensorboard.process
    w.close()
    assert proc is not None and w.tensorboard.process is None


# ---- from the main window -------------------------------------------------------------------
def test_open_config_fills_the_main_window_form(qtbot, make_window, qsettings, root):
    run = root / "a-finished"
    cfg = RunConfig.load(run / "run.yaml")
    cfg.training.learning_rate, cfg.adapter.rank = 7e-4, 12
    cfg.save(run / "run.yaml")
    w = make_window()
    AppSettings(qsettings).set_runs_roots([str(root)])
    library = w.library.open_library()
    qtbot.waitUntil(lambda: not library.is_scanning() and library.model.rowCount() == 5,
                    timeout=10_000)
    library.select_runs([str(run)])
    library.open_config_action.trigger()
    wait_loaded(qtbot, w)
    shown_cfg = w.run_config()
    assert shown_cfg.training.learning_rate == 7e-4 and shown_cfg.adapter.rank == 12
    assert shown_cfg.model.source == "demo:tiny-llama"
    assert set(shown_cfg.adapter.targets) == set(cfg.adapter.targets)
    assert shown_cfg.training.output_dir == str(root / "a-finished-2")  # a new run folder
    assert w.run_files.run_path is None  # Save asks: the run's own run.yaml stays as it is


def test_main_window_menus_open_the_library_and_tensorboard(qtbot, make_window, qsettings,
                                                            tmp_path, monkeypatch):
    started: list[list[str]] = []
    monkeypatch.setattr(QProcess, "start", lambda self, program, args: started.append(
        list(args)))
    w = make_window()
    AppSettings(qsettings).set_runs_roots([])
    run = make_run(tmp_path / "elsewhere", "mine", 5, Finished(5, False, None, 3.0, 1.0),
                   alive=False)
    w.training_panel.fields["output_dir"].setText(str(run))
    texts = [a.text() for m in w.menuBar().actions() for a in m.menu().actions()]
    assert "Runs &library…" in texts and "Open in &TensorBoard" in texts
    w.library.open_action.trigger()  # Ctrl+L
    library = w.library.window
    qtbot.waitUntil(lambda: not library.is_scanning() and library.model.rowCount() == 1,
                    timeout=10_000)
    assert library.roots() == [str(run.parent)]  # the folder the form trains into
    w.library.tensorboard_action.trigger()  # the current run: the form's run folder
    assert "no TensorBoard event files" in (w.last_error or "")
    (run / "tensorboard").mkdir()
    w.library.tensorboard_action.trigger()
    assert started[-1][started[-1].index("--logdir") + 1] == str(run / "tensorboard")
    library.resume_callback(run)  # RunFiles.resume_run: no checkpoint here, the core's sentence
    assert "checkpoint" in (w.last_error or "")
    w.close()
    assert not library.isVisible()
