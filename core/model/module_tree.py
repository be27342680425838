"""The module tree: every module of a model, built on the meta device from the config alone.

No weights are read and no weight memory is used, so a Llama-3-70B config.json opens in about a
second. Each module records what the GUI and the adapter planner need: its class, weight shape,
parameter counts, whether LoRA can wrap it (and if not, why), its layer index and its kind.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from graftlab.core.errors import UserError
from graftlab.core.model.sources import ModelSource, load_auto_config, resolve_source

LINEAR_CLASSES = ("Linear", "Conv1D")
_ATTN = re.compile(r"attn|attention", re.IGNORECASE)
# The layer index is the first numbered path segment, as PEFT reads it for layers_to_transform.
LAYER_INDEX = re.compile(r"\.(\d+)(?:\.|$)")


@dataclass
class ModuleInfo:
    """One module of the model.

    Attributes:
        name: full dotted name as ``named_modules()`` gives it ("" for the root).
        cls: class name (``Linear``, ``Conv1D``, ``LlamaRMSNorm``...).
        shape: weight shape as stored, or None.
        in_features / out_features: the LoRA-relevant dimensions (Conv1D stores them swapped).
        params: parameters owned directly by this module.
        total_params: parameters of this module and everything below it (tied counted once).
        lora: whether PEFT's LoRA can wrap this module.
        reason: why not, as a sentence for a tooltip; None when lora is True.
        layer: index of the repeated block it belongs to, or None (embeddings, head).
        kind: its name within a layer, as short as stays unambiguous (``q_proj``,
            ``attention.output.dense``); outside layers the last name segment.
        group: ``attention``, ``mlp``, ``embedding``, ``head`` or ``other``.
    """

    name: str
    cls: str
    shape: tuple[int, ...] | None
    in_features: int | None
    out_features: int | None
    params: int
    total_params: int
    lora: bool
    reason: str | None
    layer: int | None
    kind: str
    group: str
    kernel: int = 1
    children: list[str] = field(default_factory=list)

    @property
    def parent(self) -> str | None:
        if not self.name:
            return None
        return self.name.rpartition(".")[0]

    def lora_params(self, rank: int, dora: bool = False) -> int:
        """Exact trainable parameters of a rank-`rank` adapter on this module."""
        if not self.lora or self.in_features is None or self.out_features is None:
            return 0
        if self.cls == "Embedding":
            n = rank * (self.in_features + self.out_features)
        else:  # Linear / Conv1D: r·(in+out); ConvNd: r·in·k + out·r
            n = rank * self.in_features * self.kernel + self.out_features * rank
        return n + (self.out_features if dora else 0)


@dataclass
class ModuleTree:
    """All modules of a model, in ``named_modules()`` order, plus model facts."""

    model_type: str
    task: str
    total_params: int
    dtype: str
    num_layers: int
    source: str
    modules: dict[str, ModuleInfo]
    head: list[str] = field(default_factory=list)
    tie_word_embeddings: bool = False

    # ---- queries --------------------------------------------------------------------------
    def lora_modules(self) -> list[ModuleInfo]:
        return [m for m in self.modules.values() if m.lora]

    def kinds(self) -> list[str]:
        """Kinds of LoRA-capable modules inside the repeated layers, in model order."""
        seen: dict[str, None] = {}
        for m in self.modules.values():
            if m.lora and m.layer is not None:
                seen.setdefault(m.kind)
        return list(seen)

    def match(self, pattern: str) -> list[str]:
        """Names matching a shell-style glob (or an exact name)."""
        if pattern in self.modules:
            return [pattern]
        return [n for n in self.modules if n and fnmatch.fnmatchcase(n, pattern)]

    def preset(self, name: str, layers: Iterable[int] | None = None) -> list[str]:
        """Module names for a preset: ``attention``, ``mlp``, ``all-linear`` or ``none``.

        Computed from the tree: attention modules are Linear/Conv1D layers under an attention
        block, MLP ones are the other Linear/Conv1D layers of the repeated blocks, and
        all-linear adds any Linear outside them except the output head. `layers` restricts to
        those layer indices (modules outside layers are then left out).
        """
        wanted = set(layers) if layers is not None else None
        out = []
        for m in self.modules.values():
            if not m.lora or m.cls not in LINEAR_CLASSES or m.name in self.head:
                continue
            if wanted is not None and m.layer not in wanted:
                continue
            if (name == "attention" and m.group == "attention") or (
                name == "mlp" and m.group == "mlp") or name == "all-linear":
                out.append(m.name)
            elif name not in ("attention", "mlp", "all-linear", "none"):
                raise UserError(f"unknown preset {name!r}; use attention, mlp, all-linear or "
                                "none.")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "task": self.task,
            "total_params": self.total_params,
            "dtype": self.dtype,
            "num_layers": self.num_layers,
            "source": self.source,
            "kinds": self.kinds(),
            "modules": [
                {"name": m.name, "type": m.cls}
                | {k: v for k, v in asdict(m).items() if k not in ("children", "cls", "name")}
                | {"shape": list(m.shape) if m.shape else None}
                for m in self.modules.values() if m.name
            ],
        }


_GENERATIVE_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def infer_task(config: Any) -> str:
    """The task `model.task: auto` means for a config: the one place this rule lives.

    A classification head is sequence-classification and a generative head (``*ForCausalLM``,
    ``*LMHeadModel``, ``*ForConditionalGeneration``) causal-LM. Any other checkpoint (a bare
    ``BertModel`` such as a sentence-transformers model, a masked-LM head) is judged by its
    family: encoder families (those with a masked-LM model, or with a classifier but no causal
    LM in transformers) default to sequence-classification, decoders to causal-LM.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "sequence-classification"
    if any(a.endswith(_GENERATIVE_HEADS) for a in archs):
        return "causal-lm"
    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES or (
            model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
            and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        return "sequence-classification"
    return "causal-lm"


def build_skeleton(config: Any, task: str) -> Any:
    """The model on the meta device: real module structure, zero weight memory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if task == "sequence-classification" \
        else AutoModelForCausalLM
    try:
        with torch.device("meta"):
            return auto.from_config(config)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"transformers has no {task} model for model_type "
                        f"{config.model_type!r} ({first}); pick the other model.task.",
                        field="model.task") from None


def build_tree(source: str | ModelSource, task: str = "auto", trust_remote_code: bool = False,
               num_labels: int | None = None) -> ModuleTree:
    """Build the :class:`ModuleTree` of a model from its config alone."""
    src = source if isinstance(source, ModelSource) else resolve_source(source,
                                                                         trust_remote_code)
    config = load_auto_config(src, trust_remote_code, num_labels)
    if task == "auto":
        task = infer_task(config)
    return tree_from_model(build_skeleton(config, task), task, src.spec)


def _dims(module: Any, cls: str) -> tuple[int | None, int | None, int]:
    if cls == "Linear":
        return module.in_features, module.out_features, 1
    if cls == "Conv1D":  # GPT-2 style: weight is (in, out)
        return module.weight.shape[0], module.weight.shape[1], 1
    if cls == "Embedding":
        return module.num_embeddings, module.embedding_dim, 1
    if cls.startswith("Conv"):
        k = 1
        for s in module.kernel_size:
            k *= s
        return module.in_channels // module.groups, module.out_channels, k
    if cls == "MultiheadAttention":
        return module.embed_dim, module.embed_dim * 3, 1
    return None, None, 1


def no_lora_reason(cls: str, own_params: int, has_children: bool) -> str:
    """Why a module of class `cls` cannot take a LoRA adapter, as a sentence for a tooltip."""
    if own_params:
        return (f"{cls} cannot carry a LoRA adapter; PEFT wraps Linear, Conv1D, Embedding and "
                "Conv layers.")
    if has_children:
        return f"{cls} is a container; tick the layers inside it."
    return f"{cls} has no weights, so there is nothing to adapt."


def _lora_capable(module: Any) -> bool:
    """The module classes PEFT's LoRA dispatchers wrap (peft 0.21 ``_create_new_module``)."""
    import torch.nn as nn
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, nn.Linear | Conv1D | nn.Embedding | nn.Conv1d | nn.Conv2d
                      | nn.Conv3d | nn.MultiheadAttention)


def tree_from_model(model: Any, task: str, source: str = "") -> ModuleTree:
    """Describe an already-built model (meta or real)."""
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_names = [n for n, m in model.named_modules() if out_emb is not None and m is out_emb]
    modules: dict[str, ModuleInfo] = {}
    seen_params: set[int] = set()
    totals: dict[str, int] = {}
    layer_rel: dict[str, str] = {}
    for name, module in model.named_modules():
        cls = type(module).__name__
        own = 0
        for p in module.parameters(recurse=False):
            if id(p) not in seen_params:  # tied weights count once, where first seen
                seen_params.add(id(p))
                own += p.numel()
        weight = getattr(module, "weight", None)
        shape = tuple(weight.shape) if weight is not None and hasattr(weight, "shape") else None
        lora = _lora_capable(module)
        in_f, out_f, kernel = _dims(module, cls) if lora else (None, None, 1)
        m_layer = LAYER_INDEX.search(name)
        layer = int(m_layer.group(1)) if m_layer else None
        if layer is not None:
            layer_rel[name] = name[m_layer.end():]
        reason = None if lora else no_lora_reason(cls, own, any(True for _ in module.children()))
        modules[name] = ModuleInfo(name, cls, shape, in_f, out_f, own, 0, lora, reason,
                                   layer, name.rpartition(".")[2] or "(model)", "other", kernel)
        totals[name] = own
        if name:
            parent = name.rpartition(".")[0]
            if parent in modules:
                modules[parent].children.append(name)
    # Totals bottom-up (named_modules is pre-order, so reversed visits children first).
    for name in reversed(list(modules)):
        info = modules[name]
        info.total_params = totals[name] + sum(modules[c].total_params for c in info.children)
    assign_kinds(modules, layer_rel)
    num_classes = getattr(getattr(model, "config", None), "num_labels", None)
    if task == "sequence-classification":  # the randomly initialised task head
        head_names += [n for n, m in modules.items()
                       if m.layer is None and m.cls == "Linear" and m.out_features == num_classes]
    for n in head_names:
        modules[n].group = "head"
    cfg = getattr(model, "config", None)
    dtype = str(getattr(cfg, "dtype", None) or "float32")
    layers = {m.layer for m in modules.values() if m.layer is not None}
    return ModuleTree(
        model_type=getattr(cfg, "model_type", type(model).__name__),
        task=task,
        total_params=modules[""].total_params,
        dtype=dtype.replace("torch.", ""),
        num_layers=len(layers),
        source=source,
        modules=modules,
        head=head_names,
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
    )


def short_kinds(in_layer_paths: Iterable[str]) -> dict[str, str]:
    """Each in-layer path's kind: its shortest dotted suffix that no other path ends with.

    ``self_attn.q_proj`` becomes ``q_proj``; BERT's ``attention.output.dense`` stays long enough
    to differ from ``output.dense``. The module tree and the adapter inspector both name kinds so.
    """
    paths = set(in_layer_paths)
    short: dict[str, str] = {}
    for rel in paths:
        parts = rel.split(".")
        short[rel] = rel
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if sum(1 for r in paths if r == suffix or r.endswith("." + suffix)) == 1:
                short[rel] = suffix
                break
    return short


def assign_kinds(modules: dict[str, ModuleInfo], layer_rel: dict[str, str]) -> None:
    """Set each LoRA-capable module's kind (see :func:`short_kinds`) and group."""
    short = short_kinds({r for n, r in layer_rel.items() if modules[n].lora})
    for name, info in modules.items():
        if info.lora and name in layer_rel:
            rel = layer_rel[name]
            info.kind = short.get(rel, rel)
            ancestors = name.split(".")
            in_attn = any(_ATTN.search(seg) for seg in ancestors[:-1]) or any(
                _ATTN.search(modules[".".join(ancestors[:i])].cls)
                for i in range(1, len(ancestors))
                if ".".join(ancestors[:i]) in modules
            )
            info.group = "attention" if in_attn else "mlp"
        elif info.lora and info.cls == "Embedding":
            info.group = "embedding"
