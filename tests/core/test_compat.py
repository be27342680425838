"""Each export-compatibility rule is triggered, on plans (before training) and saved adapters."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from graftlab.core.adapter.compat import check_adapter, check_plan
from graftlab.core.adapter.info import read_adapter
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig, Override
from graftlab.core.model.module_tree import build_tree


@pytest.fixture(scope="module")
def trees(tiny_models):
    return {a: build_tree(str(tiny_models[a])) for a in ("llama", "qwen2", "bert")}


def rules(issues):
    return {i.rule: i for i in issues}


def plan(tree, **kw):
    return plan_adapter(tree, AdapterConfig(**({"targets": ["*.q_proj", "*.v_proj"]} | kw)))


def test_clean_plan_has_no_issues(trees):
    assert check_plan(plan(trees["llama"]), model_type="llama", base_model="x") == []


def test_vllm_rules(trees):
    t = trees["llama"]
    assert rules(check_plan(plan(t, variant="dora")))["vllm-dora"].severity == "error"
    warn = rules(check_plan(plan(t, rank=17, alpha=34)))["vllm-max-rank"]
    assert warn.severity == "warning" and "--max-lora-rank 32" in warn.message
    assert rules(check_plan(plan(t, rank=600, alpha=600)))["vllm-max-rank"].severity == "error"
    mixed = plan(t, overrides=[Override(targets=["model.layers.0.self_attn.q_proj"], rank=4)])
    issue = rules(check_plan(mixed))["vllm-uniform-scale"]
    assert "model.layers.0.self_attn.q_proj" in issue.message and issue.source
    cls = plan_adapter(trees["bert"], AdapterConfig(targets=["*.query"]))
    assert rules(check_plan(cls, model_type="bert"))["vllm-modules-to-save"].target == "vllm"


def test_size_and_llamacpp_rules(trees):
    t = trees["llama"]
    big = rules(check_plan(plan(t, targets=["model.embed_tokens", "*.q_proj"])))
    assert big["large-file"].target == "size"
    assert "llamacpp-unmapped" in rules(check_plan(plan_adapter(
        trees["bert"], AdapterConfig(targets=["*.query"])), model_type="bert"))
    tied = plan(trees["qwen2"], targets=["lm_head"])
    assert "llamacpp-tied-head" in rules(check_plan(tied, model_type="qwen2", tied=True))
    rs = rules(check_plan(plan(t, variant="rslora")))["llamacpp-scale"]
    assert "--lora-scaled" in rs.message and "√r" in rs.message
    alpha = plan(t, overrides=[Override(targets=["*.v_proj"], alpha=3)])
    assert "alpha_pattern" in rules(check_plan(alpha))["llamacpp-scale"].message
    assert "llamacpp-extra-tensors" in rules(check_plan(plan(t, variant="dora")))
    assert "missing-base-model" in rules(check_plan(plan(t), base_model=""))


def test_rules_on_saved_adapters(tmp_path):
    from graftlab.core.model.demo import build_config
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(build_config("llama", 128))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lora_bias on bias-less layers
        pm = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], lora_bias=True,
                                             modules_to_save=["lm_head"]))
        pm.save_pretrained(str(tmp_path / "a"))
    found = rules(check_adapter(read_adapter(tmp_path / "a"), {"model_type": "llama"}))
    assert {"vllm-modules-to-save", "missing-base-model", "llamacpp-extra-tensors"} <= set(found)
    assert "lora_B bias" in found["llamacpp-extra-tensors"].message
    cfg = tmp_path / "a" / "adapter_config.json"
    cfg.write_text(json.dumps(json.loads(cfg.read_text()) | {"base_model_name_or_path": "m"}))
    assert "missing-base-model" not in rules(check_adapter(read_adapter(tmp_path / "a")))
    assert all(i.to_json()["source"] for i in found.values())
