"""`python -m graftlab.app` (and `graftlab` without arguments): open the Graftlab window."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Create the QApplication and the main window, run the event loop, return its exit code.

    Positional arguments may name a run.yaml, a model folder / config.json or a data file to open.
    """
    from graftlab.app.settings import APPLICATION, ORGANIZATION
    from PySide6.QtGui import QIcon, QPixmap
    from PySide6.QtWidgets import QApplication

    args = list(sys.argv[1:] if argv is None else argv)
    app = QApplication.instance() or QApplication([sys.argv[0], *args])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("Graftlab")
    app.setDesktopFileName("io.graftlab.Graftlab")  # matches the installed desktop entry
    from graftlab.app.desktop_install import icon_resource

    icon = QPixmap()
    if icon.loadFromData(icon_resource("png").read_bytes()):  # works inside zips and bundles too
        app.setWindowIcon(QIcon(icon))
    # Training runs in a child process, but model loading and exports still run in threads
    # of this one; a 1 ms GIL switch interval (default 5 ms) keeps the UI's share larger.
    sys.setswitchinterval(0.001)

    from graftlab.app.windows.main_window import MainWindow

    paths = [a for a in args if not a.startswith("-")]
    window = MainWindow(open_demo=not paths)
    for path in paths:
        window.open_path(path)
    window.show()
    if os.environ.get("GRAFTLAB_QUIT_WHEN_SHOWN"):  # start-up measurement (frozen builds too)
        from PySide6.QtCore import QTimer

        def shown() -> None:
            print("SHOWN", flush=True)
            app.quit()

        QTimer.singleShot(0, shown)  # runs after the first paint has been queued and done
    return int(app.exec())


if __name__ == "__main__":
    raise SystemExit(main())
