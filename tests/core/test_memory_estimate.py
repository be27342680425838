"""Memory estimate: derived dimensions, monotonicity, checkpointing, verdicts."""

from __future__ import annotations

import dataclasses

import graftlab.core.train.memory_estimate as me
import pytest
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig, TrainingConfig
from graftlab.core.model.module_tree import build_tree
from graftlab.core.train.device import Accelerator

GB = 2**30


@pytest.fixture(scope="module")
def llama(tiny_models):
    tree = build_tree(str(tiny_models["llama"]))
    return tree, plan_adapter(tree, AdapterConfig(targets=tree.preset("all-linear")))


def est(tree, plan, batch=4, seq=128, ckpt=False, **kw):
    return me.estimate_memory(tree, plan, TrainingConfig(batch_size=batch,
                                                         gradient_checkpointing=ckpt),
                              seq, **kw)


def test_dims_from_tree(tiny_models, llama):
    d = me.model_dims(llama[0])
    assert (d.hidden, d.layers, d.ffn, d.kv_width, d.gated) == (64, 2, 128, 32, True)
    assert d.vocab == llama[0].modules["lm_head"].out_features
    g = me.model_dims(build_tree(str(tiny_models["gpt2"])), {"n_head": 4, "attn_pdrop": 0.1})
    assert (g.hidden, g.ffn, g.gated, g.heads, g.attn_dropout) == (64, 256, False, 4, 0.1)


def test_breakdown_and_monotone(llama):
    tree, plan = llama
    e = est(tree, plan)
    assert set(e.breakdown) == {"weights", "adapter", "gradients", "optimizer", "activations",
                                "overhead"}
    assert e.total == sum(e.breakdown.values())
    assert e.breakdown["weights"] == tree.total_params * 4
    assert e.breakdown["optimizer"] == 2 * e.breakdown["adapter"] == 8 * plan.trainable_params
    acts = [est(tree, plan, batch=b).breakdown["activations"] for b in (1, 2, 8)]
    assert acts == sorted(acts) and len(set(acts)) == 3
    acts = [est(tree, plan, seq=s).breakdown["activations"] for s in (64, 256, 1024)]
    assert acts == sorted(acts) and len(set(acts)) == 3
    full = est(tree, plan, seq=1024).breakdown["activations"]
    assert est(tree, plan, seq=1024, ckpt=True).breakdown["activations"] < full
    dora = plan_adapter(tree, AdapterConfig(targets=tree.preset("all-linear"), variant="dora"))
    assert est(tree, dora).breakdown["activations"] > est(tree, plan).breakdown["activations"]
    assert e.to_json()["verdict"] in ("fits", "tight", "will not fit")


@pytest.mark.parametrize("free,verdict", [(100 * GB, "fits"), (None, "tight"),
                                          (1, "will not fit")])
def test_verdicts(llama, monkeypatch, free, verdict):
    tree, plan = llama
    need = est(tree, plan).total
    free = free if free is not None else int(need / 0.9)
    monkeypatch.setattr(me, "_device_memory", lambda device: (200 * GB, free))
    assert est(tree, plan).verdict == verdict


def test_bf16_on_gpu_halves_weights(llama):
    tree, plan = llama
    cpu = est(tree, plan)
    gpu_accel = Accelerator(cuda=True, bf16=True, name="GPU", total_bytes=80 * GB,
                            free_bytes=70 * GB)
    gpu = me.estimate_memory(tree, plan, dataclasses.replace(TrainingConfig(batch_size=4),
                                                             precision="bf16"), 128, "cuda",
                             accel=gpu_accel)
    assert gpu.breakdown["weights"] * 2 == cpu.breakdown["weights"]
    assert gpu.device == "cuda" and gpu.breakdown["overhead"] == me.CUDA_CONTEXT
    assert (gpu.device_total, gpu.device_free) == (80 * GB, 70 * GB)
    assert est(tree, plan, dtype_bytes=2).breakdown["weights"] == tree.total_params * 2


def test_auto_precision_on_a_gpu_without_bf16_keeps_fp32_weights(llama):
    """The estimate follows the session's rule: bf16 only where the GPU supports it."""
    tree, plan = llama
    old_gpu = Accelerator(cuda=True, bf16=False, name="T4-like", total_bytes=16 * GB,
                          free_bytes=15 * GB)
    auto = TrainingConfig(batch_size=4)  # device auto, precision auto
    est_old = me.estimate_memory(tree, plan, auto, 128, "auto", accel=old_gpu)
    assert est_old.device == "cuda" and est_old.breakdown["weights"] == tree.total_params * 4
    new_gpu = dataclasses.replace(old_gpu, bf16=True)
    est_new = me.estimate_memory(tree, plan, auto, 128, "auto", accel=new_gpu)
    assert est_new.breakdown["weights"] == tree.total_params * 2


# ---- quantized bases (model.quantization) -------------------------------------------------
GPU = Accelerator(cuda=True, bf16=True, name="GPU", total_bytes=80 * GB, free_bytes=80 * GB)


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_weights_count_their_state(llama, quantization):
    tree, plan = llama
    layer_linear = [m for m in tree.modules.values() if m.cls == "Linear" and m.layer is not None]
    n = sum(m.in_features * m.out_features for m in layer_linear)
    assert "lm_head" in tree.modules and tree.modules["lm_head"].layer is None  # kept
    q_bytes, q_params, largest = me.quantized_weights(tree, plan, quantization)
    assert q_params == n and largest == max(m.in_features * m.out_features for m in layer_linear)
    if quantization == "4bit":  # NF4 nibbles + 8-bit absmax per 64 + fp32 absmax per 256 blocks
        assert q_bytes == int(n / 2 + n / 64 + 4 * n / (64 * 256))
    else:  # int8 weights + an fp32 scale per output row
        assert q_bytes == n + 4 * sum(m.out_features for m in layer_linear)
    gpu = est(tree, plan, device="cuda", accel=GPU, quantization=quantization)
    assert gpu.breakdown["weights"] == q_bytes + (tree.total_params - n) * 4
    cpu = est(tree, plan, quantization=quantization)  # the fp32 weights read stay resident
    assert cpu.breakdown["weights"] == gpu.breakdown["weights"] + 4 * n
    assert any(quantization in note for note in cpu.notes)


def test_4bit_checkpoints_unless_told_otherwise(llama):
    tree, plan = llama
    train = TrainingConfig(batch_size=4)  # gradient_checkpointing unset
    acts = {q: me.estimate_memory(tree, plan, train, 512, quantization=q).breakdown[
        "activations"] for q in ("none", "4bit")}
    off = me.estimate_memory(tree, plan, dataclasses.replace(train, gradient_checkpointing=False),
                             512, quantization="4bit").breakdown["activations"]
    assert acts["4bit"] < acts["none"] < off


def test_a_classifier_head_is_not_quantized(tiny_models):
    tree = build_tree(str(tiny_models["bert"]))
    plan = plan_adapter(tree, AdapterConfig(targets=["*.query", "*.value"]))
    _bytes, params, _largest = me.quantized_weights(tree, plan, "4bit")
    head = sum(tree.modules[h].in_features * tree.modules[h].out_features for h in tree.head
               if tree.modules[h].cls == "Linear")
    linear = sum(m.in_features * m.out_features for m in tree.modules.values()
                 if m.cls == "Linear")
    assert head > 0 and params == linear - head
