"""Adapter plans: exact counts equal PEFT's, LoraConfig compiles, errors before weights."""

from __future__ import annotations

import warnings

import pytest
from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import AdapterConfig, Override
from graftlab.core.errors import UserError
from graftlab.core.model.module_tree import build_skeleton, build_tree
from graftlab.core.model.sources import load_auto_config, resolve_source


@pytest.fixture(scope="module")
def trees(tiny_models):
    return {arch: build_tree(str(path)) for arch, path in tiny_models.items()}


def peft_trainable(path, tree, plan):
    from peft import get_peft_model

    skeleton = build_skeleton(load_auto_config(resolve_source(str(path))), tree.task)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fan_in_fan_out notices for Conv1D
        peft_model = get_peft_model(skeleton, plan.lora_config())
    return peft_model, peft_model.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "bert"])
@pytest.mark.parametrize("variant", ["lora", "rslora", "dora"])
def test_counts_equal_peft(trees, tiny_models, arch, variant):
    tree = trees[arch]
    mlp = tree.preset("mlp")
    cfg = AdapterConfig(rank=4, alpha=8, variant=variant, targets=tree.preset("all-linear"),
                        overrides=[Override(targets=[mlp[0]], rank=12, alpha=5)])
    plan = plan_adapter(tree, cfg)
    peft_model, trainable = peft_trainable(tiny_models[arch], tree, plan)
    assert plan.trainable_params == trainable
    targeted = set(peft_model.base_model.targeted_module_names)
    assert targeted == {m.name for m in plan.modules}
    layer = peft_model.base_model.model.get_submodule(mlp[0])
    assert layer.r["default"] == 12
    expected_scale = 5 / (12 ** 0.5 if variant == "rslora" else 12)
    assert layer.scaling["default"] == pytest.approx(expected_scale)
    assert sum(sum(k.values()) for k in plan.by_layer().values()) == plan.lora_params
    assert sum(plan.by_kind().values()) == plan.lora_params


def test_globs_and_later_overrides_win(trees):
    tree = trees["llama"]
    cfg = AdapterConfig(rank=8, alpha=16, targets=["model.layers.*.self_attn.q_proj",
                                                   "model.layers.0.mlp.down_proj"],
                        overrides=[Override(targets=["model.layers.1.*"], rank=16, alpha=32),
                                   Override(targets=["*.q_proj"], alpha=4)])
    plan = plan_adapter(tree, cfg)
    by = {m.name: (m.rank, m.alpha) for m in plan.modules}
    assert by == {"model.layers.0.self_attn.q_proj": (8, 4),
                  "model.layers.1.self_attn.q_proj": (16, 4),
                  "model.layers.0.mlp.down_proj": (8, 16)}
    resolved = plan.resolved()
    assert set(resolved.targets) == set(by) and all("*" not in t for t in resolved.targets)
    assert plan_adapter(tree, resolved).modules == plan.modules


@pytest.mark.parametrize("cfg,match", [
    (AdapterConfig(targets=[]), "no modules are selected"),
    (AdapterConfig(targets=["model.layers.*.nope"]), "matches no module"),
    (AdapterConfig(targets=["model.layers.0.input_layernorm"]), "cannot carry a LoRA"),
    (AdapterConfig(targets=["model.layers.0.self_attn"]), "container"),
    (AdapterConfig(rank=0, targets=["*.q_proj"]), "rank"),
    (AdapterConfig(alpha=0, targets=["*.q_proj"]), "alpha"),
    (AdapterConfig(dropout=1.0, targets=["*.q_proj"]), "dropout"),
    (AdapterConfig(targets=["*.q_proj"], overrides=[Override(targets=["*.v_proj"], rank=4)]),
     "matches no module that is selected"),
])
def test_errors_before_weights(trees, cfg, match):
    with pytest.raises(UserError, match=match):
        plan_adapter(trees["llama"], cfg)


def test_rank_above_min_dim_is_a_warning(trees):
    plan = plan_adapter(trees["llama"], AdapterConfig(rank=100, targets=["*.k_proj"]))
    assert plan.warnings and "not low-rank" in plan.warnings[0]


def test_classification_head_is_trained_in_full(trees, tiny_models):
    tree = trees["bert"]
    plan = plan_adapter(tree, AdapterConfig(targets=tree.preset("attention")))
    assert plan.saved_modules == {"classifier": tree.modules["classifier"].total_params}
    with pytest.raises(UserError, match="classification head"):
        plan_adapter(tree, AdapterConfig(targets=["classifier"]))
