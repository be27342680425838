"""GUI state <-> run.yaml: save -> load -> save gives identical YAML and identical GUI state."""

from __future__ import annotations

from graftlab.app.run.run_state import AdapterState, adapter_config, adapter_state
from graftlab.core.config import AdapterConfig, DataConfig, Override, RunConfig, TrainingConfig
from gui_waits import open_model, wait_loaded

Q0 = "model.layers.0.self_attn.q_proj"
V3 = "model.layers.3.self_attn.v_proj"

pytest_plugins = ["gui_helpers"]  # fixtures: qsettings, make_window, 70B config


def test_save_load_save_is_identical(qtbot, make_window, tmp_path):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    w.tree_model.set_checked(["model.layers.2.mlp.down_proj"], True)
    w.tree_model.set_overrides([Q0, V3], 16, None)
    w.tree_model.set_overrides(["model.layers.2.mlp.down_proj"], 4, 8.0)
    w.adapter_panel.set_values(8, 32.0, 0.05, "rslora")
    w.data_panel.set_values(DataConfig(path="demo:qa", max_length=96, eval_fraction=0.1,
                                       max_examples=50, prompt_column="prompt"))
    w.training_panel.set_values(TrainingConfig(max_steps=7, learning_rate=3e-4, batch_size=2,
                                               output_dir=str(tmp_path / "run")))
    state = w.run_state()
    first = tmp_path / "first.yaml"
    assert w.run_files.save_run(first) == first
    text = first.read_text()
    assert "targets:" in text and "rank: 16" in text

    w2 = make_window()
    w2.run_files.load_run_file(first)
    wait_loaded(qtbot, w2)
    assert w2.last_error is None
    assert w2.run_state() == state
    second = tmp_path / "second.yaml"
    w2.run_files.save_run(second)
    assert second.read_text() == text
    assert RunConfig.load(second) == RunConfig.load(first)
    assert w2.plan.trainable_params == w.plan.trainable_params


def test_quantization_round_trips_through_run_yaml(qtbot, make_window, tmp_path):
    w = make_window()
    open_model(qtbot, w, "demo:tiny-llama")
    w.layer_tree.apply_preset("attention")
    w.model_panel.quant_combo.setCurrentText("4bit")
    w.training_panel.set_values(TrainingConfig(kernels="off", output_dir=str(tmp_path / "r")))
    first = tmp_path / "first.yaml"
    w.run_files.save_run(first)
    saved = RunConfig.load(first)
    assert saved.model.quantization == "4bit" and saved.training.kernels == "off"
    assert saved.training.gradient_checkpointing is None  # auto: on with the 4-bit base
    w2 = make_window()
    w2.run_files.load_run_file(first)
    wait_loaded(qtbot, w2)
    assert w2.model_panel.quant_combo.currentText() == "4bit"
    assert w2.run_config().model == saved.model
    second = tmp_path / "second.yaml"
    w2.run_files.save_run(second)
    assert second.read_text() == first.read_text()


def test_globs_from_a_hand_written_run_resolve_like_the_core(qtbot, make_window, tmp_path):
    hand = tmp_path / "hand.yaml"
    RunConfig(adapter=AdapterConfig(targets=["*.q_proj", "*.v_proj"], overrides=[
        Override(targets=["model.layers.0.*"], rank=2)]),
        data=DataConfig(path="demo:stories")).save(hand)
    w = make_window()
    w.run_files.load_run_file(hand)
    wait_loaded(qtbot, w)
    cfg = w.run_config()
    assert all("*" not in t for t in cfg.adapter.targets)  # stored resolved
    assert len(cfg.adapter.targets) == 8
    assert cfg.adapter.overrides == [Override(targets=[Q0, "model.layers.0.self_attn.v_proj"],
                                              rank=2, alpha=None)]
    out1, out2 = tmp_path / "a.yaml", tmp_path / "b.yaml"
    w.run_files.save_run(out1)
    w.run_files.load_run_file(out1)
    wait_loaded(qtbot, w)
    w.run_files.save_run(out2)
    assert out1.read_text() == out2.read_text()


def test_a_broken_run_file_shows_the_core_sentence(qtbot, make_window, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("adapter:\n  rnak: 8\n", encoding="utf-8")
    w = make_window()
    w.run_files.load_run_file(bad)
    assert "unknown key `adapter.rnak`" in (w.last_error or "")
    w.run_files.load_run_file(tmp_path / "missing.yaml")
    assert "does not exist" in w.last_error


def test_a_selection_that_does_not_fit_the_model_is_explained(qtbot, make_window, tmp_path):
    run = tmp_path / "other.yaml"
    RunConfig(adapter=AdapterConfig(targets=["transformer.h.0.attn.c_attn"]),
              data=DataConfig(path="demo:stories")).save(run)
    w = make_window()
    w.run_files.load_run_file(run)
    wait_loaded(qtbot, w)
    assert "matches no module" in w.tree_error.text()
    assert w.run_config().adapter.targets == []


def test_adapter_state_round_trip_without_a_window(demo_tree):
    state = AdapterState(8, 16.0, 0.0, "lora", [Q0, V3], {V3: (None, 4.0)})
    assert adapter_state(adapter_config(state), demo_tree) == state
