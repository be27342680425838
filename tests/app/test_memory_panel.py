"""The memory estimate and compatibility warnings shown before Start."""

from __future__ import annotations

import graftlab.core.train.memory_estimate as memory_estimate
import pytest
from graftlab.app.panels.memory_panel import MemoryInputs, MemoryPanel
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig, TrainingConfig
from graftlab.core.train.memory_estimate import estimate_memory
from gui_waits import open_model

pytest_plugins = ["gui_helpers"]  # fixtures: make_window, demo_tree
GiB = 2**30


@pytest.fixture
def small_device(monkeypatch):
    """A 2 GiB device with 1.5 GiB free, so the batch size decides the verdict."""
    monkeypatch.setattr(memory_estimate, "_device_memory", lambda device: (2 * GiB, 1536 * 2**20))


def test_verdict_changes_with_batch_size(qtbot, demo_tree, small_device):
    plan = plan_adapter(demo_tree, AdapterConfig(targets=demo_tree.preset("all-linear")))
    inputs = MemoryInputs(demo_tree, plan, TrainingConfig(batch_size=1), 256)
    panel = MemoryPanel()
    qtbot.addWidget(panel)
    panel.set_inputs(lambda: inputs)
    panel.refresh()
    est = panel.estimate
    assert est == estimate_memory(demo_tree, plan, inputs.training, 256, "cpu")
    assert panel.verdict() == "fits" and panel.verdict_label.text().startswith("Fits")
    assert "#2e9e4f" in panel.verdict_label.styleSheet()
    for key, label in panel.part_labels.items():
        assert label.text() != "–", key
    assert sum(n for n, _ in panel.bar.parts) == est.total
    verdicts = {}
    for batch in (1, 16, 64, 512):
        inputs.training = TrainingConfig(batch_size=batch)
        panel.schedule()
        qtbot.waitUntil(lambda b=batch: panel.estimate.notes[0].count(f"batch {b} ×") == 1)
        verdicts[batch] = panel.verdict()
    assert verdicts[1] == "fits" and verdicts[512] == "will not fit"
    assert "#c0392b" in panel.verdict_label.styleSheet()
    assert panel.verdict_label.text().startswith("Will not fit")
    # checkpointing brings the activations down
    act = panel.estimate.breakdown["activations"]
    inputs.training = TrainingConfig(batch_size=512, gradient_checkpointing=True)
    panel.refresh()
    assert panel.estimate.breakdown["activations"] < act


def test_nothing_ticked_shows_no_estimate(qtbot):
    panel = MemoryPanel()
    qtbot.addWidget(panel)
    panel.set_inputs(lambda: None)
    panel.refresh()
    assert panel.estimate is None and "tick modules" in panel.verdict_label.text()


def test_compatibility_warnings_with_reason_and_source(qtbot, demo_tree):
    panel = MemoryPanel()
    qtbot.addWidget(panel)
    plan = plan_adapter(demo_tree, AdapterConfig(rank=32, alpha=64, targets=[
        *demo_tree.preset("attention"), "model.embed_tokens"]))
    panel.set_inputs(lambda: MemoryInputs(demo_tree, plan, TrainingConfig(), 128))
    panel.refresh()
    rules = {i.rule for i in panel.issues}
    assert {"vllm-max-rank", "large-file"} <= rules
    text = panel.compat_label.text()
    assert "--max-lora-rank 32" in text and "vllm/config/lora.py" in text  # reason and source
    plan = plan_adapter(demo_tree, AdapterConfig(targets=demo_tree.preset("attention")))
    panel.set_inputs(lambda: MemoryInputs(demo_tree, plan, TrainingConfig(), 128))
    panel.refresh()
    assert panel.issues == [] and panel.compat_label.text().startswith("No warnings")


def test_window_updates_the_estimate_before_start(qtbot, make_window, small_device):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("all-linear")
    w.tabs.setCurrentWidget(w.training_panel)
    panel = w.memory_panel
    assert panel.parent() is w.training_panel and panel.isVisibleTo(w)  # on the Training tab
    layout = w.training_panel.layout()
    buttons = next(i for i in range(layout.count())
                   if layout.itemAt(i).layout() is not None
                   and layout.itemAt(i).layout().indexOf(w.training_panel.start_button) >= 0)
    assert layout.indexOf(panel) < buttons  # above Start
    qtbot.waitUntil(lambda: panel.estimate is not None
                    and panel.estimate.breakdown["adapter"] == w.plan.trainable_params * 4)
    w.training_panel.fields["batch_size"].setValue(512)
    qtbot.waitUntil(lambda: panel.verdict() == "will not fit")
    w.training_panel.fields["batch_size"].setValue(1)
    qtbot.waitUntil(lambda: panel.verdict() == "fits")
    before = panel.estimate.breakdown["activations"]
    w.data_panel.max_length_spin.setValue(w.data_panel.max_length_spin.value() * 4)
    qtbot.waitUntil(lambda: panel.estimate.breakdown["activations"] > before)
    before = panel.estimate.breakdown["adapter"]
    w.layer_tree.apply_preset("attention")  # the selection changes the adapter part
    qtbot.waitUntil(lambda: panel.estimate.breakdown["adapter"] < before)
    w.adapter_panel.rank_spin.setValue(64)  # and so does the rank, with a vLLM warning
    qtbot.waitUntil(lambda: "vllm-max-rank" in {i.rule for i in panel.issues})


def test_copy_plan_copies_what_graftlab_plan_prints(qtbot, demo_tree, small_device):
    """The window's pre-flight is `graftlab plan`'s: the same RunPlan, the same text."""
    from graftlab.core.config import DataConfig, RunConfig
    from graftlab.core.train.device import CPU_ONLY
    from graftlab.core.train.preflight import assemble_plan
    from PySide6.QtGui import QGuiApplication

    adapter = AdapterConfig(targets=demo_tree.preset("all-linear"))
    plan = plan_adapter(demo_tree, adapter)
    run = RunConfig(adapter=adapter, data=DataConfig(max_length=256),
                    training=TrainingConfig(batch_size=512))
    panel = MemoryPanel()
    qtbot.addWidget(panel)
    assert not panel.copy_button.isEnabled()
    panel.set_inputs(lambda: MemoryInputs(demo_tree, plan, run.training, 256, run=run))
    panel.refresh()
    expected = assemble_plan(run, demo_tree, plan, CPU_ONLY).to_text()
    assert panel.copy_button.isEnabled() and panel.plan_text() == expected
    QGuiApplication.clipboard().clear()
    panel.copy_button.click()
    assert QGuiApplication.clipboard().text() == expected
    assert "will not fit" in expected and "the largest part is" in expected
    assert "The run needs about" in panel.verdict_label.text()  # the fit sentence, shown
