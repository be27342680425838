"""Export compatibility: what vLLM, llama.cpp's converter and PEFT will do with an adapter.

A short list of rules, each with the source it comes from, run on a saved adapter
(:func:`check_adapter`, for export and the inspector) or on a plan before training
(:func:`check_plan`, so the GUI can warn before Start). Every finding is a :class:`CompatIssue`
the GUI shows with its reason; nothing is fixed silently.

Sources were read at the revisions noted; re-check them when those tools change:

- vLLM ``vllm/lora/peft_helper.py`` (``PEFTHelper._validate_features``): rejects
  ``modules_to_save`` and ``use_dora``; computes one scaling ``lora_alpha/r`` (or ``/√r``) that
  ``vllm/lora/lora_weights.py`` (``LoRALayerWeights.from_config``) applies to every module.
- vLLM ``vllm/config/lora.py``: ``max_lora_rank: MaxLoRARanks = 16`` with
  ``MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]``.
- llama.cpp ``convert_lora_to_gguf.py``: accepts only ``lora_A``/``lora_B`` (and
  ``lora_embedding_A/B``) tensors, skips ``.base_layer.weight``, keeps norm weights, and exits
  on anything else; writes the single ``lora_alpha`` of the config (no rank_pattern,
  alpha_pattern or use_rslora); maps names through the base model's GGUF tensor map.
- llama.cpp ``src/llama-adapter.h`` (``llama_adapter_lora_weight::get_scale``): scale =
  adapter_scale·alpha/rank with rank read from each tensor, so per-module ranks work but
  per-module alphas and rsLoRA do not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_MAX_RANK = 16
HEAD_KINDS = ("lm_head", "embed_out")
# Module kinds llama.cpp's tensor maps name (gguf-py/gguf/tensor_mapping.py) for the model
# families Graftlab builds and tests; other kinds are reported as "not known to map".
LLAMACPP_KINDS = {
    "llama-family": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                     "down_proj", "embed_tokens", "lm_head"},
    "gpt2": {"c_attn", "c_proj", "c_fc", "wte", "lm_head"},
}
LLAMA_FAMILY = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3",
                "granite", "olmo", "olmo2"}
LARGE_BYTES = 50 * 2**20


@dataclass
class CompatIssue:
    """One finding: which rule, how bad, for which tool, what to do, and where the rule is from."""

    rule: str
    severity: str  # "warning" | "error" (the tool refuses the adapter or gives wrong results)
    target: str  # "vllm" | "llama.cpp" | "peft" | "size"
    message: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Module:
    name: str
    kind: str
    rank: int
    alpha: float
    scale: float
    embed_or_head: bool
    full_bytes: int  # bytes of the full matrix PEFT stores next to embedding/head adapters


@dataclass
class _Facts:
    """What the rules look at, built from a saved adapter or from a plan."""

    rank: int
    alpha: float
    rslora: bool
    dora: bool
    modules: list[_Module]
    saved: dict[str, int]  # modules_to_save copies: name → bytes
    base_model: str | None
    check_base_model: bool
    extra_tensors: list[str] = field(default_factory=list)  # e.g. lora_B bias keys
    model_type: str | None = None
    tied: bool = False


def _fmt_mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def _names(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _rules(f: _Facts) -> list[CompatIssue]:
    return _vllm_rules(f) + _size_rules(f) + _peft_rules(f) + _llamacpp_rules(f)


def _vllm_rules(f: _Facts) -> list[CompatIssue]:
    """What vLLM refuses or serves differently."""
    out: list[CompatIssue] = []
    add = out.append
    peft_helper = "vllm/lora/peft_helper.py PEFTHelper._validate_features; vLLM issue #9280"
    if f.saved:
        add(CompatIssue("vllm-modules-to-save", "error", "vllm",
                        f"vLLM refuses adapters with modules_to_save ({_names(list(f.saved))}): "
                        "serve a merged model instead, or train without fully-trained modules.",
                        peft_helper))
    if f.dora:
        add(CompatIssue("vllm-dora", "error", "vllm",
                        "vLLM does not serve DoRA adapters ('vLLM does not yet support DoRA'); "
                        "merge the adapter into the base, or train plain LoRA for vLLM.",
                        peft_helper))
    max_rank = max((m.rank for m in f.modules), default=f.rank)
    if max_rank > VLLM_RANKS[-1]:
        add(CompatIssue("vllm-max-rank", "error", "vllm",
                        f"rank {max_rank} exceeds vLLM's largest --max-lora-rank "
                        f"({VLLM_RANKS[-1]}); use a smaller rank or serve a merged model.",
                        "vllm/config/lora.py MaxLoRARanks"))
    elif max_rank > VLLM_DEFAULT_MAX_RANK:
        need = next(r for r in VLLM_RANKS if r >= max_rank)
        add(CompatIssue("vllm-max-rank", "warning", "vllm",
                        f"rank {max_rank} is above vLLM's default max_lora_rank "
                        f"{VLLM_DEFAULT_MAX_RANK}: start vLLM with --max-lora-rank {need} "
                        f"(allowed: {', '.join(map(str, VLLM_RANKS))}).",
                        "vllm/config/lora.py LoRAConfig.max_lora_rank"))
    global_scale = f.alpha / (math.sqrt(f.rank) if f.rslora else f.rank)
    off = [m.name for m in f.modules if not math.isclose(m.scale, global_scale, rel_tol=1e-6)]
    if off:
        add(CompatIssue("vllm-uniform-scale", "warning", "vllm",
                        f"vLLM applies one scale (lora_alpha/r = {global_scale:g}) to every "
                        f"module, but {_names(off)} use a different alpha/r in PEFT, so vLLM's "
                        "outputs will differ; export it with `graftlab export --format "
                        "uniform` (scales folded into lora_B) or serve a merged model.",
                        "vllm/lora/lora_weights.py LoRALayerWeights.from_config"))
    return out


def _size_rules(f: _Facts) -> list[CompatIssue]:
    """Full matrices stored beside the factors that make the file large."""
    out: list[CompatIssue] = []
    add = out.append
    big = [m for m in f.modules if m.embed_or_head]
    stored = sum(m.full_bytes for m in big) + sum(f.saved.values())
    if big or stored > LARGE_BYTES:
        what = _names([m.name for m in big] + list(f.saved))
        add(CompatIssue("large-file", "warning", "size",
                        f"{what} make the adapter file large (about {_fmt_mb(stored)} of full "
                        "matrices stored beside the LoRA factors); vLLM also needs the model "
                        "to support embedding/lm_head LoRA. Adapt only the attention/MLP "
                        "projections to keep it small.",
                        "PEFT save_embedding_layers, peft #1457"))
    return out


def _peft_rules(f: _Facts) -> list[CompatIssue]:
    """What PeftModel.from_pretrained and the converters need from the config."""
    out: list[CompatIssue] = []
    add = out.append
    if f.check_base_model and not f.base_model:
        add(CompatIssue("missing-base-model", "warning", "peft",
                        "adapter_config.json has no base_model_name_or_path: "
                        "PeftModel.from_pretrained and llama.cpp's converter cannot find the "
                        "base; set it to the base model's id or path.",
                        "llama.cpp convert_lora_to_gguf.py ('base_model_name_or_path' is not "
                        "found)"))
    return out


def _llamacpp_rules(f: _Facts) -> list[CompatIssue]:
    """What llama.cpp's LoRA converter refuses, cannot map or scales differently."""
    out: list[CompatIssue] = []
    add = out.append
    conv = "llama.cpp convert_lora_to_gguf.py LoraModel.get_tensors"
    extra = ([f"{m.name} (DoRA magnitude)" for m in f.modules] if f.dora else []) + \
        [n for n in f.saved if "norm" not in n] + f.extra_tensors
    if extra:
        add(CompatIssue("llamacpp-extra-tensors", "error", "llama.cpp",
                        f"llama.cpp's converter stops at tensors that are not lora_A/lora_B "
                        f"({_names(extra)}); export plain LoRA without DoRA, bias or "
                        "modules_to_save, or merge first.", conv))
    family = ("gpt2" if f.model_type == "gpt2" else "llama-family"
              if f.model_type in LLAMA_FAMILY or f.model_type is None else None)
    known = LLAMACPP_KINDS.get(family or "", set())
    unmapped = [m.name for m in f.modules if m.kind.rpartition(".")[2] not in known]
    if unmapped:
        add(CompatIssue("llamacpp-unmapped", "warning", "llama.cpp",
                        f"{_names(unmapped)} are not modules llama.cpp is known to map for "
                        f"{f.model_type or 'this'} models; the converter stops with 'Can not "
                        "map tensor' if its tensor map lacks them.",
                        "llama.cpp gguf-py/gguf/tensor_mapping.py via convert_lora_to_gguf.py"))
    if f.tied and any(m.kind == "lm_head" for m in f.modules):
        add(CompatIssue("llamacpp-tied-head", "error", "llama.cpp",
                        "the base ties lm_head to the embeddings, and llama.cpp's converter "
                        "refuses lm_head adapters then ('lm_head is present in adapter, but is "
                        "ignored in base model'); adapt embed_tokens or merge instead.",
                        "llama.cpp convert_lora_to_gguf.py modify_tensors; llama.cpp #9065"))
    wrong = [m.name for m in f.modules
             if not math.isclose(m.alpha / m.rank, m.scale, rel_tol=1e-6)
             or not math.isclose(m.alpha, f.alpha, rel_tol=1e-6)]
    if wrong:
        why = ("rsLoRA scales by alpha/√r but llama.cpp uses alpha/r" if f.rslora else
               "alpha_pattern is dropped: llama.cpp uses the single lora_alpha")
        fix = "export it with `graftlab export --format gguf`, which folds each module's " \
            "scale into lora_B"
        if f.rslora and len({m.rank for m in f.modules}) == 1:
            fix += f" (or load it with --lora-scaled FILE {math.sqrt(f.rank):g}, √r)"
        add(CompatIssue("llamacpp-scale", "warning", "llama.cpp",
                        f"{why}, so {_names(wrong)} get the wrong strength; {fix}.",
                        "llama.cpp src/llama-adapter.h get_scale; convert_lora_to_gguf.py "
                        "writes lparams['lora_alpha'] only"))
    return out


def check_adapter(info: Any, base_config: dict[str, Any] | None = None) -> list[CompatIssue]:
    """Run the rules on a saved adapter (an :class:`graftlab.core.adapter.info.AdapterInfo`).

    Args:
        info: the adapter as read by :func:`graftlab.core.adapter.info.read_adapter`.
        base_config: the base model's config.json as a dict, when known: its ``model_type``
            picks llama.cpp's name map and ``tie_word_embeddings`` enables the tied-head rule.
    """
    base_config = base_config or {}
    width = {s.name: s.params * 4 for s in info.saved_modules if s.base_layer}
    modules = [_Module(m.name, m.kind, m.rank, m.alpha, m.scale,
                       m.embedding or m.kind in HEAD_KINDS,
                       width.get(m.name, m.in_features * m.out_features * 4
                                 if m.embedding or m.kind in HEAD_KINDS else 0))
               for m in info.modules]
    saved = {s.name: s.params * 4 for s in info.saved_modules if not s.base_layer}
    extra = [f"{m.name} (lora_B bias)" for m in info.modules if m.params >
             m.rank * (m.in_features + m.out_features) + (m.out_features if m.dora else 0)]
    facts = _Facts(info.rank, info.alpha, info.use_rslora, info.use_dora, modules, saved,
                   info.base_model, True, extra, base_config.get("model_type"),
                   bool(base_config.get("tie_word_embeddings", False)))
    return _rules(facts)


def check_plan(plan: Any, model_type: str | None = None, tied: bool = False,
               base_model: str | None = None) -> list[CompatIssue]:
    """Run the same rules on an :class:`graftlab.core.adapter.plan.AdapterPlan` before training.

    Args:
        plan: the adapter plan.
        model_type: the base model's ``model_type`` (``tree.model_type``).
        tied: whether the base ties its embeddings (``tree.tie_word_embeddings``).
        base_model: the base name export will record; None skips the missing-base rule,
            since Graftlab's export always fills it in.
    """
    variant = plan.variant
    modules = []
    for m in plan.modules:
        eh = m.cls == "Embedding" or m.kind in HEAD_KINDS
        modules.append(_Module(m.name, m.kind, m.rank, m.alpha, m.scale(variant), eh,
                               m.in_features * m.out_features * 4 if eh else 0))
    saved = {n: p * 4 for n, p in plan.saved_modules.items()}
    facts = _Facts(plan.rank, plan.alpha, variant == "rslora", variant == "dora", modules,
                   saved, base_model, base_model is not None, [], model_type, tied)
    return _rules(facts)
