"""The accelerator probe runs out of the window's process: time to the device label, and what
the window's own process has imported once it has answered.

Run: python tests/bench/bench_probe.py
A child process (QT_QPA_PLATFORM=offscreen) shows MainWindow(open_demo=False), starts the
training panel's probe at once (the window normally waits 1.5 s after its first paint) and
reports the seconds until the label says where the run will train, and which of torch,
transformers and peft its own process has imported then (none is expected: the probe's child
imports torch and initialises CUDA, the window does not). Prints a final JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

WINDOW = """
import sys, time
from PySide6.QtWidgets import QApplication
app = QApplication([sys.argv[0]])
from graftlab.app.windows.main_window import MainWindow
window = MainWindow(open_demo=False, probe_device=False)
window.show()
app.processEvents()
panel = window.training_panel
t0 = time.perf_counter()
panel._start_probe()
while panel.accelerator() is None and time.perf_counter() - t0 < 300:
    app.processEvents()
    time.sleep(0.01)
heavy = [m for m in ("torch", "transformers", "peft") if m in sys.modules]
print("PROBED", round(time.perf_counter() - t0, 2), ",".join(heavy) or "-",
      panel.device_label.text(), flush=True)
window.close()
"""


def main() -> int:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", GRAFTLAB_PRESTART="0")
    out = subprocess.run([sys.executable, "-c", WINDOW], env=env, capture_output=True,
                         text=True, timeout=600, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("PROBED"))
    _tag, seconds, heavy, label = line.split(" ", 3)
    print(json.dumps({"bench": "probe", "probe_answer_s": float(seconds),
                      "window_process_imported": [] if heavy == "-" else heavy.split(","),
                      "label": label}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
