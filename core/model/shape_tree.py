"""Module trees of common decoder architectures from config.json alone, without importing torch.

`graftlab inspect` of a 70B config must answer within 3 s including interpreter start, but on a
2-core machine ``import torch`` alone costs about 2.6 s of CPU and transformers' modeling code
several more. For the Llama family (llama, mistral, qwen2) the module structure is a simple
function of a few config keys, so this module writes the same :class:`ModuleTree` the meta-device
skeleton gives, from the JSON. Anything it does not know exactly (another model type, a missing
key, remote code, quantization, a classifier) returns None and the caller builds the skeleton.
tests/core/test_shape_tree.py checks it against the skeleton for every supported variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graftlab.core.model.module_tree import ModuleInfo, ModuleTree, assign_kinds, no_lora_reason

PREFIX = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}
_ACT = {"silu": "SiLUActivation"}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "hidden_act")


def _spec(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Sizes and flags the structure depends on, or None if not known exactly."""
    model_type = cfg.get("model_type")
    if model_type not in PREFIX or cfg.get("auto_map") or cfg.get("quantization_config"):
        return None
    if any(not isinstance(cfg.get(k), int | str) for k in _REQUIRED):
        return None
    archs = cfg.get("architectures") or [f"{PREFIX[model_type]}ForCausalLM"]
    if archs != [f"{PREFIX[model_type]}ForCausalLM"] or cfg["hidden_act"] not in _ACT:
        return None
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    qkv_bias = model_type == "qwen2" or bool(cfg.get("attention_bias", False))
    o_bias = model_type != "qwen2" and bool(cfg.get("attention_bias", False))
    return {
        "type": model_type, "prefix": PREFIX[model_type],
        "vocab": cfg["vocab_size"], "hidden": cfg["hidden_size"],
        "ffn": cfg["intermediate_size"], "layers": cfg["num_hidden_layers"],
        "q": heads * head_dim, "kv": (cfg.get("num_key_value_heads") or heads) * head_dim,
        "qkv_bias": qkv_bias, "o_bias": o_bias, "mlp_bias": bool(cfg.get("mlp_bias", False)),
        "act": _ACT[cfg["hidden_act"]], "tie": bool(cfg.get("tie_word_embeddings", False)),
        "dtype": str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"),
    }


def _modules(s: dict[str, Any]) -> list[tuple[str, str, tuple[int, ...] | None, int, str]]:
    """(name, class, weight shape, own params, lora kind) in named_modules() order."""
    p, h = s["prefix"], s["hidden"]
    out: list[tuple[str, str, tuple[int, ...] | None, int, str]] = [
        ("", f"{p}ForCausalLM", None, 0, ""), ("model", f"{p}Model", None, 0, ""),
        ("model.embed_tokens", "Embedding", (s["vocab"], h), s["vocab"] * h, "emb"),
        ("model.layers", "ModuleList", None, 0, ""),
    ]

    def linear(name: str, n_in: int, n_out: int, bias: bool) -> None:
        out.append((name, "Linear", (n_out, n_in), n_out * n_in + (n_out if bias else 0), "lin"))

    for i in range(s["layers"]):
        b = f"model.layers.{i}"
        out += [(b, f"{p}DecoderLayer", None, 0, ""), (f"{b}.self_attn", f"{p}Attention", None,
                                                        0, "")]
        linear(f"{b}.self_attn.q_proj", h, s["q"], s["qkv_bias"])
        linear(f"{b}.self_attn.k_proj", h, s["kv"], s["qkv_bias"])
        linear(f"{b}.self_attn.v_proj", h, s["kv"], s["qkv_bias"])
        linear(f"{b}.self_attn.o_proj", s["q"], h, s["o_bias"])
        out.append((f"{b}.mlp", f"{p}MLP", None, 0, ""))
        linear(f"{b}.mlp.gate_proj", h, s["ffn"], s["mlp_bias"])
        linear(f"{b}.mlp.up_proj", h, s["ffn"], s["mlp_bias"])
        linear(f"{b}.mlp.down_proj", s["ffn"], h, s["mlp_bias"])
        out += [(f"{b}.mlp.act_fn", s["act"], None, 0, ""),
                (f"{b}.input_layernorm", f"{p}RMSNorm", (h,), h, ""),
                (f"{b}.post_attention_layernorm", f"{p}RMSNorm", (h,), h, "")]
    out += [("model.norm", f"{p}RMSNorm", (h,), h, ""),
            ("model.rotary_emb", f"{p}RotaryEmbedding", None, 0, "")]
    # A tied head shares the embedding's weight: counted once, where first seen.
    out.append(("lm_head", "Linear", (s["vocab"], h), 0 if s["tie"] else s["vocab"] * h, "lin"))
    return out


def tree_from_config_json(path: str | Path, source: str = "") -> ModuleTree | None:
    """The module tree of a Llama-family causal LM from its config.json, or None."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    s = _spec(cfg) if isinstance(cfg, dict) else None
    if s is None:
        return None
    modules: dict[str, ModuleInfo] = {}
    layer_rel: dict[str, str] = {}
    for name, cls, shape, own, lora in _modules(s):
        parts = name.split(".")
        layer = int(parts[2]) if len(parts) > 2 and parts[1] == "layers" else None
        if layer is not None and len(parts) > 3:
            layer_rel[name] = ".".join(parts[3:])
        if lora:
            in_f, out_f = (shape[0], shape[1]) if lora == "emb" else (shape[1], shape[0])
            reason = None
        else:
            in_f = out_f = None
            # Rotary embeddings and activations are the only leaves here without weights.
            reason = no_lora_reason(cls, own, not cls.endswith(("Embedding", "Activation")))
        modules[name] = ModuleInfo(name, cls, shape, in_f, out_f, own, own, bool(lora), reason,
                                   layer, parts[-1] or "(model)", "other")
        if name:
            modules[name.rpartition(".")[0]].children.append(name)
    for name in reversed(list(modules)):  # pre-order, so children come first when reversed
        info = modules[name]
        info.total_params = info.params + sum(modules[c].total_params for c in info.children)
    assign_kinds(modules, layer_rel)
    modules["lm_head"].group = "head"
    return ModuleTree(model_type=s["type"], task="causal-lm",
                      total_params=modules[""].total_params,
                      dtype=s["dtype"].replace("torch.", ""), num_layers=s["layers"],
                      source=source, modules=modules, head=["lm_head"],
                      tie_word_embeddings=s["tie"])


def quick_tree(spec: str, task: str = "auto", trust_remote_code: bool = False) -> ModuleTree | None:
    """:func:`tree_from_config_json` for a model source as the user wrote it, or None."""
    from graftlab.core.model.sources import resolve_source

    if task not in ("auto", "causal-lm"):
        return None
    source = resolve_source(spec, trust_remote_code)  # bad input: the same UserError as ever
    if source.path is None:
        return None
    config = source.path if source.kind == "config" else source.path / "config.json"
    return tree_from_config_json(config, source.spec)
