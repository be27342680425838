"""The export dialog asks which runtime serves the adapter and writes that runtime's format
through the same core call as `graftlab export`: PEFT folder, uniform-scale folder (vLLM),
GGUF file (llama.cpp / Ollama) or merged model. With GRAFTLAB_SCREENSHOTS=DIR it saves
export-dialog.png there."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
from graftlab.app.dialogs.export_dialog import DEFAULT_FOLDERS, ExportDialog
from graftlab.core.adapter.formats import runtime_for
from PySide6.QtCore import Qt

OVERRIDE = "model.layers.1.self_attn.q_proj"
PEFT_FILES = {"adapter_config.json", "adapter_model.safetensors", "README.md",
              "graftlab-output.json"}


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    """A run-like adapter folder on the tiny Llama, with a per-module override."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                             target_modules=["q_proj", "v_proj"],
                                             rank_pattern={OVERRIDE: 16},
                                             alpha_pattern={OVERRIDE: 32}))
    folder = tmp_path_factory.mktemp("run") / "adapter"
    pm.save_pretrained(folder)
    return folder


@pytest.fixture
def dialog(qtbot, adapter, tiny_models):
    d = ExportDialog(adapter, str(tiny_models["llama"]), "causal-lm")
    qtbot.addWidget(d)
    d.show()
    yield d
    assert d._call.wait(60_000)


def choose_and_export(qtbot, d: ExportDialog, fmt: str, out: Path) -> None:
    qtbot.mouseClick(d.runtime_buttons[fmt], Qt.MouseButton.LeftButton)
    assert d.export_format() == fmt
    assert d.explain_label.text().startswith(runtime_for(fmt).explains)
    assert Path(d.out_edit.text()).name == DEFAULT_FOLDERS[fmt]
    d.out_edit.setText(str(out))
    with qtbot.waitSignal(d._call.finished, timeout=300_000):
        qtbot.mouseClick(d.export_button, Qt.MouseButton.LeftButton)
    assert d.error_text() == "", d.error_text()


def test_peft_is_the_default_and_warns_about_per_module_scales(dialog, tmp_path, qtbot):
    assert dialog.export_format() == "peft"
    assert "per-module ranks or alphas" in dialog.explain_label.text()
    choose_and_export(qtbot, dialog, "peft", tmp_path / "peft")
    assert {p.name for p, _n in dialog.written} == PEFT_FILES
    cfg = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert cfg["rank_pattern"]  # as trained
    assert "--format gguf" in dialog.compat_label.text()  # the finding names the fix
    qtbot.mouseClick(dialog.runtime_buttons["uniform"], Qt.MouseButton.LeftButton)
    assert not dialog.files_table.isVisible() and not dialog.written  # that was for PEFT


def test_vllm_writes_one_uniform_scale(dialog, tmp_path, qtbot):
    choose_and_export(qtbot, dialog, "uniform", tmp_path / "vllm")
    assert {p.name for p, _n in dialog.written} == PEFT_FILES
    cfg = json.loads((tmp_path / "vllm" / "adapter_config.json").read_text())
    assert cfg["r"] == 16 and cfg["lora_alpha"] == 16 and cfg["rank_pattern"] == {}
    assert not any("scale" in f.rule for f in dialog.compat_findings)
    assert "Compatibility" in dialog.compat_label.text()


def test_llama_cpp_writes_a_gguf_file(dialog, tmp_path, qtbot):
    import gguf

    choose_and_export(qtbot, dialog, "gguf", tmp_path / "llama.cpp")
    assert {p.name for p, _n in dialog.written} == {"adapter.gguf", "README.md",
                                                    "graftlab-output.json"}
    reader = gguf.GGUFReader(str(tmp_path / "llama.cpp" / "adapter.gguf"))
    assert reader.fields["general.type"].contents() == "adapter"
    assert "blk.1.attn_q.weight.lora_b" in {t.name for t in reader.tensors}
    assert "llama.cpp" in dialog.compat_label.text()
    table = {dialog.files_table.item(r, 0).text() for r in range(dialog.files_table.rowCount())}
    assert "adapter.gguf" in table
    shot = os.environ.get("GRAFTLAB_SCREENSHOTS")
    if shot:
        dialog.resize(640, dialog.heightForWidth(640) if dialog.hasHeightForWidth() else 560)
        dialog.adjustSize()
        qtbot.wait(50)
        dialog.grab().save(str(Path(shot) / "export-dialog.png"))


@pytest.mark.slow
def test_merged_writes_a_full_model(dialog, tmp_path, qtbot):
    choose_and_export(qtbot, dialog, "merged", tmp_path / "merged")
    names = {p.name for p, _n in dialog.written}
    assert "config.json" in names and any(n.endswith(".safetensors") for n in names)


@pytest.mark.slow
def test_merging_a_quantized_runs_adapter_says_it_merges_into_the_unquantized_base(
        adapter, tiny_models, tmp_path, qtbot):
    import shutil

    from graftlab.core.model.quantization import QUANTIZATION_FILE

    quantized = tmp_path / "run" / "adapter"
    shutil.copytree(adapter, quantized)
    (quantized / QUANTIZATION_FILE).write_text(json.dumps({"quantization": "4bit"}))
    d = ExportDialog(quantized, str(tiny_models["llama"]), "causal-lm")
    qtbot.addWidget(d)
    d.show()
    choose_and_export(qtbot, d, "merged", tmp_path / "merged")
    assert "unquantized base weights" in d.status_label.text()
    assert d.status_label.text().startswith("Wrote ")
