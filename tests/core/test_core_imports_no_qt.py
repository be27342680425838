"""core/ never imports Qt, pyqtgraph or app (DESIGN.md)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import core


def test_core_imports_no_qt():
    names = [f"core.{m.name}" for m in pkgutil.iter_modules(core.__path__)]
    code = (
        "import sys\n"
        + "".join(f"import {n}\n" for n in names)
        + "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'app',"
        " 'shiboken6')]\n"
        "print(','.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert proc.returncode == 0, f"core imported Qt modules: {proc.stdout} {proc.stderr[-2000:]}"
    assert len(names) >= 10
