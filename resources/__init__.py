"""What Graftlab ships that is not code: icons, the desktop entry, AppStream metadata, example runs.

Installed as the package data of ``graftlab.resources`` (wheel, editable install and the PyInstaller
bundle alike), so everything here is found through ``importlib.resources``, never through a path
relative to the source tree.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from importlib.resources.abc import Traversable

__all__ = ["as_file", "resource"]


def resource(*parts: str) -> Traversable:
    """One shipped file, e.g. ``resource("icons", "graftlab.svg")``."""
    node = files(__name__)
    for part in parts:
        node = node / part
    return node
