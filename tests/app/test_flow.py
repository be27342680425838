"""The whole desktop flow on the demo model, with a real run: open, tick (mouse click in the
tree, filter + tick matches, a preset), counts equal the core's, data and training settings,
Start, live plots, Pause (no steps) + export the adapter as it is now, Resume, Stop (Save),
export through the export dialog, reload in plain PEFT with identical logits, and the run.yaml
round trip. With GRAFTLAB_SCREENSHOTS=DIR it also saves window-before.png and
window-training.png there."""

from __future__ import annotations

import os
from pathlib import Path

import graftlab.app.run.worker
import pytest
from graftlab.app.dialogs.export_dialog import ExportDialog
from graftlab.app.dialogs.stop_dialog import SAVE
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import DataConfig, RunConfig
from graftlab.core.model.demo import demo_model_path
from graftlab.core.train.events import Paused, Started, Step
from gui_waits import core_count, happens_within, open_model, wait_loaded
from PySide6.QtCore import QPoint, Qt

pytestmark = pytest.mark.slow  # the whole flow trains in a real child process

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window

CLICKED = "model.layers.0.mlp.up_proj"


def click_checkbox(qtbot, w, name: str) -> None:
    """A real mouse click on the module's check box in the tree view."""
    view = w.layer_tree.view
    index = w.tree_model.index_of(name)
    view.scrollTo(index)
    rect = view.visualRect(index)
    style = view.style()
    x = rect.left() + style.pixelMetric(style.PixelMetric.PM_IndicatorWidth) // 2 + 4
    with qtbot.waitSignal(w.tree_model.selection_changed, timeout=2000):
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                         pos=QPoint(x, rect.center().y()))


def assert_counts_are_the_cores(w) -> int:
    expected = plan_adapter(w.tree, w.run_config().adapter).trainable_params
    assert expected == core_count(w) == w.plan.trainable_params
    assert int(w.adapter_panel.total_label.text().replace(",", "")) == expected
    assert f"{expected:,}" in w.trainable_status.text()
    assert w.tree_model.total_trainable() == expected
    return expected


def logits(model, ids):
    import torch

    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_the_whole_flow_on_the_demo_model(qtbot, make_window, tmp_path):
    shots = os.environ.get("GRAFTLAB_SCREENSHOTS")
    w = make_window()
    w._ask_stop_on_close = lambda: True  # a failing assert never leaves a modal question
    w.show()
    qtbot.waitExposed(w)
    open_model(qtbot, w, "demo:tiny-llama")

    # tick: presets, filter + tick matches, a mouse click in the tree
    qtbot.mouseClick(w.layer_tree.preset_buttons["none"], Qt.MouseButton.LeftButton)
    assert w.tree_model.selected_names() == []
    qtbot.mouseClick(w.layer_tree.preset_buttons["attention"], Qt.MouseButton.LeftButton)
    assert w.tree_model.selected_names() == w.tree.preset("attention")
    attention = assert_counts_are_the_cores(w)
    w.layer_tree.filter_edit.setText("*.mlp.down_proj")
    w.layer_tree.apply_filter()
    qtbot.mouseClick(w.layer_tree.tick_button, Qt.MouseButton.LeftButton)
    with_down = assert_counts_are_the_cores(w)
    assert with_down > attention
    w.layer_tree.filter_edit.setText("")
    w.layer_tree.apply_filter()
    click_checkbox(qtbot, w, CLICKED)
    assert CLICKED in w.tree_model.selected_names()
    assert assert_counts_are_the_cores(w) > with_down

    # data and training settings, in the panels
    w.data_panel.set_values(DataConfig(path="demo:stories", max_length=48))
    fields = w.training_panel.fields
    fields["max_steps"].setValue(30)
    fields["batch_size"].setValue(4)
    fields["output_dir"].setText(str(tmp_path / "run"))
    wait_loaded(qtbot, w)
    assert w.data_panel.result is not None and w.data_panel.result.error is None
    if shots:
        w.tabs.setCurrentWidget(w.adapter_panel)
        qtbot.wait(300)
        w.grab().save(str(Path(shots) / "window-before.png"))

    # Start (the real runner: training in a child process); the plots fill
    assert graftlab.app.run.worker.TrainingSession is None
    batches: list = []
    results: list = []
    w.controller.events.connect(batches.append)
    w.controller.finished.connect(results.append)
    w.start_action.trigger()
    assert w.controller.is_running() and w.tabs.currentWidget() is w.monitor_split
    qtbot.waitUntil(lambda: w.plots.point_count("loss") > 0, timeout=120_000)
    if shots:  # a fuller picture for the screenshot (the run is 30 steps)
        qtbot.waitUntil(lambda: w.plots.point_count("loss") >= 12, timeout=60_000)

    def steps() -> list[int]:
        return [e.step for b in batches for e in b if isinstance(e, Step)]

    # Pause: no new steps; the adapter as it is now is exported meanwhile
    w.pause_action.trigger()
    qtbot.waitUntil(lambda: any(isinstance(e, Paused) for b in batches for e in b),
                    timeout=30_000)
    paused_at = steps()[-1]
    assert paused_at < 30, "the run ended before it could be paused"
    assert "paused" in w.eta_label.text()
    assert not happens_within(qtbot, lambda: steps()[-1] != paused_at, 300), \
        "steps arrived while paused"
    assert w.export_current_action.isEnabled()
    snapshot = tmp_path / "snapshot"
    with qtbot.waitSignal(w.controller.snapshot_saved, timeout=30_000):
        w.adapters.export_current_adapter(snapshot)
    assert (snapshot / "adapter_model.safetensors").is_file()
    assert steps()[-1] == paused_at
    if shots:
        w.plots.flush()
        qtbot.wait(300)
        w.grab().save(str(Path(shots) / "window-training.png"))

    # Resume, then Stop (Save)
    qtbot.mouseClick(w.training_panel.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: steps()[-1] > paused_at, timeout=30_000)
    w.commands.stop_chooser = lambda parent: SAVE
    with qtbot.waitSignal(w.controller.finished, timeout=60_000):
        w.stop_action.trigger()
    result = results[0]
    assert result.adapter_dir is not None and result.steps > paused_at
    assert w.plots.point_count("loss") == len(steps())
    assert w.adapters.last_adapter_dir == str(result.adapter_dir)

    # Export through the export dialog
    w.adapters.export_adapter()
    dialog = w.findChildren(ExportDialog)[-1]
    exported = tmp_path / "exported"
    dialog.out_edit.setText(str(exported))
    dialog.start_export()
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=30_000)
    assert dialog.error_text() == ""
    assert {p.name for p, _n in dialog.written} >= {"adapter_config.json",
                                                     "adapter_model.safetensors"}
    dialog.reject()

    # The export in plain PEFT on a freshly loaded base: the same logits as the trained model.
    # The training process wrote that model's weights twice more at the stop: the Trainer's
    # own checkpoint and the run's adapter folder. All three must agree exactly.
    import torch
    from graftlab.core.train.checkpoints import latest_checkpoint
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def peft_logits(adapter_dir) -> torch.Tensor:
        base = AutoModelForCausalLM.from_pretrained(demo_model_path("tiny-llama"))
        return logits(PeftModel.from_pretrained(base, str(adapter_dir)), ids)

    ids = torch.arange(2, 34).reshape(2, 16)
    checkpoint = latest_checkpoint(result.run_dir)
    assert checkpoint.step == result.steps
    expected = peft_logits(checkpoint.path)
    got = peft_logits(exported)
    assert torch.equal(got, expected), (got - expected).abs().max()
    assert torch.equal(peft_logits(result.adapter_dir), expected)
    base_only = logits(AutoModelForCausalLM.from_pretrained(demo_model_path("tiny-llama")), ids)
    assert not torch.equal(got, base_only)  # the adapter changes the model
    assert not torch.equal(peft_logits(snapshot), expected)  # trained further after the pause

    # run.yaml: save from the window, open in another, the same resolved run
    saved = w.run_files.save_run(tmp_path / "run.yaml")
    w2 = make_window()
    w2.run_files.load_run_file(saved)
    wait_loaded(qtbot, w2)
    assert w2.last_error is None
    assert w2.run_config() == w.run_config()
    run_dir_cfg = RunConfig.load(result.run_dir / "run.yaml")  # what the session trained
    assert plan_adapter(w2.tree, w2.run_config().adapter).resolved().targets == \
        run_dir_cfg.adapter.targets
    started = [e for b in batches for e in b if isinstance(e, Started)]
    assert w2.plan.trainable_params == started[0].trainable_params
