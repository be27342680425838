"""The layer tree: real clicks, filter + tick matches, presets, layer range, in-place rank
edits, multi-select, non-LoRA rows, and a Llama-3-70B tree."""

from __future__ import annotations

from graftlab.app.panels.layer_tree import LayerTreeWidget
from graftlab.app.panels.tree_model import ALPHA, NAME, RANK, TRAINABLE
from graftlab.app.run.run_state import adapter_config
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig, Override
from graftlab.core.model.module_tree import build_tree
from PySide6.QtCore import QItemSelectionModel, QPoint, Qt

Q = "model.layers.1.self_attn.q_proj"

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window, 70B config


def _widget(qtbot, tree) -> LayerTreeWidget:
    w = LayerTreeWidget()
    qtbot.addWidget(w)
    w.resize(900, 700)
    w.show()
    w.set_tree(tree)
    return w


def _plan_total(w: LayerTreeWidget, tree) -> int:
    return plan_adapter(tree, adapter_config(w.model.adapter_state())).trainable_params


def test_clicking_a_checkbox_ticks_the_module_and_counts_match_the_core(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    index = w.model.index_of(Q)
    w.view.scrollTo(index)
    rect = w.view.visualRect(index)
    style = w.view.style()
    x = rect.left() + style.pixelMetric(style.PixelMetric.PM_IndicatorWidth) // 2 + 4
    with qtbot.waitSignal(w.model.selection_changed, timeout=2000):
        qtbot.mouseClick(w.view.viewport(), Qt.MouseButton.LeftButton,
                         pos=QPoint(x, rect.center().y()))
    assert w.model.selected_names() == [Q]
    assert w.model.data(index, Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    parent = w.model.index_of("model.layers.1.self_attn")
    assert w.model.data(parent, Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.PartiallyChecked
    assert w.model.total_trainable() == _plan_total(w, demo_tree) == 8 * (128 + 128)


def test_ticking_a_parent_ticks_every_capable_module_below_it(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    layer = w.model.index_of("model.layers.2")
    assert w.model.setData(layer, Qt.CheckState.Checked.value, Qt.ItemDataRole.CheckStateRole)
    assert w.model.selected_names() == [n for n in demo_tree.match("model.layers.2.*")
                                        if demo_tree.modules[n].lora]
    assert w.model.data(layer, Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.Checked
    assert w.model.total_trainable() == _plan_total(w, demo_tree)
    row = w.model.index_of("model.layers.2", TRAINABLE)
    assert w.model.data(row, Qt.ItemDataRole.DisplayRole) == f"{w.model.total_trainable():,}"


def test_modules_that_cannot_carry_lora_are_greyed_with_the_reason(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    name = "model.layers.0.input_layernorm"
    index = w.model.index_of(name)
    flags = w.model.flags(index)
    assert not flags & Qt.ItemFlag.ItemIsUserCheckable
    assert not flags & Qt.ItemFlag.ItemIsEnabled
    assert w.model.data(index, Qt.ItemDataRole.CheckStateRole) is None
    assert demo_tree.modules[name].reason in w.model.data(index, Qt.ItemDataRole.ToolTipRole)
    assert not w.model.setData(index, Qt.CheckState.Checked.value,
                               Qt.ItemDataRole.CheckStateRole)
    assert w.model.selected_names() == []


def test_filter_glob_counts_matches_and_ticks_them(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    qtbot.keyClicks(w.filter_edit, "*.mlp.*")
    qtbot.waitUntil(lambda: bool(w.matches()), timeout=2000)
    expected = [n for n in demo_tree.match("*.mlp.*")]
    capable = [n for n in expected if demo_tree.modules[n].lora]
    assert w.matches() == expected
    assert w.match_label.text() == f"{len(expected)} matches, {len(capable)} tickable"
    qtbot.mouseClick(w.tick_button, Qt.MouseButton.LeftButton)
    assert w.model.selected_names() == capable
    assert w.model.total_trainable() == _plan_total(w, demo_tree)
    # rows outside the matches are hidden, matches and their parents are shown
    att = w.model.index_of("model.layers.0.self_attn")
    assert w.view.isRowHidden(att.row(), att.parent())
    mlp = w.model.index_of("model.layers.0.mlp.up_proj")
    assert not w.view.isRowHidden(mlp.row(), mlp.parent())
    qtbot.mouseClick(w.untick_button, Qt.MouseButton.LeftButton)
    assert w.model.selected_names() == []


def test_regex_filter_and_a_broken_regex(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    w.filter_edit.setText(r"/layers\.[01]\..*(q|v)_proj$/")
    w.apply_filter()
    assert len(w.matches()) == 4
    w.filter_edit.setText("/q_proj(/")
    w.apply_filter()
    assert "not a valid regular expression" in w.filter_error.text()
    assert w.matches() == [] and not w.tick_button.isEnabled()


def test_presets_respect_the_layer_range(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    w.layer_from.setValue(1)
    w.layer_to.setValue(2)
    qtbot.mouseClick(w.preset_buttons["mlp"], Qt.MouseButton.LeftButton)
    assert w.model.selected_names() == demo_tree.preset("mlp", range(1, 3))
    w.layer_from.setValue(0)
    w.layer_to.setValue(3)
    qtbot.mouseClick(w.preset_buttons["all-linear"], Qt.MouseButton.LeftButton)
    assert w.model.selected_names() == demo_tree.preset("all-linear")
    assert w.model.total_trainable() == _plan_total(w, demo_tree)
    qtbot.mouseClick(w.preset_buttons["none"], Qt.MouseButton.LeftButton)
    assert w.model.selected_names() == [] and w.model.total_trainable() == 0


def test_rank_edited_in_place_becomes_an_override(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    w.apply_preset("attention")
    before = w.model.total_trainable()
    index = w.model.index_of(Q, RANK)
    w.view.scrollTo(index)
    w.view.edit(index)
    editor = w.view.indexWidget(index)
    assert editor is not None
    editor.selectAll()
    qtbot.keyClicks(editor, "32")
    qtbot.keyClick(editor, Qt.Key.Key_Return)  # the delegate commits on a queued call
    qtbot.waitUntil(lambda: w.model.overrides() == {Q: (32, None)}, timeout=2000)
    assert w.model.data(index, Qt.ItemDataRole.DisplayRole) == "32"
    assert w.model.data(index, Qt.ItemDataRole.FontRole).bold()
    assert w.model.total_trainable() == before + (32 - 8) * (128 + 128)
    cfg = adapter_config(w.model.adapter_state())
    assert cfg.overrides == [Override(targets=[Q], rank=32, alpha=None)]
    assert w.model.total_trainable() == plan_adapter(demo_tree, cfg).trainable_params
    assert w.model.setData(w.model.index_of(Q, ALPHA), 64.0)
    assert w.model.overrides() == {Q: (32, 64.0)}


def test_rank_zero_in_place_is_refused_with_the_core_sentence(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    w.apply_preset("attention")
    errors = []
    w.model.error.connect(errors.append)
    assert not w.model.setData(w.model.index_of(Q, RANK), 0)
    assert len(errors) == 1 and "use a rank of at least 1" in errors[0].message
    assert w.model.overrides() == {}


def test_multi_select_sets_rank_and_alpha_for_the_selection(qtbot, demo_tree):
    w = _widget(qtbot, demo_tree)
    w.apply_preset("attention")
    sel = w.view.selectionModel()
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    sel.select(w.model.index_of("model.layers.0"), flags)  # a layer: its ticked modules
    sel.select(w.model.index_of("model.layers.3.mlp.up_proj"), flags)  # unticked: gets ticked
    w.sel_rank.setValue(4)
    w.sel_alpha.setValue(8)
    qtbot.mouseClick(w.sel_apply, Qt.MouseButton.LeftButton)
    overrides = w.model.overrides()
    assert set(overrides) == set(demo_tree.preset("attention", [0])) | {
        "model.layers.3.mlp.up_proj"}
    assert set(overrides.values()) == {(4, 8.0)}
    assert w.model.total_trainable() == _plan_total(w, demo_tree)
    qtbot.mouseClick(w.sel_reset, Qt.MouseButton.LeftButton)
    assert w.model.overrides() == {}


def test_llama_70b_config_opens_expands_and_ticks_all_linear(qtbot, llama70b_config):
    # How long this takes is measured by tests/bench/bench_layer_tree_70b.py, not here.
    tree = build_tree(str(llama70b_config))
    assert len(tree.modules) == 1047
    w = _widget(qtbot, tree)
    w.set_tree(tree)
    w.view.expandAll()
    sb = w.view.verticalScrollBar()
    for value in range(0, sb.maximum(), max(1, sb.maximum() // 20)):
        sb.setValue(value)
    w.view.collapseAll()
    w.expand_default()
    w.apply_preset("all-linear")
    names = tree.preset("all-linear")
    assert len(names) == 560
    expected = plan_adapter(tree, AdapterConfig(targets=names)).trainable_params
    assert w.model.total_trainable() == expected == 103_546_880
    root = w.model.index(0, NAME)
    assert w.model.data(root, Qt.ItemDataRole.CheckStateRole) == Qt.CheckState.PartiallyChecked
