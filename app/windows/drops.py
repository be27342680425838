"""Drag and drop of files onto the main window and the inspector: which drags they accept, the
paths a drop carries, and what a dropped (or command-line) path opens in the main window."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from PySide6.QtCore import QMimeData
from PySide6.QtGui import QDragEnterEvent, QDropEvent

MODEL_FILES = ("config.json",)
RUN_SUFFIXES = (".yaml", ".yml")
DropKind = Literal["model", "run", "data"]


def local_paths(mime: QMimeData) -> list[str]:
    """The paths of a drag when every URL in it is a local file; empty otherwise."""
    urls = mime.urls() if mime.hasUrls() else []
    if urls and all(u.isLocalFile() for u in urls):
        return [u.toLocalFile() for u in urls]
    return []


def accept_local_files(event: QDragEnterEvent) -> None:
    """dragEnterEvent of both windows: take drags of local files only (no web links, text)."""
    if local_paths(event.mimeData()):
        event.acceptProposedAction()
    else:
        event.ignore()


def dropped_paths(event: QDropEvent) -> list[str]:
    """The dropped paths, in order (dragEnterEvent has already refused non-local drags)."""
    return [u.toLocalFile() for u in event.mimeData().urls()]


def drop_kind(path: str | Path) -> DropKind:
    """A folder or a config.json is a model, a .yaml/.yml file a run, anything else data."""
    p = Path(path)
    if p.is_dir() or p.name in MODEL_FILES:
        return "model"
    if p.suffix.lower() in RUN_SUFFIXES:
        return "run"
    return "data"
