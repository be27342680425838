"""GUI state <-> RunConfig, exactly.

The GUI holds the adapter as ticked module names plus per-module rank/alpha overrides; run.yaml
holds targets and overrides. Converting goes through the core planner, so globs in a hand-written
run.yaml resolve exactly as `graftlab train` resolves them, and GUI state -> RunConfig -> GUI
state is the identity (save -> load -> save gives the same YAML byte for byte).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from graftlab.core.adapter.plan import plan_adapter
from graftlab.core.config import (
    AdapterConfig,
    DataConfig,
    ModelConfig,
    Override,
    RunConfig,
    TrainingConfig,
)
from graftlab.core.model.module_tree import ModuleTree

RankAlpha = tuple[int | None, float | None]


@dataclass
class AdapterState:
    """Adapter settings as the GUI holds them."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    variant: str = "lora"
    selected: list[str] = field(default_factory=list)
    """Ticked module names, in model order."""
    overrides: dict[str, RankAlpha] = field(default_factory=dict)
    """Per-module (rank, alpha); None keeps the adapter-wide value. Only ticked modules."""


@dataclass
class RunState:
    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: AdapterState = field(default_factory=AdapterState)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def overrides_to_config(selected: list[str], overrides: dict[str, RankAlpha]) -> list[Override]:
    """Group per-module overrides by value, in model order: one Override per distinct value."""
    groups: dict[RankAlpha, list[str]] = {}
    for name in selected:
        value = overrides.get(name)
        if value is not None and value != (None, None):
            groups.setdefault(value, []).append(name)
    return [Override(targets=names, rank=r, alpha=a) for (r, a), names in groups.items()]


def adapter_config(state: AdapterState) -> AdapterConfig:
    return AdapterConfig(
        rank=state.rank, alpha=state.alpha, dropout=state.dropout, variant=state.variant,
        targets=list(state.selected),
        overrides=overrides_to_config(state.selected, state.overrides),
    )


def to_run_config(state: RunState) -> RunConfig:
    return RunConfig(
        model=copy.deepcopy(state.model),
        adapter=adapter_config(state.adapter),
        data=copy.deepcopy(state.data),
        training=copy.deepcopy(state.training),
    )


def adapter_state(cfg: AdapterConfig, tree: ModuleTree, where: str = "run.yaml") -> AdapterState:
    """Resolve `cfg` (names or globs, overrides) against `tree` the way the core does.

    Raises:
        UserError: a target or override matches nothing, or names a module LoRA cannot wrap.
    """
    state = AdapterState(cfg.rank, cfg.alpha, cfg.dropout, cfg.variant)
    if not cfg.targets:
        return state
    plan = plan_adapter(tree, cfg, where)
    order = {name: i for i, name in enumerate(tree.modules)}
    planned = sorted(plan.modules, key=lambda m: order[m.name])
    state.selected = [m.name for m in planned]
    for m in planned:
        value = (m.rank if m.rank != cfg.rank else None,
                 m.alpha if m.alpha != cfg.alpha else None)
        if value != (None, None):
            state.overrides[m.name] = value
    return state


def from_run_config(cfg: RunConfig, tree: ModuleTree, where: str = "run.yaml") -> RunState:
    return RunState(
        model=copy.deepcopy(cfg.model),
        adapter=adapter_state(cfg.adapter, tree, where),
        data=copy.deepcopy(cfg.data),
        training=copy.deepcopy(cfg.training),
    )
