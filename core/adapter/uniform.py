"""Uniform-scale export: one rank and one alpha for every module, so vLLM (one lora_alpha / r)
and llama.cpp (one adapter.lora.alpha over each tensor's rank) serve the adapter at the strength
PEFT trained it with, also when per-module rank/alpha overrides were used.

For each module with rank rᵢ and scale sᵢ (alphaᵢ/rᵢ, or alphaᵢ/√rᵢ with rsLoRA), the update is
sᵢ·Bᵢ·Aᵢ. The export pads A with zero rows and B with zero columns up to R = max rᵢ (B·A is
unchanged) and folds the scale into B: B' = sᵢ·B. With lora_alpha = R and r = R the shared
scale is 1, so every runtime computes B'·A' = sᵢ·Bᵢ·Aᵢ. rank_pattern, alpha_pattern and
use_rslora are dropped. DoRA is refused (its magnitude vector depends on the scale per module).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from graftlab.core.adapter.destination import check_free_space, check_output_dir, graftlab_output
from graftlab.core.errors import UserError

_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B|embedding_A|embedding_B)"
                  r"(?:\.(?P<name>[^.]+))?\.weight$|^(?P<emod>.+)\.lora_(?P<ewhich>embedding_A|"
                  r"embedding_B)$")


def pattern_value(module: str, patterns: dict[str, Any], default: Any) -> Any:
    """PEFT's rule: the longest pattern that matches the module name's end wins."""
    best, best_len = default, -1
    for pattern, value in patterns.items():
        if (module == pattern or module.endswith("." + pattern)
                or re.fullmatch(pattern, module)) and len(pattern) > best_len:
            best, best_len = value, len(pattern)
    return best


def uniform_tensors(config: dict[str, Any], tensors: dict[str, Any]) -> tuple[dict[str, Any],
                                                                            dict[str, Any]]:
    """(new adapter_config, new tensors) with one rank and one alpha (see the module doc)."""
    import torch

    if config.get("use_dora"):
        raise UserError("a DoRA adapter cannot be exported with one uniform scale (its "
                        "magnitude vector depends on each module's scale); export it as PEFT "
                        "or merged instead.", field="format")
    a0 = float(config["lora_alpha"])
    alphas = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora"))
    modules: dict[str, dict[str, str]] = {}
    for key in tensors:
        m = _KEY.match(key)
        if m is None:
            continue
        module = m.group("module") or m.group("emod")
        which = m.group("which") or m.group("ewhich")
        modules.setdefault(module, {})[which] = key
    if not modules:
        raise UserError("the adapter has no LoRA tensors to export.", field="adapter")
    rank_of = {mod:  # each module's rank, read from its tensors (rank_pattern applied)
                int(tensors[keys.get("A") or keys["embedding_A"]].shape[0])
               for mod, keys in modules.items()}
    target = max(rank_of.values())
    out = dict(tensors)
    for mod, keys in modules.items():
        r = rank_of[mod]
        name = mod.removeprefix("base_model.model.")
        alpha = float(pattern_value(name, alphas, a0))
        scale = alpha / (math.sqrt(r) if rslora else r)
        a_key, b_key = keys.get("A") or keys["embedding_A"], keys.get("B") or keys["embedding_B"]
        a, b = tensors[a_key], tensors[b_key]
        pad = target - r
        # A: [r, in] (embedding_A: [r, vocab]); B: [out, r] (embedding_B: [dim, r])
        new_a = torch.cat([a, a.new_zeros((pad, *a.shape[1:]))], dim=0) if pad else a.clone()
        new_b = b * scale
        if pad:
            new_b = torch.cat([new_b, new_b.new_zeros((new_b.shape[0], pad))], dim=1)
        out[a_key], out[b_key] = new_a.contiguous(), new_b.contiguous()
    new_config = dict(config, r=target, lora_alpha=float(target), rank_pattern={},
                      alpha_pattern={}, use_rslora=False)
    return new_config, out


def export_uniform(adapter_dir: str | Path, out_dir: str | Path,
                   overwrite: bool = False) -> list[tuple[Path, int]]:
    """Write `adapter_dir` as a uniform-scale adapter folder at `out_dir` (nothing-lost rules
    of every export: a marker, refusal of foreign folders, atomic replacement)."""
    from graftlab.core.adapter.export import check_adapter_dir
    from graftlab.core.adapter.model_card import README, card_for_export
    from safetensors.torch import load_file, save_file

    src = check_adapter_dir(adapter_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == src.resolve():
        raise UserError("the uniform export needs an output folder other than the adapter's "
                        "own; choose a new folder.", field="output")
    check_output_dir(out_dir, overwrite)
    config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    tensors = load_file(str(src / "adapter_model.safetensors"))
    new_config, new_tensors = uniform_tensors(config, tensors)
    size = sum(t.numel() * t.element_size() for t in new_tensors.values())
    check_free_space(out_dir, size)
    with graftlab_output(out_dir, "adapter-uniform", overwrite) as tmp:
        save_file(new_tensors, str(tmp / "adapter_model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(new_config, indent=2) + "\n",
                                                  encoding="utf-8")
        for extra in ("id2label.json", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json"):
            if (src / extra).is_file():
                (tmp / extra).write_bytes((src / extra).read_bytes())
        (tmp / README).write_text(card_for_export(src, "uniform"), encoding="utf-8")
    return sorted((p, p.stat().st_size) for p in out_dir.iterdir() if p.is_file())
