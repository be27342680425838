"""Adapter settings and live counts: the numbers shown are the core planner's."""

from __future__ import annotations

from graftlab.app.panels.adapter_panel import AdapterPanel
from gui_waits import core_count, open_model
from PySide6.QtCore import Qt

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window, 70B config


def _shown(window) -> int:
    return int(window.adapter_panel.total_label.text().replace(",", ""))


def test_counts_follow_ticks_rank_alpha_and_variant(qtbot, make_window):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    assert _shown(w) == core_count(w) == w.plan.trainable_params == 4 * 7168
    qtbot.mouseClick(w.layer_tree.preset_buttons["all-linear"], Qt.MouseButton.LeftButton)
    assert _shown(w) == core_count(w)
    all_linear = _shown(w)
    w.adapter_panel.rank_spin.setValue(16)
    assert _shown(w) == core_count(w) == 2 * all_linear
    w.adapter_panel.variant_combo.setCurrentIndex(w.adapter_panel.variant_combo.findData("dora"))
    assert w.run_config().adapter.variant == "dora"
    assert _shown(w) == core_count(w) > 2 * all_linear
    assert "%" in w.adapter_panel.share_label.text()
    assert w.trainable_status.text().startswith(f"Trainable {_shown(w):,}")
    # one stacked bar series per module kind
    assert len(w.adapter_panel._bars) == len(w.tree.kinds())


def test_rank_zero_shows_the_core_sentence_and_keeps_the_last_valid_counts(qtbot, make_window):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    before = _shown(w)
    box = w.adapter_panel.rank_spin
    box.lineEdit().selectAll()
    qtbot.keyClicks(box, "0")
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert box.value() == 0
    assert "use a rank of at least 1" in w.adapter_panel.error_label.text()
    assert w.adapter_panel.error_label.isVisibleTo(w.adapter_panel)
    assert _shown(w) == before  # the tree keeps the last valid rank
    w.start_training()  # refused with the same sentence, nothing crashes
    assert "rank" in (w.last_error or "")
    assert not w.controller.is_running()
    box.setValue(4)
    assert not w.adapter_panel.error_label.isVisibleTo(w.adapter_panel)
    assert _shown(w) == core_count(w) == before // 2


def test_dropout_out_of_range_is_explained(qtbot):
    panel = AdapterPanel()
    qtbot.addWidget(panel)
    panel.dropout_spin.setValue(1.0)
    assert "adapter.dropout" in panel.error_label.text()
    panel.dropout_spin.setValue(0.1)
    assert panel.error_label.text() == "" or not panel.error_label.isVisibleTo(panel)
    assert panel.valid_values()[2] == 0.1
