"""GGUF export: the llama.cpp LoRA file read back with gguf.GGUFReader. For every tensor,
llama.cpp's alpha/rank × B·A (rank read from the tensor, q/k rows put back in Hugging Face
order) equals PEFT's own scale × B·A, with per-module rank/alpha overrides and rsLoRA."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from graftlab.core.adapter.gguf_export import export_gguf, is_graftlab_gguf
from graftlab.core.errors import UserError
from safetensors.torch import load_file

ATTN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OVERRIDE = "model.layers.1.self_attn.q_proj"


def base_folder(pm, folder):
    """The base's config.json alone (GGUF export reads no weights)."""
    pm.get_base_model().config.save_pretrained(folder)
    return str(folder)


def llama_rows(out: int, n_head: int) -> np.ndarray:
    """Row order of llama.cpp's q/k permute: gguf row i holds Hugging Face row idx[i]."""
    return np.arange(out).reshape(n_head, 2, out // n_head // 2).swapaxes(1, 2).reshape(out)


def read_gguf(path):
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    return fields, {t.name: np.array(t.data) for t in reader.tensors}


def peft_deltas(src, config):
    """{hf module: PEFT's scale × B·A} from the saved adapter (what PEFT computes)."""
    tensors = load_file(str(src / "adapter_model.safetensors"))
    a0, out = float(config["lora_alpha"]), {}
    for key, a in tensors.items():
        if ".lora_A" not in key and ".lora_embedding_A" not in key:
            continue
        b = tensors[key.replace("lora_A", "lora_B").replace("lora_embedding_A",
                                                            "lora_embedding_B")]
        name = key.split(".lora_")[0].removeprefix("base_model.model.")
        r = a.shape[0]
        alpha = next((v for k, v in (config.get("alpha_pattern") or {}).items()
                      if name == k or name.endswith("." + k)), a0)
        scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
        delta = scale * (b.double() @ a.double()).numpy()  # [out, in]; embedding: [dim, vocab]
        out[name] = delta
    return out


def check_file(path, src, arch, hf_cfg, permutes):
    config = json.loads((src / "adapter_config.json").read_text())
    fields, tensors = read_gguf(path)
    assert fields["general.architecture"] == arch
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    alpha = float(fields["adapter.lora.alpha"])
    assert alpha == float(config["lora_alpha"])
    assert all(t.dtype == np.float32 for t in tensors.values())
    want = peft_deltas(src, config)
    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()),
                                    hf_cfg.num_hidden_layers)
    names = {tmap.get_name(n + ".weight", try_suffixes=(".weight",)): n for n in want}
    assert set(tensors) == {f"{g}.lora_{ab}" for g in names for ab in "ab"}
    n_head, n_kv = hf_cfg.num_attention_heads, hf_cfg.num_key_value_heads
    for gname, hf_name in names.items():
        a, b = tensors[gname + ".lora_a"], tensors[gname + ".lora_b"]
        rank = b.shape[1]  # llama.cpp: b->ne[0]
        if gname == "token_embd.weight":
            delta = (alpha / rank) * (b.astype(np.float64) @ a.T.astype(np.float64))
        else:
            assert a.shape[0] == rank
            delta = (alpha / rank) * (b.astype(np.float64) @ a.astype(np.float64))
        heads = n_head if hf_name.endswith("q_proj") else n_kv
        if permutes and hf_name.endswith(("q_proj", "k_proj")):
            undone = np.empty_like(delta)
            undone[llama_rows(delta.shape[0], heads)] = delta
            assert not np.allclose(undone, delta)  # the permutation really was applied
            delta = undone
        np.testing.assert_allclose(delta, want[hf_name], atol=1e-5, rtol=1e-5,
                                   err_msg=f"{gname} ({hf_name})")
    return fields, tensors


@pytest.mark.parametrize("rslora", [False, True])
def test_llama_with_overrides_keeps_every_modules_peft_scale(tmp_path, save_peft, rslora):
    src = tmp_path / "adapter"
    pm = save_peft(src, r=8, lora_alpha=16, target_modules=ATTN_MLP + ["embed_tokens",
                                                                       "lm_head"],
                   rank_pattern={OVERRIDE: 16, "model.layers.0.self_attn.k_proj": 4},
                   alpha_pattern={OVERRIDE: 32, "v_proj": 8}, use_rslora=rslora)
    base = base_folder(pm, tmp_path / "base")
    files = export_gguf(src, tmp_path / "out", base=base)
    assert {p.name for p, _n in files} == {"adapter.gguf", "README.md", "graftlab-output.json"}
    fields, tensors = check_file(tmp_path / "out" / "adapter.gguf", src, "llama",
                                 pm.get_base_model().config, permutes=True)
    assert tensors["blk.1.attn_q.weight.lora_b"].shape == (64, 16)  # the override's rank
    assert tensors["blk.0.attn_k.weight.lora_a"].shape == (4, 64)
    assert tensors["token_embd.weight.lora_a"].shape == (128, 8)  # [vocab, r], transposed
    assert "output.weight.lora_a" in tensors
    assert is_graftlab_gguf(tmp_path / "out" / "adapter.gguf")
    # A module at the global rank and alpha is written exactly as PEFT saved it.
    if not rslora:
        saved = load_file(str(src / "adapter_model.safetensors"))
        up = saved["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"].numpy()
        assert np.array_equal(tensors["blk.0.ffn_up.weight.lora_b"], up)


@pytest.mark.parametrize("arch, permutes", [("mistral", True), ("qwen2", False)])
def test_mistral_and_qwen2(tmp_path, save_peft, arch, permutes):
    src = tmp_path / "adapter"
    pm = save_peft(src, arch=arch, r=8, lora_alpha=16, target_modules=ATTN_MLP,
                   rank_pattern={OVERRIDE: 16}, alpha_pattern={OVERRIDE: 32})
    base = base_folder(pm, tmp_path / "base")
    export_gguf(src, tmp_path / "out.gguf", base=base)  # a single file
    gguf_arch = "llama" if arch == "mistral" else "qwen2"
    _fields, tensors = check_file(tmp_path / "out.gguf", src, gguf_arch,
                                  pm.get_base_model().config, permutes)
    if not permutes:  # Qwen2: q/k rows stay in Hugging Face order (scale folded only)
        saved = load_file(str(src / "adapter_model.safetensors"))
        k = saved["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"].numpy()
        assert np.array_equal(tensors["blk.0.attn_k.weight.lora_b"], k)


def test_refusals(tmp_path, save_peft, tiny_models):
    dora = tmp_path / "dora"
    pm = save_peft(dora, r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True)
    with pytest.raises(UserError, match="DoRA"):
        export_gguf(dora, tmp_path / "o1", base=base_folder(pm, tmp_path / "b1"))
    gpt2 = tmp_path / "gpt2"
    save_peft(gpt2, arch="gpt2", r=4, lora_alpha=8, target_modules=["c_attn"])
    with pytest.raises(UserError, match="Llama, Mistral and Qwen2 bases, not gpt2") as info:
        export_gguf(gpt2, tmp_path / "o2", base=str(tiny_models["gpt2"]))
    assert info.value.message.count(". ") == 0  # one sentence
    head = tmp_path / "head"  # Qwen2 ties lm_head to the embeddings: llama.cpp has no head
    pm = save_peft(head, arch="qwen2", r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"])
    with pytest.raises(UserError, match="ties lm_head"):
        export_gguf(head, tmp_path / "o3", base=base_folder(pm, tmp_path / "b3"))
    saved = tmp_path / "saved"
    pm = save_peft(saved, r=4, lora_alpha=8, target_modules=["q_proj"],
                   modules_to_save=["lm_head"])
    with pytest.raises(UserError, match="not LoRA factors"):
        export_gguf(saved, tmp_path / "o4", base=base_folder(pm, tmp_path / "b4"))
    small = tmp_path / "small"  # an adapter for 2 layers on a 1-layer base: no such tensor
    save_peft(small, r=4, lora_alpha=8, target_modules=["q_proj"])
    one = save_peft(tmp_path / "one", layers=1, r=4, lora_alpha=8, target_modules=["q_proj"])
    with pytest.raises(UserError, match="no tensor for model.layers.1"):
        export_gguf(small, tmp_path / "o5", base=base_folder(one, tmp_path / "b5"))
    with pytest.raises(UserError, match="--base"):
        export_gguf(small, tmp_path / "o6")  # the adapter names no base
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 7))


def test_nothing_a_user_owns_is_replaced(tmp_path, save_peft):
    src = tmp_path / "adapter"
    pm = save_peft(src, r=4, lora_alpha=8, target_modules=["q_proj"])
    base = base_folder(pm, tmp_path / "base")
    mine = tmp_path / "mine.gguf"
    mine.write_bytes(b"GGUF my own model")
    with pytest.raises(UserError, match="did not write"):
        export_gguf(src, mine, base=base)
    assert mine.read_bytes() == b"GGUF my own model"
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="did not write"):
        export_gguf(src, folder, base=base)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    link = tmp_path / "link.gguf"
    link.symlink_to(mine)
    with pytest.raises(UserError, match="symbolic link"):
        export_gguf(src, link, base=base)
    out = tmp_path / "served.gguf"
    export_gguf(src, out, base=base)
    first = out.read_bytes()
    with pytest.raises(UserError, match="--overwrite"):
        export_gguf(src, out, base=base)  # an earlier export needs consent
    assert out.read_bytes() == first
    export_gguf(src, out, base=base, overwrite=True)
    assert is_graftlab_gguf(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_cli_gguf_export_and_refusal(tmp_path, save_peft, tiny_models):
    src = tmp_path / "adapter"
    pm = save_peft(src, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    base = base_folder(pm, tmp_path / "base")

    def run(adapter, *args):
        return subprocess.run([sys.executable, "-m", "graftlab.core.cli", "export", str(adapter),
                               "--format", "gguf", *args], capture_output=True, text=True,
                              timeout=300)

    ok = run(src, "--base", base, "--output", str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "adapter.gguf").is_file()
    gpt2 = tmp_path / "gpt2"
    save_peft(gpt2, arch="gpt2", r=4, lora_alpha=8, target_modules=["c_attn"])
    bad = run(gpt2, "--base", str(tiny_models["gpt2"]), "--output", str(tmp_path / "g"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


LLAMA_CPP = os.environ.get("GRAFTLAB_LLAMA_CPP")  # a llama.cpp checkout (convert_lora_to_gguf.py)


@pytest.mark.slow
@pytest.mark.skipif(not LLAMA_CPP, reason="set GRAFTLAB_LLAMA_CPP to a llama.cpp checkout")
def test_same_tensors_as_llama_cpps_converter(tmp_path, tiny_models):
    """Without overrides the file holds exactly what llama.cpp's own converter writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    pm = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                         target_modules=ATTN_MLP))
    pm.save_pretrained(tmp_path / "adapter")
    ref = tmp_path / "ref.gguf"
    done = subprocess.run([sys.executable, "convert_lora_to_gguf.py", "--base",
                           str(tiny_models["llama"]), "--outfile", str(ref),
                           str(tmp_path / "adapter")], cwd=LLAMA_CPP, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    export_gguf(tmp_path / "adapter", tmp_path / "ours.gguf", base=str(tiny_models["llama"]))
    ref_fields, ref_tensors = read_gguf(ref)
    fields, tensors = read_gguf(tmp_path / "ours.gguf")
    assert sorted(tensors) == sorted(ref_tensors)
    assert all(np.array_equal(tensors[k], ref_tensors[k]) for k in tensors)
    for key in ("general.architecture", "general.type", "adapter.type", "adapter.lora.alpha"):
        assert fields[key] == ref_fields[key]
