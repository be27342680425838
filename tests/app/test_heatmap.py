"""The layer heatmap: grids of several architectures and of a 70B config, cell values equal to
the UpdateNorms values (and painted so), click-through with the layer tree, finished runs."""

from __future__ import annotations

import numpy as np
import pytest
from graftlab.app.panels.heatmap_panel import HeatmapPanel
from graftlab.app.plots.heatmap_grid import format_value
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig, Override
from graftlab.core.model.module_tree import build_tree
from graftlab.core.train.events import Finished, JsonlSink, Started, Step, UpdateNorms
from gui_waits import open_model
from PySide6.QtCore import QItemSelectionModel, QPoint, Qt
from PySide6.QtGui import QColor

pytest_plugins = ["gui_helpers"]  # fixtures: make_window, llama70b_config


def make_panel(qtbot, size=(640, 760)) -> HeatmapPanel:
    panel = HeatmapPanel()
    qtbot.addWidget(panel)
    panel.resize(*size)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def random_sizes(names, seed=0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {n: float(10 ** rng.uniform(-5, -1)) for n in names}


def pixel(widget, point) -> QColor:
    return widget.grab().toImage().pixelColor(point)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_grid_is_layers_by_kinds_with_ranks_from_the_plan(qtbot, tiny_models, arch):
    tree = build_tree(str(tiny_models[arch]))
    targets = tree.preset("all-linear")
    first = tree.modules[targets[0]]
    plan = plan_adapter(tree, AdapterConfig(rank=4, alpha=8, targets=targets, overrides=[
        Override(targets=[first.name], rank=2)]))
    panel = make_panel(qtbot)
    panel.show_plan(tree, plan)
    hm = panel.heatmap
    assert hm._kinds == tree.kinds() and hm._rows == tree.num_layers
    planned = {m.name: m for m in plan.modules}
    for name in hm.names():
        cell, info = hm.cell(name), tree.modules[name]
        assert (cell.layer, cell.kind) == (info.layer, info.kind)
        if name in planned:
            assert (cell.rank, cell.alpha, cell.params) == (
                planned[name].rank, planned[name].alpha, planned[name].params)
        else:
            assert cell.rank is None
    assert hm.cell(first.name).rank == 2
    # embeddings (and the LM head) sit in the strip below the grid, apart from the layers
    outside = [n for n in hm.names() if tree.modules[n].layer is None]
    assert outside and all(hm.cell_rect(n).top() > hm._geom["grid"].bottom() for n in outside)
    # unticking a module in the plan empties its cell
    plan2 = plan_adapter(tree, AdapterConfig(rank=4, alpha=8, targets=targets[1:]))
    panel.show_plan(tree, plan2)
    assert hm.cell(first.name).rank is None and hm.cell(targets[1]).rank == 4
    tip = hm.tooltip_text(targets[1])
    assert targets[1] in tip and "rank 4" in tip and "alpha 8" in tip and "parameters" in tip


def test_cell_values_equal_the_update_norms_and_are_painted(qtbot, demo_tree):
    plan = plan_adapter(demo_tree, AdapterConfig(targets=demo_tree.preset("all-linear")))
    panel = make_panel(qtbot)
    panel.show_plan(demo_tree, plan)
    hm = panel.heatmap
    names = [m.name for m in plan.modules]
    first = random_sizes(names, 1)
    last = random_sizes(names, 2)
    panel.append_events([Started("r", 10, 1, 1, "cpu", "fp32", 4), UpdateNorms(5, first),
                         Step(5, 1.0, 1e-4, 1.0, 0.1, 10.0, 100, 1.0, 1.0, 10.0),
                         UpdateNorms(10, last)])
    assert hm.mode == "values" and hm.step == 10
    assert panel.mode_combo.currentData() == "values"
    for n in names:
        assert hm.value_of(n) == last[n]
        assert f"update size ‖ΔW‖ / ‖W‖: {format_value(last[n])}" in hm.tooltip_text(n)
    qtbot.wait(10)
    colours = hm.cell_argb()
    lo = min(last, key=last.get)
    hi = max(last, key=last.get)
    # log scale: the smallest update is the darkest end of the colour map, the largest the
    # brightest; what is painted at the cell centre is that colour
    assert QColor.fromRgba(int(colours[hm._index[lo]])).lightness() < \
        QColor.fromRgba(int(colours[hm._index[hi]])).lightness()
    for n in (lo, hi, names[3]):
        r = hm.cell_rect(n)
        centre = r.center()
        centre.setY(r.top() + 2)  # above any text drawn in the cell
        assert pixel(hm, centre).rgb() == QColor.fromRgba(int(colours[hm._index[n]])).rgb()
    # back to the plan view and again to the values
    panel.mode_combo.setCurrentIndex(0)
    assert hm.mode == "plan"
    panel.mode_combo.setCurrentIndex(1)
    assert hm.mode == "values"
    # a new run starts: old values are gone until its first UpdateNorms
    panel.append_events([Started("r2", 10, 1, 1, "cpu", "fp32", 4)])
    assert not hm.has_values() and hm.mode == "plan"


def test_70b_grid_and_refresh(qtbot, llama70b_config):
    # How long a refresh takes is measured by tests/bench/bench_heatmap.py, not here.
    tree = build_tree(str(llama70b_config))
    plan = plan_adapter(tree, AdapterConfig(targets=tree.preset("all-linear"), rank=16))
    panel = make_panel(qtbot, (640, 900))
    panel.show_plan(tree, plan)
    hm = panel.heatmap
    assert (hm._rows, len(hm._kinds), len(plan.modules)) == (80, 7, 560)
    sizes = random_sizes([m.name for m in plan.modules])
    for step in range(1, 3):
        panel.append_events([UpdateNorms(step, sizes)])
        hm.repaint()
    assert all(hm.value_of(n) == v for n, v in sizes.items())
    r = hm.cell_rect("model.layers.79.mlp.down_proj")
    assert r.height() >= 2 and hm._geom["grid"].contains(r.center())
    assert hm.cell_at(r.center()) == "model.layers.79.mlp.down_proj"


def test_clicks_select_in_the_tree_and_the_tree_highlights_cells(qtbot, make_window):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("all-linear")
    w.tabs.setCurrentWidget(w.heatmap_panel)
    hm = w.heatmap_panel.heatmap
    qtbot.waitUntil(lambda: hm.cell("model.layers.2.mlp.up_proj").rank == 8)
    view = w.layer_tree.view
    for name in ("model.layers.2.mlp.up_proj", "model.layers.0.self_attn.k_proj",
                 "lm_head"):
        qtbot.mouseClick(hm, Qt.MouseButton.LeftButton, pos=hm.cell_rect(name).center())
        assert w.tree_model.name_of(view.currentIndex()) == name
        assert [w.tree_model.name_of(i) for i in view.selectionModel().selectedRows()] == [name]
        assert hm.highlighted() == [name]
    # selecting in the tree highlights the cell; a layer row highlights its whole row
    sel = view.selectionModel()
    flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | \
        QItemSelectionModel.SelectionFlag.Rows
    sel.setCurrentIndex(w.tree_model.index_of("model.layers.1.self_attn.v_proj"), flags)
    assert hm.highlighted() == ["model.layers.1.self_attn.v_proj"]
    sel.setCurrentIndex(w.tree_model.index_of("model.layers.3"), flags)
    assert hm.highlighted() == sorted(n for n in hm.names() if n.startswith("model.layers.3."))
    # ticking in the tree updates the plan view live
    w.layer_tree.apply_preset("attention")
    assert hm.cell("model.layers.2.mlp.up_proj").rank is None
    assert hm.cell("model.layers.2.self_attn.q_proj").rank == 8
    # clicking between cells (the label column) selects nothing new
    qtbot.mouseClick(hm, Qt.MouseButton.LeftButton, pos=QPoint(2, 2))
    assert w.tree_model.name_of(view.currentIndex()) == "model.layers.3"


def test_a_finished_run_shows_its_last_update_norms(qtbot, demo_tree, tmp_path):
    plan = plan_adapter(demo_tree, AdapterConfig(targets=demo_tree.preset("attention")))
    names = [m.name for m in plan.modules]
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    sink = JsonlSink(run / "metrics.jsonl")
    for step, seed in ((10, 1), (20, 2)):
        sink(UpdateNorms(step, random_sizes(names, seed)))
    sink(Finished(20, False, str(run / "adapter"), 1.0, 2.0))
    sink.close()
    panel = make_panel(qtbot)
    panel.show_plan(demo_tree, plan)
    assert panel.load_metrics(run)  # a run folder or its metrics.jsonl
    last = random_sizes(names, 2)
    assert panel.heatmap.step == 20
    assert all(panel.heatmap.value_of(n) == last[n] for n in names)
    assert panel.inspect_button.isEnabled()
    with qtbot.waitSignal(panel.inspect_requested) as blocker:
        qtbot.mouseClick(panel.inspect_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [str(run / "adapter")]
    # another model's run: the grid is laid out from the names in the file
    other = tmp_path / "other.jsonl"
    sink = JsonlSink(other)
    sink(UpdateNorms(3, {"transformer.h.0.attn.c_attn": 0.01, "transformer.h.1.attn.c_attn":
                         0.02, "transformer.h.1.mlp.c_fc": 0.03}))
    sink.close()
    assert panel.load_metrics(other)
    hm = panel.heatmap
    assert (hm._rows, hm._kinds) == (2, ["c_attn", "c_fc"])
    assert hm.value_of("transformer.h.1.mlp.c_fc") == 0.03
    # a run without update sizes says so
    empty = tmp_path / "empty.jsonl"
    JsonlSink(empty).close()
    assert not panel.load_metrics(empty)
    assert "no update sizes" in panel.error_label.text()
    assert not panel.load_metrics(tmp_path / "missing.jsonl")
    assert "cannot read" in panel.error_label.text()


@pytest.mark.slow
def test_a_real_run_feeds_the_heatmap_in_the_window(qtbot, make_window, tmp_path):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    w.data_panel.set_path("demo:stories")
    qtbot.waitUntil(lambda: not w.is_loading(), timeout=60_000)
    cfg = w.training_panel.values()
    cfg.max_steps, cfg.update_norms_every = 3, 1
    cfg.output_dir = str(tmp_path / "run")
    w.training_panel.set_values(cfg)
    norms: list[UpdateNorms] = []
    w.controller.events.connect(lambda b: norms.extend(e for e in b if isinstance(e, UpdateNorms)))
    w.start_training()
    assert w.controller.is_running(), w.last_error
    qtbot.waitUntil(lambda: not w.controller.is_running(), timeout=120_000)
    assert norms and norms[-1].step == 3
    hm = w.heatmap_panel.heatmap
    assert hm.step == 3 and set(norms[-1].sizes) == {m.name for m in w.plan.modules}
    assert all(hm.value_of(n) == v for n, v in norms[-1].sizes.items())
    assert w.heatmap_panel.inspect_button.isEnabled()
    qtbot.mouseClick(w.heatmap_panel.inspect_button, Qt.MouseButton.LeftButton)
    assert w.adapters.inspector is not None and w.adapters.inspector.isVisible()
    qtbot.waitUntil(lambda: w.adapters.inspector.info is not None, timeout=30_000)
    assert {m.name for m in w.adapters.inspector.info.modules} == set(norms[-1].sizes)
