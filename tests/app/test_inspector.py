"""The adapter inspector window: adapters written by plain PEFT (rank/alpha patterns, DoRA), a
Graftlab run's adapter, comparing two adapters, and folders that are not adapters."""

from __future__ import annotations

import pytest
from graftlab.app.windows.inspector_window import InspectorWindow
from graftlab.core.adapter.info import read_adapter
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

pytest_plugins = ["gui_helpers"]  # fixtures: make_window
READ_MS = 60_000


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, save_peft):
    root = tmp_path_factory.mktemp("adapters")
    targets = ["q_proj", "v_proj", "down_proj"]
    save_peft(root / "patterned", r=4, lora_alpha=8, target_modules=targets,
              rank_pattern={r"^model\.layers\.0\.self_attn\.q_proj": 6, "down_proj": 2},
              alpha_pattern={"v_proj": 3})
    save_peft(root / "other", seed=1, r=4, lora_alpha=8,
              target_modules=["q_proj", "v_proj", "o_proj"])
    save_peft(root / "dora", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
              use_dora=True)
    save_peft(root / "gpt2", "gpt2", r=4, lora_alpha=8, target_modules=["c_attn"],
              use_rslora=True)
    return {name: root / name for name in ("patterned", "other", "dora", "gpt2")}


@pytest.fixture(scope="module")
def run_adapter(tmp_path_factory):
    """A Graftlab run: 3 steps of TrainingSession on demo:tiny-llama with demo:stories."""
    from graftlab.core.config import RunConfig
    from graftlab.core.train.session import TrainingSession

    cfg = RunConfig()
    cfg.model.source = "demo:tiny-llama"
    cfg.data.path = "demo:stories"
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj", "model.layers.*.mlp.up_proj"]
    cfg.training.max_steps = 3
    cfg.training.output_dir = str(tmp_path_factory.mktemp("inspect") / "run")
    return TrainingSession(cfg).run().adapter_dir


@pytest.fixture
def inspector(qtbot):
    w = InspectorWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    assert w._read.wait(30_000) and w._compare.wait(30_000)


def open_and_wait(qtbot, w, folder) -> None:
    w.open_folder(folder)
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=READ_MS)


def test_patterned_peft_adapter(qtbot, inspector, adapters):
    w = inspector
    open_and_wait(qtbot, w, adapters["patterned"])
    info = read_adapter(adapters["patterned"])
    assert w.error_label.isHidden()
    assert w.modules_model.rowCount() == len(info.modules) == 6
    assert w.summary["Modules"].text() == "6 adapted modules"
    assert "ranks used 2, 4, 6" in w.summary["Rank / alpha"].text()
    assert "1 alpha patterns" in w.summary["Rank / alpha"].text()
    assert w.summary["Base model"].text().startswith("not recorded")
    assert "KiB" in w.summary["File size"].text()
    # table: per-module values as the core reads them, sortable by any column
    model = w.modules_model
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    assert headers == ["Module", "Rank", "Alpha", "Scale", "Params", "Dtype", "‖ΔW‖_F",
                       "Eff. rank"]
    w.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    assert [m.rank for m in model.rows] == sorted((m.rank for m in info.modules), reverse=True)
    assert model.rows[0].name == "model.layers.0.self_attn.q_proj"
    w.table.sortByColumn(6, Qt.SortOrder.AscendingOrder)
    norms = [m.delta_norm for m in model.rows]
    assert norms == sorted(norms)
    v1 = info.module("model.layers.1.self_attn.v_proj")
    row = model.row_of(lambda m: m.name == v1.name)
    assert model.index(row, 2).data() == "3" and model.index(row, 5).data() == "float32"
    # selecting a module shows its spectrum; the heatmap holds the delta norms
    w.select_module(v1.name)
    assert w.spectrum_values() == pytest.approx(v1.singular_values)
    assert "effective rank" in w.spectrum_label.text()
    assert w.heatmap.highlighted() == [v1.name]
    assert all(w.heatmap.value_of(m.name) == m.delta_norm for m in info.modules)
    assert w.heatmap._kinds == ["q_proj", "v_proj", "down_proj"] and w.heatmap._rows == 2
    # clicking a heatmap cell selects that module's row
    w.tabs.setCurrentWidget(w.heatmap)
    q0 = "model.layers.0.self_attn.q_proj"
    qtbot.mouseClick(w.heatmap, Qt.MouseButton.LeftButton, pos=w.heatmap.cell_rect(q0).center())
    assert w.selected_module().name == q0
    # compatibility: alpha_pattern gives one module another scale, which vLLM ignores
    rules = {i.rule for i in w.issues}
    assert {"vllm-uniform-scale", "llamacpp-scale", "missing-base-model"} <= rules
    assert w.tabs.tabText(2) == f"Compatibility ({len(w.issues)})"
    texts = [w.compat_table.item(r, 2).text() for r in range(w.compat_table.rowCount())]
    sources = [w.compat_table.item(r, 3).text() for r in range(w.compat_table.rowCount())]
    assert any("vLLM applies one scale" in t for t in texts)
    assert any("lora_weights.py" in s for s in sources)


def test_dora_and_rslora_adapters(qtbot, inspector, adapters):
    w = inspector
    open_and_wait(qtbot, w, adapters["dora"])
    assert w.summary["Variant"].text() == "DoRA"
    assert "vllm-dora" in {i.rule for i in w.issues}
    w.select_module(w.modules_model.rows[0].name)
    assert "DoRA magnitude" in w.spectrum_label.text()
    open_and_wait(qtbot, w, adapters["gpt2"])
    assert w.summary["Variant"].text().startswith("rsLoRA")
    assert w.heatmap._kinds == ["c_attn"]
    assert w.modules_model.rows[0].scale == pytest.approx(8 / 2)


@pytest.mark.slow
def test_a_run_adapter_and_its_base_model(qtbot, inspector, run_adapter):
    w = inspector
    open_and_wait(qtbot, w, run_adapter / "adapter_config.json")  # a file opens its folder
    info = read_adapter(run_adapter)
    assert w.info is not None and w.info.path == run_adapter
    from graftlab.core.model.demo import demo_model_path

    real = str(demo_model_path("tiny-llama").resolve())  # what llama.cpp's converter can read
    assert w.summary["Base model"].text() == info.base_model == real
    assert w.modules_model.rowCount() == 8
    assert w.heatmap._rows == 4 and w.heatmap._kinds == ["q_proj", "up_proj"]
    assert all(w.heatmap.value_of(m.name) > 0 for m in info.modules)  # trained: B is not 0
    assert "missing-base-model" not in {i.rule for i in w.issues}
    assert w.compat_table.rowCount() == 1 and w.compat_table.item(0, 0).text().startswith("No")


def test_compare_two_adapters(qtbot, inspector, adapters):
    w = inspector
    open_and_wait(qtbot, w, adapters["patterned"])
    assert w.compare_button.isEnabled()
    w.compare_with(adapters["other"])
    qtbot.waitUntil(lambda: not w.is_busy() and w.comparison is not None, timeout=READ_MS)
    assert w.tabs.currentWidget() is w.compare_page
    c = w.comparison
    names = {m.name for m in w.compare_model.rows}
    assert names == {f"model.layers.{i}.self_attn.{k}" for i in (0, 1) for k in ("q_proj",
                                                                               "v_proj")}
    assert [w.only_a.item(i).text() for i in range(w.only_a.count())] == c.only_a == [
        "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert w.only_b.count() == 2 and "o_proj" in w.only_b.item(0).text()
    row = w.compare_model.rows[0]
    assert row.cosine is not None and -1 <= row.cosine <= 1
    assert row.norm_ratio == pytest.approx(row.norm_b / row.norm_a)
    assert "4 modules in both, 2 only in A, 2 only in B" in w.compare_label.text()
    # comparing with itself: cosine 1 and ratio 1 everywhere
    w.compare_with(adapters["patterned"])
    qtbot.waitUntil(lambda: not w.is_busy() and w.comparison.b.path == adapters["patterned"],
                    timeout=READ_MS)
    assert all(r.cosine == pytest.approx(1.0) and r.norm_ratio == pytest.approx(1.0)
               for r in w.compare_model.rows)
    assert w.compare_model.index(0, 4).data() == "+1.000"
    # a bad second folder: its sentence, and the first adapter stays shown
    w.compare_with(adapters["patterned"].parent)
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=READ_MS)
    assert "is not a PEFT adapter folder" in w.error_label.text()
    assert w.modules_model.rowCount() == 6


def test_what_is_not_an_adapter_is_one_sentence(qtbot, inspector, adapters, tmp_path):
    w = inspector
    open_and_wait(qtbot, w, tmp_path)
    assert w.error_label.isVisible()
    msg = w.error_label.text()
    assert "is not a PEFT adapter folder" in msg and "\n" not in msg and "Traceback" not in msg
    assert w.info is None and not w.compare_button.isEnabled()
    bad = tmp_path / "truncated"
    bad.mkdir()
    src = adapters["patterned"]
    (bad / "adapter_config.json").write_bytes((src / "adapter_config.json").read_bytes())
    (bad / "adapter_model.safetensors").write_bytes(
        (src / "adapter_model.safetensors").read_bytes()[:200])
    open_and_wait(qtbot, w, bad)
    assert "truncated" in w.error_label.text()
    # the window stays usable: a real adapter opens next and the message goes away
    open_and_wait(qtbot, w, src)
    assert w.info is not None and w.error_label.isHidden()
    # a failure after a good adapter keeps showing the good one
    open_and_wait(qtbot, w, tmp_path / "nope")
    assert "is not a folder" in w.error_label.text() and w.modules_model.rowCount() == 6


def test_drop_one_folder_inspects_two_compare(qtbot, inspector, adapters):
    w = inspector

    def drop(*folders) -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(f)) for f in folders])
        event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                           Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        w.dropEvent(event)

    drop(adapters["dora"])
    qtbot.waitUntil(lambda: not w.is_busy() and w.info is not None, timeout=READ_MS)
    assert w.info.path == adapters["dora"]
    drop(adapters["patterned"], adapters["other"])
    qtbot.waitUntil(lambda: not w.is_busy() and w.comparison is not None, timeout=READ_MS)
    assert w.info.path == adapters["patterned"] and w.comparison.b.path == adapters["other"]


@pytest.mark.qt_log_ignore("This plugin does not support raise")  # offscreen: no stacking
def test_tools_menu_opens_the_inspector(qtbot, make_window, adapters, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    w = make_window()
    assert w.inspect_action.shortcut().toString() == "Ctrl+I"
    tools = next(a.menu() for a in w.menuBar().actions() if a.text() == "T&ools")
    assert [a.text() for a in tools.actions() if not a.isSeparator()] == [
        "Runs &library…", "&Inspect adapter…", "&Compare adapters…"]
    answers = iter([str(adapters["patterned"]), str(adapters["other"])])
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: next(answers))
    w.compare_action.trigger()
    insp = w.adapters.inspector
    assert insp is not None and insp.isVisible()
    qtbot.waitUntil(lambda: not insp.is_busy() and insp.comparison is not None,
                    timeout=READ_MS)
    assert insp.info.path == adapters["patterned"]
    monkeypatch.setattr(QFileDialog, "getExistingDirectory",
                        lambda *a, **k: str(adapters["dora"]))
    w.inspect_action.trigger()
    assert w.adapters.inspector is insp  # one window, reused
    qtbot.waitUntil(lambda: not insp.is_busy() and insp.info.path == adapters["dora"],
                    timeout=READ_MS)


@pytest.mark.parametrize("agree", [False, True])
def test_the_base_an_adapter_names_is_never_fetched_without_asking(qtbot, tmp_path, adapters,
                                                                    tiny_models, monkeypatch,
                                                                    agree):
    import json
    import shutil

    from fake_hub import FakeHub
    from huggingface_hub import constants

    hub = FakeHub("acme/huge-model", tiny_models["llama"])
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    folder = tmp_path / "untrusted"
    shutil.copytree(adapters["other"], folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "acme/huge-model"  # 140 GB, say
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    w = InspectorWindow()
    qtbot.addWidget(w)
    with qtbot.waitSignal(w._read.finished, timeout=READ_MS):
        w.open_folder(folder)
    assert hub.requests == []  # opening fetched nothing at all
    assert "not on this machine" in w.summary["Base model"].text()
    assert w.fetch_base_button.isVisibleTo(w)
    asked = []
    w.confirm_fetch = lambda window, base: asked.append(base) or agree
    if agree:
        with qtbot.waitSignal(w._read.finished, timeout=READ_MS):
            qtbot.mouseClick(w.fetch_base_button, Qt.MouseButton.LeftButton)
        assert {p.rsplit("/", 1)[-1] for _m, p in hub.requests if "/resolve/" in p} == {
            "config.json"}
        assert not w.fetch_base_button.isVisibleTo(w)
    else:
        qtbot.mouseClick(w.fetch_base_button, Qt.MouseButton.LeftButton)
        assert hub.requests == []
    assert asked == ["acme/huge-model"]
    assert hub.weight_requests() == []
    hub.close()
