"""Selection → adapter plan: which modules get which rank and alpha, exact counts, LoraConfig.

The plan is computed from the module tree alone (shapes, no weights), so every error and every
count is known before a single weight is loaded. PEFT stays the engine: the plan compiles to a
``LoraConfig`` with explicit module names and ``rank_pattern``/``alpha_pattern`` keyed by
``"^" + re.escape(name)``, the form PEFT matches exactly: PEFT tests each key as a regex against
the end of the module name from a dot boundary, so an anchored, escaped full name picks out that
one module.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from graftlab.core.config import AdapterConfig, Override, check_lora_values
from graftlab.core.errors import UserError
from graftlab.core.model.module_tree import ModuleTree


@dataclass(frozen=True)
class PlannedModule:
    """One module that gets an adapter."""

    name: str
    kind: str
    layer: int | None
    rank: int
    alpha: float
    in_features: int
    out_features: int
    params: int
    cls: str = "Linear"

    def scale(self, variant: str) -> float:
        return self.alpha / (math.sqrt(self.rank) if variant == "rslora" else self.rank)


@dataclass
class AdapterPlan:
    """The resolved adapter: modules with their rank and alpha, and exact parameter counts."""

    modules: list[PlannedModule]
    rank: int
    alpha: float
    dropout: float
    variant: str
    task: str
    base_params: int
    saved_modules: dict[str, int] = field(default_factory=dict)
    """Modules trained in full (the classification head): name → parameters."""
    tie_embeddings: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def lora_params(self) -> int:
        return sum(m.params for m in self.modules)

    @property
    def trainable_params(self) -> int:
        return self.lora_params + sum(self.saved_modules.values())

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable_params / self.base_params if self.base_params else 0.0

    def by_layer(self) -> dict[int | None, dict[str, int]]:
        """Trainable LoRA parameters per layer index, split by module kind."""
        out: dict[int | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for m in self.modules:
            out[m.layer][m.kind] += m.params
        return {k: dict(v) for k, v in out.items()}

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for m in self.modules:
            out[m.kind] += m.params
        return dict(out)

    def lora_config(self) -> Any:
        """The PEFT ``LoraConfig`` for this plan."""
        from peft import LoraConfig

        names = [m.name for m in self.modules]
        rank_pattern = {"^" + re.escape(m.name): m.rank for m in self.modules
                        if m.rank != self.rank}
        alpha_pattern = {"^" + re.escape(m.name): m.alpha for m in self.modules
                         if m.alpha != self.alpha}
        kwargs: dict[str, Any] = {}
        if self.modules and all(m.cls == "Conv1D" for m in self.modules):
            kwargs["fan_in_fan_out"] = True  # GPT-2 Conv1D stores W as (in, out)
        if self.tie_embeddings:
            kwargs["ensure_weight_tying"] = True
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=names,
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            use_rslora=self.variant == "rslora",
            use_dora=self.variant == "dora",
            bias="none",
            task_type="SEQ_CLS" if self.task == "sequence-classification" else "CAUSAL_LM",
            modules_to_save=list(self.saved_modules) or None,
            **kwargs,
        )

    def resolved(self) -> AdapterConfig:
        """An AdapterConfig naming the exact modules (no globs), for a run folder's run.yaml."""
        groups: dict[tuple[int, float], list[str]] = defaultdict(list)
        for m in self.modules:
            if (m.rank, m.alpha) != (self.rank, self.alpha):
                groups[(m.rank, m.alpha)].append(m.name)
        return AdapterConfig(
            rank=self.rank, alpha=self.alpha, dropout=self.dropout, variant=self.variant,
            targets=[m.name for m in self.modules],
            overrides=[Override(targets=names, rank=r, alpha=a)
                       for (r, a), names in groups.items()],
        )


def _resolve_patterns(tree: ModuleTree, patterns: list[str], key: str) -> list[str]:
    """Expand names/globs to LoRA-capable module names; error on what cannot be adapted."""
    out: dict[str, None] = {}
    for i, pattern in enumerate(patterns):
        where = f"{key}[{i}]"
        hits = tree.match(pattern)
        if not hits:
            raise UserError(
                f"`{where}` = {pattern!r} matches no module of this {tree.model_type} model; "
                "run `graftlab inspect MODEL` to list module names.", field=key)
        capable = [h for h in hits if tree.modules[h].lora]
        if not capable:
            first = tree.modules[hits[0]]
            raise UserError(f"`{where}` = {pattern!r}: {first.reason} Pick Linear modules "
                            "such as the attention or MLP projections.", field=key)
        for h in capable:
            out.setdefault(h)
    return list(out)


def plan_adapter(tree: ModuleTree, cfg: AdapterConfig, where: str = "run.yaml") -> AdapterPlan:
    """Resolve `cfg` against `tree` into an :class:`AdapterPlan`.

    Raises:
        UserError: for a glob matching nothing, a module LoRA cannot wrap, an empty selection,
            or a rank/alpha/dropout out of range.
    """
    check_lora_values(cfg.rank, cfg.alpha, cfg.dropout, where, "adapter.")
    if not cfg.targets:
        raise UserError("no modules are selected for adapters; tick modules in the layer "
                        "tree or set `adapter.targets` (for example a preset such as "
                        "attention).", field="adapter.targets")
    names = _resolve_patterns(tree, cfg.targets, "adapter.targets")
    settings = {n: (cfg.rank, cfg.alpha) for n in names}
    for i, o in enumerate(cfg.overrides):
        key = f"adapter.overrides[{i}].targets"
        hits = [n for n in _resolve_patterns(tree, o.targets, key) if n in settings]
        if not hits:
            raise UserError(f"`{key}` matches no module that is selected for an adapter; "
                            "add those modules to adapter.targets or remove the override.",
                            field=key)
        for n in hits:
            rank, alpha = settings[n]
            settings[n] = (o.rank if o.rank is not None else rank,
                           o.alpha if o.alpha is not None else alpha)
        check_lora_values(o.rank if o.rank is not None else cfg.rank,
                          o.alpha if o.alpha is not None else cfg.alpha, cfg.dropout, where,
                          f"adapter.overrides[{i}].")
    saved: dict[str, int] = {}
    if tree.task == "sequence-classification":
        for h in tree.head:
            if h in settings:
                raise UserError(f"{h} is the classification head, which is trained in full; "
                                "untick it (it does not need an adapter).",
                                field="adapter.targets")
            saved[h] = tree.modules[h].total_params
    dora = cfg.variant == "dora"
    warnings: list[str] = []
    planned = []
    for n, (rank, alpha) in settings.items():
        m = tree.modules[n]
        assert m.in_features is not None and m.out_features is not None
        if rank > min(m.in_features, m.out_features):
            warnings.append(f"{n}: rank {rank} exceeds min(in, out) = "
                            f"{min(m.in_features, m.out_features)}, so the adapter is not "
                            "low-rank; a smaller rank trains the same update space.")
        planned.append(PlannedModule(n, m.kind, m.layer, rank, alpha, m.in_features,
                                     m.out_features, m.lora_params(rank, dora), m.cls))
    embed_or_head = [p.name for p in planned if tree.modules[p.name].group in
                     ("embedding", "head")]
    tie = tree.tie_word_embeddings and bool(embed_or_head)
    if embed_or_head:
        warnings.append(f"{', '.join(embed_or_head)}: adapting embeddings or the output head "
                        "stores the full embedding matrix in the adapter file (large files).")
    return AdapterPlan(planned, cfg.rank, cfg.alpha, cfg.dropout, cfg.variant, tree.task,
                       tree.total_params, saved, tie, warnings)
