"""The adapter inspector on adapters written by plain PEFT, comparisons, and every rejection."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from graftlab.core.adapter.info import compare_adapters, read_adapter
from graftlab.core.errors import UserError


def live_layers(pm):
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in pm.get_base_model().named_modules() if isinstance(m, LoraLayer)}


@pytest.fixture(scope="module")
def patterned(tmp_path_factory, save_peft):
    out = tmp_path_factory.mktemp("a") / "patterned"
    pm = save_peft(out, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                   rank_pattern={r"^model\.layers\.0\.self_attn\.q_proj": 6, "down_proj": 2},
                   alpha_pattern={"v_proj": 3})
    return out, pm


def test_rank_alpha_patterns_and_norms_match_peft(patterned):
    out, pm = patterned
    info = read_adapter(out)
    layers = live_layers(pm)
    assert {m.name for m in info.modules} == set(layers)
    for m in info.modules:
        layer = layers[m.name]
        assert m.rank == layer.r["default"] and m.scale == pytest.approx(
            layer.scaling["default"])
        delta = layer.get_delta_weight("default").detach().double()
        assert m.delta_norm == pytest.approx(float(delta.norm()), rel=1e-5)
        ref = torch.linalg.svdvals(delta)[:m.rank]
        assert m.singular_values == pytest.approx(ref.tolist(), rel=1e-5, abs=1e-9)
        assert 1.0 <= m.effective_rank <= m.rank
        assert (m.in_features, m.out_features) == (layer.in_features, layer.out_features)
    q0 = info.module("model.layers.0.self_attn.q_proj")
    assert (q0.rank, q0.alpha, q0.layer, q0.kind) == (6, 8.0, 0, "q_proj")
    assert info.module("model.layers.1.self_attn.v_proj").alpha == 3.0
    assert info.module("model.layers.1.mlp.down_proj").rank == 2
    data = info.to_json()
    assert data["base_model"] is None and data["modules"][0]["name"].startswith("model.")
    assert {"name", "rank", "alpha", "delta_norm", "singular_values"} <= set(data["modules"][0])
    assert data["totals"]["params"] == sum(m.params for m in info.modules)
    assert data["file_size"] == (out / "adapter_model.safetensors").stat().st_size


def test_rslora_on_gpt2_conv1d(tmp_path, save_peft):
    pm = save_peft(tmp_path / "a", "gpt2", r=4, lora_alpha=8, target_modules=["c_attn"],
                   use_rslora=True)
    info = read_adapter(tmp_path / "a")
    assert info.variant == "rslora"
    for m in info.modules:
        layer = live_layers(pm)[m.name]
        assert m.scale == pytest.approx(8 / 2) and (m.in_features, m.out_features) == (64, 192)
        assert m.delta_norm == pytest.approx(
            float(layer.get_delta_weight("default").detach().double().norm()), rel=1e-5)


def test_dora_embeddings_and_modules_to_save(tmp_path, save_peft):
    save_peft(tmp_path / "a", "qwen2", r=4, lora_alpha=8, use_dora=True,
              target_modules=["q_proj", "embed_tokens"], modules_to_save=["lm_head"])
    info = read_adapter(tmp_path / "a")
    assert info.variant == "dora" and all(m.dora for m in info.modules)
    emb = info.module("model.embed_tokens")
    assert emb.embedding and (emb.in_features, emb.out_features) == (128, 64)
    assert emb.params == 4 * (128 + 64) + 64
    saved = {s.name: s for s in info.saved_modules}
    assert saved["lm_head"].params == 128 * 64 and not saved["lm_head"].base_layer
    assert saved["model.embed_tokens"].base_layer


def test_suffix_form_targets(tmp_path, save_peft):
    names = [f"model.layers.{i}.{k}" for i in range(3) for k in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    save_peft(tmp_path / "a", layers=3, r=2, lora_alpha=4, target_modules=names)
    stored = json.loads((tmp_path / "a" / "adapter_config.json").read_text())["target_modules"]
    assert sorted(stored) != sorted(names)  # PEFT rewrote ≥20 names to suffixes
    info = read_adapter(tmp_path / "a")
    assert sorted(m.name for m in info.modules) == sorted(names)
    assert info.target_modules == stored


def test_compare(tmp_path, patterned, save_peft):
    out, _ = patterned
    c = compare_adapters(out, out)
    assert all(x.cosine == pytest.approx(1.0) and x.norm_ratio == pytest.approx(1.0)
               for x in c.common) and not c.only_a and not c.only_b
    save_peft(tmp_path / "b", seed=1, r=4, lora_alpha=8, target_modules=["q_proj", "k_proj"])
    c = compare_adapters(read_adapter(out), tmp_path / "b")
    assert {x.name for x in c.common} == {f"model.layers.{i}.self_attn.q_proj" for i in (0, 1)}
    assert any("v_proj" in n for n in c.only_a) and any("k_proj" in n for n in c.only_b)
    from safetensors.torch import load_file

    ta, tb = load_file(out / "adapter_model.safetensors"), load_file(
        tmp_path / "b" / "adapter_model.safetensors")
    key = "base_model.model.model.layers.1.self_attn.q_proj.lora_"
    da = 2.0 * ta[key + "B.weight"] @ ta[key + "A.weight"]
    db = 2.0 * tb[key + "B.weight"] @ tb[key + "A.weight"]
    ref = float((da * db).sum() / (da.norm() * db.norm()))
    got = next(x for x in c.common if x.name == "model.layers.1.self_attn.q_proj")
    assert got.cosine == pytest.approx(ref, abs=1e-5)
    assert c.to_json()["only_b"] == c.only_b


# ---- rejections ------------------------------------------------------------------------------

def write_adapter(folder, tensors, **cfg):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8} | cfg))
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


P = "base_model.model.model.layers.0.self_attn.q_proj."


def good():
    return {P + "lora_A.weight": torch.randn(4, 16), P + "lora_B.weight": torch.randn(16, 4)}


def test_rejects_bad_folders(tmp_path, patterned):
    with pytest.raises(UserError, match="is not a folder"):
        read_adapter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="missing adapter_config.json"):
        read_adapter(tmp_path / "empty")
    shutil.copytree(patterned[0], tmp_path / "multi" / "second")
    with pytest.raises(UserError, match="subfolders \\(second\\)"):
        read_adapter(tmp_path / "multi")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "adapter_config.json").write_text("{}")
    (tmp_path / "bin" / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(UserError, match="pickle"):
        read_adapter(tmp_path / "bin")


@pytest.mark.parametrize("cfg,match", [
    ({"peft_type": "IA3"}, "IA3 adapter, not LoRA"),
    ({"peft_type": None}, "non-PEFT adapter"),
    ({"rank_pattern": {"q_proj(": 2}}, "not a usable regex"),
    ({"r": 0}, "r must be"),
])
def test_rejects_bad_configs(tmp_path, cfg, match):
    with pytest.raises(UserError, match=match):
        read_adapter(write_adapter(tmp_path / "a", good(), **cfg))


def test_rejects_invalid_json(tmp_path):
    folder = write_adapter(tmp_path / "a", good())
    (folder / "adapter_config.json").write_text("{oops")
    with pytest.raises(UserError, match="not valid JSON"):
        read_adapter(folder)


@pytest.mark.parametrize("tensors,match", [
    ({P + "lora_A.weight": torch.randn(4, 16), P + "lora_B.weight": torch.randn(16, 3)},
     "mismatched LoRA shapes"),
    ({P + "lora_A.weight": torch.randn(2, 16), P + "lora_B.weight": torch.randn(16, 2)},
     "stores rank 2 .* rank 4"),
    ({P + "lora_A.weight": torch.randn(4, 16)}, "only one of the LoRA factors"),
    ({P + "lora_A.weight": torch.randn(5000, 1), P + "lora_B.weight": torch.randn(1, 5000)},
     "above 4096"),
])
def test_rejects_bad_tensors(tmp_path, tensors, match):
    with pytest.raises(UserError, match=match):
        read_adapter(write_adapter(tmp_path / "a", tensors))


def test_rejects_truncated_and_corrupt_files(tmp_path):
    folder = write_adapter(tmp_path / "a", good())
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-10])
    with pytest.raises(UserError, match="not a readable safetensors|truncated"):
        read_adapter(folder)
    weights.write_bytes(data[:40])
    with pytest.raises(UserError, match="truncated"):
        read_adapter(folder)
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(UserError, match="not a readable safetensors"):
        read_adapter(folder)


def test_rejects_absurd_header_before_loading(tmp_path):
    folder = write_adapter(tmp_path / "a", good())
    header = json.dumps({P + "lora_A.weight": {"dtype": "F32", "shape": [4, 2**30],
                                               "data_offsets": [0, 2**34]}}).encode()
    header += b" " * (-len(header) % 8)
    weights = folder / "adapter_model.safetensors"
    with weights.open("wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header)
        fh.truncate(8 + len(header) + 2**34)  # sparse: no disk used, nothing loaded
    with pytest.raises(UserError, match="far larger than any LoRA factor"):
        read_adapter(folder)


def test_rejects_links_out_of_the_folder(tmp_path):
    folder = write_adapter(tmp_path / "a", good())
    outside = tmp_path / "elsewhere.safetensors"
    (folder / "adapter_model.safetensors").rename(outside)
    (folder / "adapter_model.safetensors").symlink_to(outside)
    with pytest.raises(UserError, match="outside the adapter folder"):
        read_adapter(folder)
