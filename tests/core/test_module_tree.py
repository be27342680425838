"""Module tree from the meta device: structure, kinds, presets, reasons."""

from __future__ import annotations

import pytest
from graftlab.core.errors import UserError
from graftlab.core.model.module_tree import build_tree


@pytest.fixture(scope="module")
def trees(tiny_models):
    return {arch: build_tree(str(path)) for arch, path in tiny_models.items()}


def test_llama_tree_has_kinds_layers_and_exact_total(trees, tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    tree = trees["llama"]
    real = AutoModelForCausalLM.from_pretrained(str(tiny_models["llama"]))
    assert tree.total_params == sum(p.numel() for p in real.parameters())
    assert tree.model_type == "llama" and tree.task == "causal-lm" and tree.num_layers == 2
    assert tree.kinds() == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"]
    q = tree.modules["model.layers.1.self_attn.q_proj"]
    assert (q.cls, q.layer, q.kind, q.group, q.lora) == ("Linear", 1, "q_proj", "attention", True)
    assert q.shape == tuple(real.model.layers[1].self_attn.q_proj.weight.shape)
    assert q.params == q.shape[0] * q.shape[1]
    assert all(p.device.type == "cpu" for p in real.parameters())  # the real one is real
    del torch


def test_non_lora_modules_say_why(trees):
    norm = trees["llama"].modules["model.layers.0.input_layernorm"]
    assert not norm.lora and "cannot carry a LoRA adapter" in norm.reason
    container = trees["llama"].modules["model.layers.0.self_attn"]
    assert not container.lora and "container" in container.reason


def test_gpt2_conv1d_dims_and_kinds(trees):
    tree = trees["gpt2"]
    c_attn = tree.modules["transformer.h.0.attn.c_attn"]
    assert c_attn.cls == "Conv1D" and c_attn.in_features == 64 and c_attn.out_features == 192
    assert tree.kinds() == ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]


def test_presets_are_computed_from_structure(trees):
    for arch in ("llama", "qwen2", "gpt2", "bert"):
        tree = trees[arch]
        attn, mlp, every = (tree.preset(p) for p in ("attention", "mlp", "all-linear"))
        assert attn and mlp and set(attn) | set(mlp) <= set(every)
        assert not set(attn) & set(mlp)
        assert not set(tree.head) & set(every), "the output head is never in all-linear"
        assert tree.preset("none") == []
    assert trees["bert"].task == "sequence-classification"
    assert trees["bert"].head == ["classifier"]
    assert trees["llama"].preset("attention", layers=[1]) == [
        f"model.layers.1.self_attn.{k}" for k in ("q_proj", "k_proj", "v_proj", "o_proj")]


def test_glob_matching(trees):
    tree = trees["llama"]
    assert len(tree.match("model.layers.*.self_attn.q_proj")) == 2
    assert tree.match("model.layers.0.mlp.down_proj") == ["model.layers.0.mlp.down_proj"]
    assert tree.match("nothing.*") == []


def test_config_json_only_builds_70b_skeleton(tmp_path):
    # No weights exist to load; tests/bench/bench_inspect_70b.py measures how long this takes.
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, intermediate_size=28672,
                vocab_size=128256).save_pretrained(tmp_path)
    tree = build_tree(str(tmp_path / "config.json"))
    assert tree.total_params == 70_553_706_496
    assert len(tree.preset("all-linear")) == 560


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_tree(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="model_type"):
        build_tree(str(tmp_path))
