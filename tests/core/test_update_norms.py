"""Update norms from small factors equal dense computations (random factors and live PEFT)."""

from __future__ import annotations

import warnings

import pytest
import torch
from graftlab.core.adapter.update_norms import (
    delta_inner,
    delta_norm,
    delta_singular_values,
    effective_rank,
    relative_update_sizes,
)


def dense(a, b, s):
    return s * b.double().reshape(b.shape[0], -1) @ a.double().reshape(a.shape[0], -1)


@pytest.mark.parametrize("r,n_in,n_out", [(1, 7, 5), (8, 64, 200), (16, 300, 48)])
def test_norm_and_spectrum_match_dense(r, n_in, n_out):
    g = torch.Generator().manual_seed(r)
    a, b = torch.randn(r, n_in, generator=g), torch.randn(n_out, r, generator=g)
    d = dense(a, b, 0.7)
    assert delta_norm(a, b, 0.7) == pytest.approx(float(torch.linalg.norm(d)), rel=1e-5)
    sv = delta_singular_values(a, b, 0.7)
    ref = torch.linalg.svdvals(d)[:r]
    assert torch.allclose(sv.double(), ref, rtol=1e-5, atol=1e-5 * float(ref[0]))
    assert float((sv.double() ** 2).sum().sqrt()) == pytest.approx(delta_norm(a, b, 0.7),
                                                                   rel=1e-5)


def test_inner_with_different_ranks():
    g = torch.Generator().manual_seed(0)
    a1, b1 = torch.randn(4, 50, generator=g), torch.randn(30, 4, generator=g)
    a2, b2 = torch.randn(6, 50, generator=g), torch.randn(30, 6, generator=g)
    d1, d2 = dense(a1, b1, 2.0), dense(a2, b2, 0.5)
    assert delta_inner(a1, b1, 2.0, a2, b2, 0.5) == pytest.approx(float((d1 * d2).sum()),
                                                                  rel=1e-5)
    assert delta_inner(a1, b1, 1.0, a1, -b1, 3.0) == pytest.approx(
        -3.0 * float(dense(a1, b1, 1.0).norm() ** 2), rel=1e-5)
    with pytest.raises(ValueError, match="different shapes"):
        delta_inner(a1, b1, 1.0, torch.randn(4, 51), b1, 1.0)


def test_conv_factors_are_flattened():
    a, b = torch.randn(4, 3, 3, 3), torch.randn(8, 4, 1, 1)
    assert delta_norm(a, b, 1.5) == pytest.approx(float(dense(a, b, 1.5).norm()), rel=1e-5)


def test_effective_rank_bounds():
    assert effective_rank([5.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert effective_rank([2.0] * 8) == pytest.approx(8.0)
    assert 1.0 < effective_rank([3.0, 1.0, 0.5]) < 3.0
    assert effective_rank([0.0, 0.0]) == 0.0


def peft_model(model_dir, **kw):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notice on GPT-2 Conv1D
        return get_peft_model(base, LoraConfig(init_lora_weights=False, **kw))


TARGETS = {"llama": ["q_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "c_proj", "c_fc"],
           "qwen2": ["k_proj", "o_proj", "up_proj"]}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_relative_sizes_match_peft_delta_weight(tiny_models, arch):
    from peft.tuners.lora import LoraLayer

    pm = peft_model(tiny_models[arch], r=4, lora_alpha=8, target_modules=TARGETS[arch],
                    rank_pattern={"v_proj|c_fc|up_proj": 2}, use_rslora=arch == "qwen2")
    sizes = relative_update_sizes(pm)
    layers = {n: m for n, m in pm.get_base_model().named_modules() if isinstance(m, LoraLayer)}
    assert set(sizes) == set(layers) and len(sizes) >= 6
    for name, layer in layers.items():
        delta = layer.get_delta_weight("default").detach().double()  # PEFT's own dense ΔW
        ref = float(delta.norm() / layer.get_base_layer().weight.detach().double().norm())
        assert sizes[name] == pytest.approx(ref, rel=1e-5), name
    assert relative_update_sizes(pm) == sizes  # cached base norms give the same answer


def test_dora_full_change_matches_merge(tiny_models):
    pm = peft_model(tiny_models["gpt2"], r=4, lora_alpha=8, target_modules=["c_fc"],
                    use_dora=True)
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        for m in pm.modules():
            if isinstance(m, LoraLayer):
                m.lora_magnitude_vector["default"].weight.mul_(1.3)
    lora_part = relative_update_sizes(pm)
    full = relative_update_sizes(pm, dora_full=True)
    for name, layer in ((n, m) for n, m in pm.get_base_model().named_modules()
                        if isinstance(m, LoraLayer)):
        w = layer.get_base_layer().weight
        before = w.detach().double().clone()
        layer.merge()
        after = w.detach().double().clone()
        layer.unmerge()
        assert full[name] == pytest.approx(float((after - before).norm() / before.norm()),
                                           rel=1e-4)
        assert full[name] != pytest.approx(lora_part[name], rel=1e-3)
