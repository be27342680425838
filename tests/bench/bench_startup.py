"""Start-up: `graftlab inspect` of a Llama-3-70B config.json, and time to the first window.

Run: python tests/bench/bench_startup.py [--repeats 3]
All times are wall clock from process launch (interpreter start included), best of
`--repeats` (the machine may be shared). Measured:

- inspect: `python -m graftlab.core.cli inspect CONFIG --json` (torch-free path for Llama-family
  configs), and the same tree built through the meta-device skeleton (torch + transformers),
  and a bare `import torch` for the floor of any path that needs torch. Target: <= 3 s.
- window: a child process (QT_QPA_PLATFORM=offscreen) imports
  graftlab.app.windows.main_window, shows MainWindow(open_demo=False), processes events once,
  and reports which heavy libraries were already imported by then. Target: <= 1.5 s. Measured
  again with the training panel's accelerator probe (a child process that imports torch)
  replaced by a constant, to show its cost.
Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLAMA3_70B = dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, intermediate_size=28672, vocab_size=128256,
                  max_position_embeddings=131072, rope_theta=500000.0,
                  tie_word_embeddings=False, dtype="bfloat16")
HEAVY = ["torch", "transformers", "peft", "datasets", "accelerate", "pyqtgraph"]

WINDOW = """
import sys
from PySide6.QtWidgets import QApplication
if "--no-probe" in sys.argv:  # what the window costs without the probe's child process
    import graftlab.app.panels.training_panel as panel
    panel.probe_accelerator = lambda: {"cuda": False, "bf16": False, "name": "CPU"}
app = QApplication([sys.argv[0]])
from graftlab.app.windows.main_window import MainWindow
window = MainWindow(open_demo=False)
window.show()
app.processEvents()
print("SHOWN", ",".join(m for m in %r if m in sys.modules), flush=True)
""" % (HEAVY,)  # noqa: UP031

SKELETON = """
import sys
from graftlab.core.model.module_tree import build_tree
print(build_tree(sys.argv[1]).total_params)
"""


def wall(cmd: list[str], env: dict[str, str], until: str | None = None) -> tuple[float, str]:
    """Seconds from launch to exit, or to the first stdout line starting with `until`."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    out = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        out += line
        if until and line.startswith(until):
            elapsed = time.perf_counter() - t
            proc.kill()
            proc.wait()
            return elapsed, line
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}")
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TOKENIZERS_PARALLELISM="false")
    py = sys.executable
    results: dict[str, list[float]] = {"inspect": [], "skeleton": [], "torch": [], "window": [],
                                       "window_no_probe": []}
    with tempfile.TemporaryDirectory() as tmp:
        env["GRAFTLAB_CACHE"] = str(Path(tmp) / "cache")
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                   "hidden_act": "silu", **LLAMA3_70B}))
        count = None
        loaded = ""
        for _ in range(a.repeats):  # alternate the kinds so load spikes hit all of them
            t, out = wall([py, "-m", "graftlab.core.cli", "inspect", str(cfg), "--json"], env)
            results["inspect"].append(t)
            count = json.loads(out)["total_params"]
            t, out = wall([py, "-c", SKELETON, str(cfg)], env)
            results["skeleton"].append(t)
            assert int(out.split()[-1]) == count
            results["torch"].append(wall([py, "-c", "import torch"], env)[0])
            t, line = wall([py, "-c", WINDOW], env, until="SHOWN")
            results["window"].append(t)
            loaded = line.split(" ", 1)[1].strip() if " " in line else ""
            t, _ = wall([py, "-c", WINDOW, "--no-probe"], env, until="SHOWN")
            results["window_no_probe"].append(t)
    best = {k: round(min(v), 2) for k, v in results.items()}
    print(json.dumps({
        "bench": "startup",
        "inspect_70b_s": best["inspect"], "inspect_target_s": 3.0,
        "inspect_params": count, "exact": count == 70_553_706_496,
        "skeleton_path_s": best["skeleton"], "import_torch_s": best["torch"],
        "window_s": best["window"], "window_target_s": 1.5,
        "window_heavy_imports": loaded.split(",") if loaded else [],
        "window_without_torch_probe_s": best["window_no_probe"],
        "all_s": {k: [round(x, 2) for x in v] for k, v in results.items()},
    }))


if __name__ == "__main__":
    main()
