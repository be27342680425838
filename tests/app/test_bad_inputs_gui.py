"""The bad-input corpus through the window: the CLI's one sentence reaches the GUI.

Reuses tests/core/test_bad_inputs.py (its CASES and its module-scoped `corpus` fixture). For each
`train` case: the case writes its run.yaml, the window opens it (errors in run.yaml itself show
on open), Start is pressed, and once the runner is done the core's sentence (from
`graftlab.core.cli.main` on the same argv) must be in a visible widget of the window; nothing is
written and the app stays usable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox

sys.path.insert(0, str(Path(__file__).parents[1] / "core"))

from graftlab.core.cli import main  # noqa: E402
from test_bad_inputs import CASES, corpus  # noqa: E402, F401 - `corpus` registers the fixture

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window

# the `merge` cases (adapter onto the wrong base) go through the export dialog's tests
# and the merge-output cases below), the --strict ones are CLI-only (the window shows findings
# before Start instead)
TRAIN_CASES = [name for name, (make_argv, _n) in CASES.items()
               if "merge" not in make_argv.__code__.co_consts
               and "merge_into" not in make_argv.__code__.co_names
               and "--strict" not in make_argv.__code__.co_consts]
# One case per way a sentence reaches the window (run.yaml on open, the model, the weights at
# Start, data, the adapter plan, a value, the output folder) runs in the fast lane; a window per
# case for the whole corpus (37 of them) is the full suite's job.
FAST_CASES = {"yaml syntax", "unknown key", "model folder missing", "truncated safetensors",
              "data wrong columns", "every example too long", "glob matches nothing", "rank 0",
              "learning rate NaN", "output is a file"}
CASE_PARAMS = [pytest.param(name, marks=() if name in FAST_CASES else pytest.mark.slow)
               for name in TRAIN_CASES]
SETTINGS_FILE = "graftlab-test.ini"  # the window's throwaway QSettings live in tmp_path
# The window refuses a structure-only config.json itself, before the core is asked, with its
# own sentence ("holds no weights (structure only)") instead of the core's check_weights.


def listing(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.name != SETTINGS_FILE)


def cli_sentence(argv, capsys) -> str:
    code = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(err) == 1, (code, err)
    return err[0].removeprefix("error: ")


def shown_texts(w) -> list[str]:
    """Texts of the window's visible labels and open message boxes."""
    texts = [lab.text() for lab in w.findChildren(QLabel) if lab.isVisibleTo(w) and lab.text()]
    for box in w.findChildren(QMessageBox):
        if box.isVisible():
            texts += [box.text(), box.informativeText()]
    return texts


@pytest.fixture(autouse=True)
def _in_process_sessions(monkeypatch):
    """Runs train in this process (the session class the runner accepts in place of the child
    process), so the 30-odd cases do not each start a training process and import torch.
    The child process carries a UserError's sentence and field unchanged: that is tested on
    its own in tests/core/test_child_session.py and, in the window, by test_flow/test_worker."""
    import graftlab.app.run.worker
    from graftlab.core.train.session import TrainingSession

    monkeypatch.setattr(graftlab.app.run.worker, "TrainingSession", TrainingSession)


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_the_cli_sentence_reaches_the_window(case, corpus, qtbot, make_window, tmp_path,  # noqa: F811
                                             capsys):
    make_argv, needle = CASES[case]
    argv = make_argv(tmp_path, corpus)
    assert argv[0] == "train"
    before = listing(tmp_path)
    sentence = cli_sentence(argv, capsys)
    assert needle.lower() in sentence.lower()

    w = make_window()
    w.show()
    w.open_path(argv[1])  # File > Open run… (or a drop): run.yaml errors show here
    qtbot.waitUntil(lambda: not w.is_loading(), timeout=60_000)
    if not any(sentence in t for t in shown_texts(w)):
        w.start_action.trigger()
        qtbot.waitUntil(lambda: not w.controller.is_running(), timeout=60_000)
        qtbot.wait(10)
    shown = shown_texts(w)
    assert any(sentence in t for t in shown), (sentence, shown)
    assert not w.controller.is_running() and w.start_action.isEnabled()  # still usable
    assert listing(tmp_path) == before, "nothing is written for bad input"
    assert not (tmp_path / "out").exists()
    for box in w.findChildren(QMessageBox):
        box.close()


# ---- output paths through the export dialog -----------------------------------------------
@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    from graftlab.core.config import RunConfig
    from graftlab.core.train.session import TrainingSession

    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.data.path = "demo:stories"
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.training.max_steps = 2
    cfg.training.update_norms_every = 0
    cfg.training.output_dir = str(tmp_path_factory.mktemp("gui-export") / "run")
    return TrainingSession(cfg).run().adapter_dir


def contents(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink()
                                       else None) for p in root.rglob("*")}


@pytest.fixture
def export_dialog(qtbot, trained_adapter):
    from graftlab.app.dialogs.export_dialog import ExportDialog

    d = ExportDialog(trained_adapter, "demo:tiny-llama", "causal-lm")
    qtbot.addWidget(d)
    d.show()
    yield d
    assert d._call.wait(30_000)


def run_export_dialog(qtbot, d, out: Path) -> None:
    d.out_edit.setText(str(out))
    with qtbot.waitSignal(d._call.finished, timeout=120_000):
        d.start_export()
    qtbot.waitUntil(lambda: not d.is_busy(), timeout=120_000)


def test_export_into_the_users_folder_offers_a_new_subfolder(qtbot, export_dialog, tmp_path):
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    before = contents(tmp_path)
    run_export_dialog(qtbot, export_dialog, docs)
    assert "did not write" in export_dialog.error_text()
    assert contents(tmp_path) == before
    assert export_dialog.subfolder_button.isVisible()
    qtbot.mouseClick(export_dialog.subfolder_button, Qt.MouseButton.LeftButton)
    assert Path(export_dialog.out_edit.text()) == docs / "graftlab-export"
    run_export_dialog(qtbot, export_dialog, docs / "graftlab-export")
    assert export_dialog.error_text() == ""
    assert (docs / "thesis.tex").read_text() == "years of work"
    assert (docs / "graftlab-export" / "adapter_model.safetensors").is_file()


def test_browse_to_an_occupied_folder_picks_a_subfolder(export_dialog, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    export_dialog.set_output_folder(tmp_path)
    assert Path(export_dialog.out_edit.text()) == tmp_path / "export-adapter"


@pytest.mark.parametrize("agree", [False, True])
def test_replacing_an_earlier_export_asks_first(qtbot, export_dialog, tmp_path, agree):
    out = tmp_path / "export"
    run_export_dialog(qtbot, export_dialog, out)
    (out / "adapter_model.safetensors").write_bytes(b"marker of the first export")
    asked = []
    export_dialog.confirm_replace = lambda d, folder: asked.append(folder) or agree
    run_export_dialog(qtbot, export_dialog, out)
    qtbot.waitUntil(lambda: not export_dialog.is_busy(), timeout=120_000)
    assert asked == [out]
    first = (out / "adapter_model.safetensors").read_bytes() == b"marker of the first export"
    assert first != agree
    assert ("earlier export was kept" in export_dialog.error_text()) != agree


def test_export_to_a_symlink_is_refused(qtbot, export_dialog, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    before = contents(tmp_path)
    run_export_dialog(qtbot, export_dialog, tmp_path / "link")
    assert "symbolic link" in export_dialog.error_text()
    assert contents(tmp_path) == before


def test_full_disk_during_export_keeps_the_earlier_one(qtbot, export_dialog, tmp_path,
                                                       monkeypatch):
    import errno
    import shutil

    out = tmp_path / "export"
    run_export_dialog(qtbot, export_dialog, out)
    before = contents(tmp_path)

    def full(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copy2", full)
    export_dialog.confirm_replace = lambda d, folder: True
    run_export_dialog(qtbot, export_dialog, out)
    qtbot.waitUntil(lambda: not export_dialog.is_busy(), timeout=120_000)
    assert "is full" in export_dialog.error_text()
    assert contents(tmp_path) == before
