"""ExportDialog: a real trained adapter exported as a PEFT folder or a merged model."""

from __future__ import annotations

import json
from pathlib import Path

import graftlab.app.dialogs.export_dialog as export_dialog
import pytest
from graftlab.app.dialogs.export_dialog import ExportDialog, human_size
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from graftlab.core.train.session import TrainingSession

    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.data.path = "demo:stories"
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.training.max_steps = 2
    cfg.training.output_dir = str(tmp_path_factory.mktemp("export") / "run")
    result = TrainingSession(cfg).run()
    return result.adapter_dir


@pytest.fixture
def dialog(qtbot, trained):
    d = ExportDialog(trained, "demo:tiny-llama", "causal-lm")
    qtbot.addWidget(d)
    d.show()
    yield d
    assert d._call.wait(30_000)


def export(qtbot, d: ExportDialog, out: Path, fmt: str = "peft") -> None:
    d.set_export_format(fmt)
    d.out_edit.setText(str(out))
    with qtbot.waitSignal(d._call.finished, timeout=120_000):
        qtbot.mouseClick(d.export_button, Qt.MouseButton.LeftButton)
        assert d.progress.isVisible() and not d.export_button.isEnabled()
    assert not d.progress.isVisible()


@pytest.mark.slow
def test_default_is_a_peft_folder_next_to_the_run(dialog, trained):
    assert dialog.export_format() == "peft"
    assert Path(dialog.out_edit.text()) == trained.parent / "export-adapter"
    dialog.set_export_format("merged")
    assert Path(dialog.out_edit.text()) == trained.parent / "export-merged"


@pytest.mark.slow
def test_exports_the_adapter_and_lists_files(qtbot, dialog, tmp_path, monkeypatch):
    out = tmp_path / "my adapter"
    export(qtbot, dialog, out)
    assert dialog.error_text() == ""
    names = {p.name for p, _n in dialog.written}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert all(p.is_file() and p.stat().st_size == n for p, n in dialog.written)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"]
    table = [dialog.files_table.item(r, 0).text() for r in range(dialog.files_table.rowCount())]
    assert "adapter_model.safetensors" in table
    assert dialog.open_button.isEnabled()
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    assert Path(opened[0].toLocalFile()) == out


@pytest.mark.slow
def test_exports_a_merged_model(qtbot, dialog, tmp_path):
    out = tmp_path / "merged"
    export(qtbot, dialog, out, fmt="merged")
    assert dialog.error_text() == ""
    assert (out / "config.json").is_file()
    assert any(p.suffix == ".safetensors" for p, _n in dialog.written)


@pytest.mark.slow
def test_a_file_as_destination_shows_the_core_error(qtbot, dialog, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    export(qtbot, dialog, target)
    assert "is a file; choose a folder" in dialog.error_text()
    assert target.read_text() == "keep me"
    assert dialog.export_button.isEnabled()  # the user can pick another folder


@pytest.mark.slow
def test_an_internal_error_is_shown_not_raised(qtbot, dialog, tmp_path, monkeypatch):
    def broken(*_args):
        raise OSError("disk on fire")

    monkeypatch.setattr(export_dialog, "run_export", broken)
    export(qtbot, dialog, tmp_path / "x")
    assert "OSError: disk on fire" in dialog.error_text()
    assert "disk on fire" in dialog.status_label.toolTip()


@pytest.mark.slow
def test_user_error_from_a_fake_export(qtbot, dialog, tmp_path, monkeypatch):
    def refuse(*_args):
        raise UserError("cannot write to /; choose a folder you have write access to.")

    monkeypatch.setattr(export_dialog, "run_export", refuse)
    export(qtbot, dialog, tmp_path / "y")
    assert dialog.error_text().startswith("cannot write to /")


@pytest.mark.slow
def test_compatibility_findings_are_shown_on_export(qtbot, dialog, tmp_path):
    export(qtbot, dialog, tmp_path / "out")
    assert dialog.compat_findings is not None
    assert "Compatibility" in dialog.compat_label.text()


@pytest.mark.slow
def test_compatibility_warning_is_shown_on_export(qtbot, tmp_path, trained):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(trained, adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None  # tools cannot tell which base it belongs to
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    d = ExportDialog(adapter, "demo:tiny-llama", "causal-lm")
    qtbot.addWidget(d)
    d.show()
    export(qtbot, d, tmp_path / "out")
    assert d._call.wait(30_000)
    assert not d.error_text(), d.error_text()
    assert any(f.rule == "missing-base-model" for f in d.compat_findings)
    assert "base" in d.compat_label.text().lower()


def test_human_size():
    assert human_size(12) == "12 B" and human_size(2048) == "2.0 KB"
    assert human_size(5 * 2**20) == "5.0 MB" and human_size(3 * 2**40) == "3072.0 GB"
