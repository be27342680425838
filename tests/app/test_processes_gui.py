"""Training → Processes above 1: the window starts torchrun through `graftlab train`, shows rank 0's
events as for one process, and pause, export-while-paused, continue and stop reach every rank."""

from __future__ import annotations

import json

import pytest
from graftlab.core.config import DataConfig, TrainingConfig
from graftlab.core.process.attached import ProcessesSession
from graftlab.core.train.lifecycle import RunPhase
from graftlab.core.train.live import is_live, run_status
from gui_waits import open_model

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window


def events(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


@pytest.mark.slow
def test_a_two_process_run_from_the_window(qtbot, make_window, tmp_path, no_orphans):
    run_dir = tmp_path / "runs" / "two"
    w = make_window()
    w.show()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    w.data_panel.set_values(DataConfig(path="demo:stories", max_length=32))
    w.training_panel.set_values(TrainingConfig(max_steps=1_000_000, output_dir=str(run_dir),
                                               update_norms_every=0, processes=2))
    panel = w.training_panel
    assert not panel.advanced.isAncestorOf(panel.fields["processes"])  # basic, not advanced
    assert w.run_config().training.processes == 2
    w.start_action.trigger()
    assert not w.controller.keeps_running()  # closing the window would stop it
    qtbot.waitUntil(lambda: w.plots.point_count("loss") >= 3, timeout=240_000)
    assert isinstance(w.controller._runner._control.session, ProcessesSession)
    assert events(run_dir, "started")[0]["world_size"] == 2

    w.pause_action.trigger()
    qtbot.waitUntil(lambda: w.controller.phase() is RunPhase.PAUSED, timeout=60_000)
    assert run_status(run_dir).state == "paused"
    saved: list = []
    w.controller.snapshot_saved.connect(saved.append)
    w.adapters.export_current_adapter(tmp_path / "mid")
    qtbot.waitUntil(lambda: bool(saved), timeout=60_000)
    assert (tmp_path / "mid" / "adapter_model.safetensors").is_file()

    w.pause_action.trigger()  # continue
    qtbot.waitUntil(lambda: run_status(run_dir).state == "running", timeout=30_000)
    n = w.plots.point_count("loss")
    qtbot.waitUntil(lambda: w.plots.point_count("loss") > n + 1, timeout=60_000)
    results: list = []
    w.controller.finished.connect(results.append)
    w.commands.stop_chooser = lambda parent: "save"
    w.stop_action.trigger()
    qtbot.waitUntil(lambda: bool(results), timeout=120_000)
    assert results[0] is not None and results[0].stopped_early
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert run_status(run_dir).state == "stopped" and not is_live(run_dir)
    steps = [e["step"] for e in events(run_dir, "step")]
    assert steps == list(range(1, steps[-1] + 1))
    last = steps[-1]

    # Run > Resume: the same two processes go on from the stop's checkpoint, live again
    w.run_files.resume_run(run_dir)
    qtbot.waitUntil(lambda: run_status(run_dir).step > last + 2, timeout=240_000)
    qtbot.waitUntil(lambda: w.plots.point_count("loss") > last + 2, timeout=30_000)
    results.clear()
    w.stop_action.trigger()
    qtbot.waitUntil(lambda: bool(results), timeout=120_000)
    steps = [e["step"] for e in events(run_dir, "step")]
    assert steps == list(range(1, steps[-1] + 1))  # every step once, across the resume
    assert [e["world_size"] for e in events(run_dir, "started")] == [2, 2]
    assert w.plots.point_count("loss") == len(steps)  # the history once, then the new steps
