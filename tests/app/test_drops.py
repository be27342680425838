"""graftlab.app.windows.drops: the drags both windows accept, and what a dropped path opens."""

from __future__ import annotations

import pytest
from graftlab.app.windows.drops import accept_local_files, drop_kind, dropped_paths, local_paths
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent

pytest_plugins = ["gui_helpers"]  # fixtures: make_window


def mime(*urls: QUrl, text: str = "") -> QMimeData:
    data = QMimeData()
    if urls:
        data.setUrls(list(urls))
    if text:
        data.setText(text)
    return data


def drag_enter(data: QMimeData, accepted_before: bool) -> QDragEnterEvent:
    event = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, data,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    event.setAccepted(accepted_before)  # so the assertion sees what the handler decided
    return event


def test_drop_kind(tmp_path):
    folder = tmp_path / "model.yaml"  # a folder is a model whatever its name says
    folder.mkdir()
    assert drop_kind(folder) == "model"
    assert drop_kind(str(tmp_path)) == "model"
    assert drop_kind(tmp_path / "nowhere" / "config.json") == "model"
    assert drop_kind(tmp_path / "run.yaml") == "run"
    assert drop_kind(tmp_path / "RUN.YML") == "run"
    for name in ("train.jsonl", "data.csv", "config.json.bak", "notes"):
        assert drop_kind(tmp_path / name) == "data", name


def test_local_paths_only_when_every_url_is_local(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b"
    local = [QUrl.fromLocalFile(str(a)), QUrl.fromLocalFile(str(b))]
    assert local_paths(mime(*local)) == [str(a), str(b)]
    assert local_paths(mime(*local, QUrl("https://example.com/x.jsonl"))) == []
    assert local_paths(mime(text="just text")) == []
    assert local_paths(mime()) == []


@pytest.mark.parametrize("local", [True, False])
def test_accept_local_files(qapp, tmp_path, local):
    url = QUrl.fromLocalFile(str(tmp_path)) if local else QUrl("https://example.com/m")
    data = mime(url)  # the event does not own its QMimeData: keep it alive
    event = drag_enter(data, accepted_before=not local)
    accept_local_files(event)
    assert event.isAccepted() is local


def test_dropped_paths_keep_their_order(qapp, tmp_path):
    paths = [str(tmp_path / n) for n in ("b", "a", "c")]
    data = mime(*(QUrl.fromLocalFile(p) for p in paths))
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, data,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    assert dropped_paths(event) == paths


def test_both_windows_accept_the_same_drags(qtbot, make_window, tmp_path):
    from graftlab.app.windows.inspector_window import InspectorWindow

    inspector = InspectorWindow()
    qtbot.addWidget(inspector)
    files, text_only = mime(QUrl.fromLocalFile(str(tmp_path))), mime(text="not a file")
    for window in (make_window(), inspector):
        ok = drag_enter(files, accepted_before=False)
        window.dragEnterEvent(ok)
        assert ok.isAccepted()
        text = drag_enter(text_only, accepted_before=True)
        window.dragEnterEvent(text)
        assert not text.isAccepted()
