"""Runs that outlive the window: start with "Keep running when the window closes", close the
window (the run goes on), open a new window, re-attach (plots rebuilt from metrics.jsonl, then
live), pause and stop it from there."""

from __future__ import annotations

import json

import pytest
from graftlab.core.config import DataConfig, TrainingConfig
from graftlab.core.train.lifecycle import RunPhase
from graftlab.core.train.live import is_live, run_status
from gui_waits import open_model

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window


@pytest.mark.slow
def test_detached_run_survives_the_window_and_is_reattached(qtbot, make_window, tmp_path,
                                                           no_orphans):
    run_dir = tmp_path / "runs" / "kept"
    w = make_window()
    w.show()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    w.data_panel.set_values(DataConfig(path="demo:stories", max_length=32))
    w.training_panel.set_values(TrainingConfig(max_steps=1_000_000, output_dir=str(run_dir),
                                               update_norms_every=0))
    w.detached.action.setChecked(True)  # Train > Keep running when the window closes
    assert w.settings.keep_running()
    w.start_action.trigger()
    assert w.controller.keeps_running()
    qtbot.waitUntil(lambda: w.plots.point_count("loss") >= 3, timeout=180_000)
    pid = json.loads((run_dir / "live.json").read_text())["pid"]

    w.close()  # no question, no stop: the window leaves the run going
    qtbot.waitUntil(lambda: not w.isVisible() and not w.controller.is_running(), timeout=10_000)
    assert is_live(run_dir) and run_status(run_dir).state == "running"
    step_then = run_status(run_dir).step
    qtbot.waitUntil(lambda: run_status(run_dir).step > step_then, timeout=30_000)  # no window

    w2 = make_window()
    w2.training_panel.set_values(TrainingConfig(output_dir=str(run_dir.parent / "next")))
    offered: list = []
    w2.detached.chooser = lambda parent, runs: offered.append(runs) or runs[0]
    w2.show()
    assert w2.detached.offer_reattach() == run_dir
    assert offered == [[run_dir]]
    assert w2.controller.keeps_running()
    qtbot.waitUntil(lambda: w2.plots.point_count("loss") >= step_then, timeout=30_000)
    assert w2.training_panel.values().output_dir == str(run_dir)  # its run.yaml is shown
    n = w2.plots.point_count("loss")
    qtbot.waitUntil(lambda: w2.plots.point_count("loss") > n + 2, timeout=30_000)  # live

    w2.pause_action.trigger()
    qtbot.waitUntil(lambda: w2.controller.phase() is RunPhase.PAUSED, timeout=60_000)
    assert run_status(run_dir).state == "paused"
    w2.pause_action.trigger()  # continue
    qtbot.waitUntil(lambda: run_status(run_dir).state == "running", timeout=30_000)
    results: list = []
    w2.controller.finished.connect(results.append)
    w2.commands.stop_chooser = lambda parent: "save"
    w2.stop_action.trigger()
    qtbot.waitUntil(lambda: bool(results), timeout=120_000)
    assert results[0] is not None and results[0].stopped_early
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert run_status(run_dir).state == "stopped" and not is_live(run_dir)
    assert json.loads((run_dir / "live.json").read_text())["pid"] == pid  # one process
