"""`graftlab install-desktop`: register Graftlab in the current user's application menu.

Pure Python (no Qt): writes the desktop entry, the icons and the AppStream metadata into the
XDG data folder (``$XDG_DATA_HOME`` or ``~/.local/share``), the places every freedesktop menu
(GNOME, KDE, XFCE...) reads. The entry's ``Exec`` runs this very Python interpreter, so it works
from a virtual environment without touching PATH.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from importlib.resources.abc import Traversable
from pathlib import Path

from graftlab.resources import resource

APP_ID = "io.graftlab.Graftlab"  # desktop-file id, icon name and AppStream id


def icon_resource(kind: str = "svg") -> Traversable:
    """The app icon shipped in graftlab.resources/icons (``svg`` or ``png``, 256 px)."""
    return resource("icons", f"graftlab.{kind}")


def desktop_template() -> str:
    return resource("desktop", "graftlab.desktop").read_text(encoding="utf-8")


def metainfo() -> bytes:
    return resource("desktop", f"{APP_ID}.metainfo.xml").read_bytes()


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def exec_line() -> str:
    """``Exec`` value: this installation's GUI, which opens any files it is given.

    From Python it is this interpreter with ``-m graftlab.app``; a frozen build is its own
    executable, which opens the window on ``graftlab gui FILES``.
    """
    program = sys.executable or "python3"
    # Desktop-entry quoting: double quotes around arguments with reserved characters.
    quoted = f'"{program}"' if any(c in program for c in ' \t"\'\\><~|&;$*?#()`') else program
    if getattr(sys, "frozen", False):
        return f"{quoted} gui %F"
    return f"{quoted} -m graftlab.app %F"


def desktop_entry(template: str | None = None) -> str:
    """The shipped desktop-entry template with Exec pointing at this installation."""
    text = template if template is not None else desktop_template()
    lines = []
    for line in text.splitlines():
        if line.startswith("Exec="):
            line = f"Exec={exec_line()}"
        elif line.startswith("Icon="):
            line = f"Icon={APP_ID}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a menu never sees a half-written entry
    return path


def _refresh_caches(share: Path) -> None:
    """Best effort: menus also notice new files without these tools, just later."""
    for cmd in (["update-desktop-database", "-q", str(share / "applications")],
                ["gtk-update-icon-cache", "-q", "-t", str(share / "icons" / "hicolor")]):
        if shutil.which(cmd[0]):
            subprocess.run(cmd, check=False, capture_output=True, timeout=30)


def install(prefix: str | Path | None = None) -> list[Path]:
    """Install the desktop entry, icons and metainfo; returns the written paths.

    Args:
        prefix: the data folder to install into (default ``$XDG_DATA_HOME`` or
            ``~/.local/share``); tests pass a temporary folder.
    """
    share = Path(prefix).expanduser() if prefix is not None else data_home()
    hicolor = share / "icons" / "hicolor"
    written = [
        _write(share / "applications" / f"{APP_ID}.desktop", desktop_entry().encode()),
        _write(hicolor / "scalable" / "apps" / f"{APP_ID}.svg", icon_resource("svg").read_bytes()),
        _write(hicolor / "256x256" / "apps" / f"{APP_ID}.png", icon_resource("png").read_bytes()),
        _write(share / "metainfo" / f"{APP_ID}.metainfo.xml", metainfo()),
    ]
    os.chmod(written[0], 0o755)  # some desktops only trust executable entries
    if prefix is None:
        _refresh_caches(share)
    return written


def uninstall(prefix: str | Path | None = None) -> list[Path]:
    """Remove what `install` wrote (only those four files); returns the removed paths."""
    share = Path(prefix).expanduser() if prefix is not None else data_home()
    hicolor = share / "icons" / "hicolor"
    removed = []
    for path in (share / "applications" / f"{APP_ID}.desktop",
                 hicolor / "scalable" / "apps" / f"{APP_ID}.svg",
                 hicolor / "256x256" / "apps" / f"{APP_ID}.png",
                 share / "metainfo" / f"{APP_ID}.metainfo.xml"):
        if path.exists():
            path.unlink()
            removed.append(path)
    if removed and prefix is None:
        _refresh_caches(share)
    return removed


def command_for_exec(exec_value: str) -> list[str]:
    """Split an Exec value into argv, dropping field codes such as %F (for tests and checks)."""
    return [a for a in shlex.split(exec_value) if not (len(a) == 2 and a.startswith("%"))]
