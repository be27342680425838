"""Model panel: trusting remote code shows a visible warning."""

from __future__ import annotations

from graftlab.app.panels.model_panel import ModelPanel
from graftlab.core.config import ModelConfig


def test_remote_code_opt_in_shows_a_warning(qtbot):
    panel = ModelPanel()
    qtbot.addWidget(panel)
    assert not panel.trust_warning.isVisibleTo(panel)
    panel.trust_check.setChecked(True)
    assert panel.trust_warning.isVisibleTo(panel)
    assert panel.values().trust_remote_code
    panel.set_values(ModelConfig(source="demo:tiny-llama"))
    assert not panel.trust_warning.isVisibleTo(panel)


def test_quantization_round_trips_and_signals(qtbot):
    panel = ModelPanel()
    qtbot.addWidget(panel)
    assert panel.values().quantization == "none"
    assert [panel.quant_combo.itemText(i) for i in range(panel.quant_combo.count())] == [
        "none", "8bit", "4bit"]
    cfg = ModelConfig(source="demo:tiny-llama", quantization="4bit", num_labels=3,
                      allow_pickle_weights=True)
    panel.set_values(cfg)
    assert panel.quant_combo.currentText() == "4bit" and panel.values() == cfg
    with qtbot.waitSignal(panel.quantization_changed) as blocker:
        panel.quant_combo.setCurrentText("8bit")
    assert blocker.args == ["8bit"] and panel.values().quantization == "8bit"
