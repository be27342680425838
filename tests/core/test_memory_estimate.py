"""Memory estimate: derived dimensions, monotonicity, checkpointing, verdicts."""

from __future__ import annotations

import dataclasses

import graftlab.core.train.memory_estimate as me
import pytest
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig, TrainingConfig
from graftlab.core.model.module_tree import build_tree

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


def test_bf16_on_gpu_halves_weights(llama, monkeypatch):
    tree, plan = llama
    monkeypatch.setattr(me, "_device_memory", lambda device: (80 * GB, 80 * GB))
    cpu = est(tree, plan)
    gpu = me.estimate_memory(tree, plan, dataclasses.replace(TrainingConfig(batch_size=4),
                                                             precision="bf16"), 128, "cuda")
    assert gpu.breakdown["weights"] * 2 == cpu.breakdown["weights"]
    assert gpu.device == "cuda" and gpu.breakdown["overhead"] == me.CUDA_CONTEXT
    assert est(tree, plan, dtype_bytes=2).breakdown["weights"] == tree.total_params * 2
