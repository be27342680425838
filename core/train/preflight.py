"""The pre-flight of a run: everything known before a weight is loaded.

`make_plan(cfg)` is what `graftlab plan RUN.yaml` prints and what the window shows before Start:
the model, the exact modules with their ranks and parameter counts, the trainable count PEFT will
report, the memory estimate and whether it fits, the compatibility findings, the packing decision
and what the data holds. It uses the training session's own steps (the module tree, the adapter
plan, the device rule, the data preparation, the packing rule, the memory estimate), so the plan
and the run cannot disagree. No weight file is opened: the module tree comes from config.json
(or a meta-device skeleton) and the data part needs only the tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graftlab.core.adapter.plan import AdapterPlan
from graftlab.core.config import RunConfig, uses_checkpointing
from graftlab.core.data.packing import PackingDecision, decide_packing
from graftlab.core.model.module_tree import ModuleTree
from graftlab.core.train.device import Accelerator
from graftlab.core.train.memory_estimate import (
    MemoryEstimate,
    estimate_memory,
    model_dims,
    verdict_for,
)

FREE_MEMORY_ENV = "GRAFTLAB_FREE_MEMORY"  # bytes; overrides the device's free memory (tests)
_LENGTH_SAMPLE = 20_000


@dataclass
class DataSummary:
    examples: int
    tokens: int
    truncated: int
    longest: int
    lengths: list[int] = field(repr=False, default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"examples": self.examples, "tokens": self.tokens, "truncated": self.truncated,
                "longest": self.longest}


@dataclass
class RunPlan:
    """The pre-flight of one run (see the module docstring)."""

    tree: ModuleTree
    plan: AdapterPlan
    memory: MemoryEstimate
    compatibility: list[Any]
    packing: PackingDecision
    data: DataSummary | None
    device: str
    precision: str
    fit_warning: str | None
    quantization: str = "none"

    def to_json(self) -> dict[str, Any]:
        from graftlab.core.train.session import RUNTIME_NAMES

        mem = self.memory
        return {
            "model": {"type": self.tree.model_type, "task": self.tree.task,
                      "total_params": self.tree.total_params,
                      "quantization": self.quantization},
            "modules": [{"name": m.name, "rank": m.rank, "alpha": m.alpha, "params": m.params}
                        for m in self.plan.modules],
            "trainable_params": self.plan.trainable_params,
            "memory": {"device": mem.device, "total_bytes": mem.total,
                       "breakdown": dict(mem.breakdown), "free_bytes": mem.device_free,
                       "fits": mem.verdict != "will not fit", "verdict": mem.verdict,
                       "message": self.fit_warning},
            "compatibility": [{"level": f.severity, "runtime": RUNTIME_NAMES.get(f.target,
                                                                                 f.target),
                               "message": f.message} for f in self.compatibility],
            "packing": {"mode": self.packing.mode, "reason": self.packing.reason},
            "data": self.data.to_json() if self.data is not None else None,
            "device": self.device,
            "precision": self.precision,
        }

    def to_text(self) -> str:
        from graftlab.core.train.session import RUNTIME_NAMES

        t, p, mem = self.tree, self.plan, self.memory
        gb = 2**30
        quantized = f", {self.quantization} base" if self.quantization != "none" else ""
        lines = [f"model      {t.model_type} ({t.task}), {t.total_params:,} parameters"
                 f"{quantized}",
                 f"device     {self.device} ({self.precision})",
                 f"adapter    {len(p.modules)} modules, {p.trainable_params:,} trainable "
                 f"({p.percent:.3f}%)"]
        ranks: dict[tuple[int, float], int] = {}
        for m in p.modules:
            ranks[(m.rank, m.alpha)] = ranks.get((m.rank, m.alpha), 0) + 1
        for (rank, alpha), n in sorted(ranks.items()):
            lines.append(f"           {n} × rank {rank}, alpha {alpha:g}")
        lines.append(f"memory     {mem.total / gb:.2f} GB at peak, {mem.device_free / gb:.2f} GB "
                     f"free on {mem.device}: {mem.verdict}")
        for key, value in mem.breakdown.items():
            lines.append(f"           {key:<12}{value / gb:8.2f} GB")
        if self.fit_warning:
            lines.append(f"           {self.fit_warning}")
        lines.append(f"packing    {self.packing.reason.removeprefix('packing: ')}")
        if self.data is not None:
            d = self.data
            lines.append(f"data       {d.examples:,} examples, {d.tokens:,} tokens, "
                         f"{d.truncated:,} truncated, longest {d.longest:,}")
        else:
            lines.append("data       (not read: no tokenizer with a bare config.json, or no "
                         "data.path)")
        if self.compatibility:
            for f in self.compatibility:
                lines.append(f"{f.severity:<11}{RUNTIME_NAMES.get(f.target, f.target)}: "
                             f"{f.message}")
        else:
            lines.append("compat     vLLM, llama.cpp and PEFT load this adapter as it is")
        return "\n".join(lines) + "\n"


def data_summary(data: Any) -> DataSummary:
    """Counts and token lengths of prepared data (graftlab.core.data.dataset.PreparedData)."""
    train = data.train
    n = len(train)
    lengths = [len(ids) for ids in train.select(range(min(n, _LENGTH_SAMPLE)))["input_ids"]] \
        if n else []
    tokens = sum(lengths) if n <= _LENGTH_SAMPLE else int(sum(lengths) * n / len(lengths))
    return DataSummary(n, tokens, int(data.num_truncated), max(lengths, default=0), lengths)


def cost_coefficients(tree: Any) -> tuple[float, float]:
    """(linear FLOPs per token, attention FLOPs per query-key pair) of a forward pass, from the
    module tree's shapes: 2 per weight of every layer's Linear/Conv1D and of the LM head, and
    4·hidden per pair per layer (scores and the weighted sum)."""
    dims = model_dims(tree)
    from graftlab.core.model.module_tree import LINEAR_CLASSES

    weights = sum((m.in_features or 0) * (m.out_features or 0) for m in tree.modules.values()
                  if m.cls in LINEAR_CLASSES)
    return 2.0 * weights, 4.0 * dims.hidden * max(dims.layers, 1)


def resolve_packing(cfg: RunConfig, tree: ModuleTree, lengths: list[int] | None, device: str,
                    attn_implementation: str | None) -> PackingDecision:
    """`training.packing` for this run: the rule training applies, with the data's lengths."""
    linear, attention = cost_coefficients(tree)
    return decide_packing(cfg.training.packing, tree.task, lengths, cfg.training.batch_size,
                          linear, attention, attn_implementation, device, cfg.training.seed)


def memory_for(cfg: RunConfig, tree: ModuleTree, plan: AdapterPlan, device: str,
               accel: Accelerator | None, summary: DataSummary | None = None,
               packing: PackingDecision | None = None,
               model_config: Any = None) -> MemoryEstimate:
    """The memory estimate for the run's worst batch: padded, every example as long as the
    longest (`data.max_length` when the data is not known); packed, one row holding the
    batch-size longest examples."""
    training = cfg.training
    length = min(summary.longest, cfg.data.max_length) if summary and summary.longest \
        else cfg.data.max_length
    if packing is not None and packing.mode == "on" and summary and summary.lengths:
        worst = sum(sorted(summary.lengths)[-training.batch_size:])
        training, length = dataclasses.replace(training, batch_size=1), worst
    est = estimate_memory(tree, plan, training, max(length, 1), device,
                          model_config=model_config, accel=accel,
                          quantization=cfg.model.quantization)
    override = os.environ.get(FREE_MEMORY_ENV)
    if override:
        est.device_free = int(float(override))
        est.verdict = verdict_for(est.total, est.device_free)
    return est


def attn_implementation(model_config: Any) -> str | None:
    """The attention implementation config.json asks for (None: transformers' default, sdpa)."""
    config = model_config or {}
    return config.get("attn_implementation") or config.get("_attn_implementation")


def fit_sentence(est: MemoryEstimate, cfg: RunConfig) -> str | None:
    """One sentence when the estimate exceeds the free memory: the largest term and what
    would make it fit; None when it fits."""
    if est.verdict != "will not fit":
        return None
    gb = 2**30
    part, size = max(est.breakdown.items(), key=lambda kv: kv[1])
    where = "the GPU" if est.device == "cuda" else "system RAM"
    fixes = []
    if part == "activations" or est.breakdown.get("activations", 0) > 0.3 * est.total:
        fixes.append(f"a smaller training.batch_size (now {cfg.training.batch_size})")
        fixes.append(f"a shorter data.max_length (now {cfg.data.max_length})")
        if not uses_checkpointing(cfg):
            fixes.append("training.gradient_checkpointing: true")
    quant = getattr(cfg.model, "quantization", None)
    if quant is not None and quant != "4bit":
        fixes.append("model.quantization: 4bit")
    elif quant is None and part == "weights":
        fixes.append("a smaller model")
    hint = ("; try " + ", ".join(fixes[:-1]) + (" or " if len(fixes) > 1 else "")
            + fixes[-1]) if fixes else ""
    return (f"the run needs about {est.total / gb:.1f} GB but {where} has "
            f"{est.device_free / gb:.1f} GB free; the largest part is {part} "
            f"({size / gb:.1f} GB){hint}.")


def check_run_options(cfg: RunConfig, tree: ModuleTree, device: str,
                      model_config: Any) -> Any:
    """`model.quantization` and `training.kernels` against this model and device, before any
    weight is loaded: one sentence for a combination that cannot work. Returns the kernel
    choice (graftlab.core.train.kernels.KernelChoice) with its run-log line."""
    from graftlab.core.model.quantization import check_quantization
    from graftlab.core.train.kernels import decide_kernels

    check_quantization(cfg.model.quantization, cfg.adapter.variant, device, model_config)
    return decide_kernels(cfg.training.kernels, device, tree.model_type, tree.task)


def config_dict(source: Any) -> Any:
    path = Path(source.path) if getattr(source, "path", None) else None
    if path is None:
        return None
    file = path if path.is_file() else path / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def assemble_plan(cfg: RunConfig, tree: ModuleTree, plan: AdapterPlan,
                  accel: Accelerator | None, summary: DataSummary | None = None,
                  model_config: Any = None) -> RunPlan:
    """The plan from pieces already at hand (the window has the tree and the adapter plan)."""
    from graftlab.core.adapter.compat import check_plan
    from graftlab.core.train.device import pick_device_and_precision

    findings = check_plan(plan, tree.model_type, tree.tie_word_embeddings)
    device, precision, _notes = pick_device_and_precision(cfg, accel)
    from graftlab.core.model.quantization import check_quantization

    check_quantization(cfg.model.quantization, cfg.adapter.variant, device, model_config)
    packing = resolve_packing(cfg, tree, summary.lengths if summary else None, device,
                              attn_implementation(model_config))
    if summary is None and packing.mode == "off" and cfg.training.packing == "auto" \
            and tree.task == "causal-lm":
        packing = PackingDecision("off", "packing: auto decides from the data's lengths when "
                                  "training starts (no data read here)")
    est = memory_for(cfg, tree, plan, device, accel, summary, packing, model_config)
    return RunPlan(tree, plan, est, findings, packing, summary, device, precision,
                   fit_sentence(est, cfg), cfg.model.quantization)


def make_plan(cfg: RunConfig, accel: Accelerator | None = None,
              with_data: bool = True) -> RunPlan:
    """The whole pre-flight of `cfg` without loading a weight (UserError on bad input, with the
    sentences `graftlab train` gives)."""
    from graftlab.core.adapter.plan import plan_adapter
    from graftlab.core.model.loading import load_tokenizer
    from graftlab.core.model.sources import resolve_source
    from graftlab.core.train.session import module_tree_for

    tree = module_tree_for(cfg)
    plan = plan_adapter(tree, cfg.adapter)
    source = resolve_source(cfg.model.source, cfg.model.trust_remote_code)
    summary = None
    bare_config = source.path is not None and Path(source.path).is_file()
    if with_data and cfg.data.path and not bare_config:
        from graftlab.core.data.dataset import prepare

        tokenizer = load_tokenizer(source)
        summary = data_summary(prepare(cfg.data, tokenizer, tree.task, cfg.training.seed))
    return assemble_plan(cfg, tree, plan, accel, summary, config_dict(source))


# ---- `graftlab plan` -------------------------------------------------------------------------
def cmd_plan(args: Any) -> int:
    from graftlab.core.config import validate

    cfg = RunConfig.load(args.run)
    if args.output:
        cfg.training.output_dir = args.output
    validate(cfg, args.run)
    result = make_plan(cfg)
    if args.json:
        print(json.dumps(result.to_json(), indent=None))
    else:
        print(result.to_text(), end="")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plan", help="the whole pre-flight of a run.yaml (modules, trainable "
                       "parameters, memory, packing, compatibility, data) without loading a "
                       "weight")
    p.add_argument("run", help="path to run.yaml")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--output", help="run folder (overrides training.output_dir; not created)")
    p.set_defaults(func=cmd_plan)
