"""The adapter's model card (README.md), in the form PEFT writes: YAML front matter
(``base_model``, ``library_name: peft``, ``pipeline_tag``, ``tags``), then the Hugging Face
card sections (Model Details, Training Details, Evaluation, Framework versions), filled with
what Graftlab knows: the base, targets, ranks and per-module overrides, alpha, data, steps and
final metrics.

``base_model`` (which the hub turns into a link) is written only for a hub id: a local folder
is named in the text, never turned into a ``https://huggingface.co/<path>`` URL.

A card Graftlab wrote ends with a line holding the SHA-256 of the text above it. A README
without that line, or whose text no longer matches it, is the user's: it is never replaced
(a save or an export carries it over as it is).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

README = "README.md"
_MARK = "<!-- written by Graftlab; sha256:{} (edit this card and Graftlab keeps it) -->"
_MARK_RE = re.compile(r"<!-- written by Graftlab; sha256:([0-9a-f]{64}) [^\n]*-->\n?\Z")
_TASKS = {"CAUSAL_LM": ("causal-lm", "text-generation"),
          "SEQ_CLS": ("sequence-classification", "text-classification")}
_FORMATS = {
    "peft": "",
    "uniform": ("Exported for runtimes that apply one scale to every module (vLLM, llama.cpp's "
                "converter): every module is padded to one rank with zeros and its own scale "
                "is folded into lora_B, so `lora_alpha / r` = 1 serves each module at the "
                "strength it was trained with; PEFT's outputs are unchanged."),
    "gguf": ("Exported as a llama.cpp LoRA file (`adapter.gguf`): load it with "
             "`llama-cli -m BASE.gguf --lora adapter.gguf`, or as `ADAPTER` in an Ollama "
             "Modelfile. Each module's PEFT scale is folded into lora_B, so llama.cpp's "
             "alpha / rank rule reproduces it."),
}


@dataclass
class CardFacts:
    """What the card says. Everything but the base is optional."""

    base: str
    task: str = "causal-lm"
    variant: str = "lora"
    rank: int = 0
    alpha: float = 0.0
    modules: list[tuple[str, int, float]] = field(default_factory=list)  # name, rank, alpha
    data: dict[str, Any] = field(default_factory=dict)  # run.yaml's data section
    training: dict[str, Any] = field(default_factory=dict)  # run.yaml's training section
    examples: int | None = None
    steps: int | None = None
    max_steps: int | None = None
    final_loss: float | None = None
    eval: dict[str, float] = field(default_factory=dict)
    device: str | None = None  # as the run resolved it (training.device may say auto)
    precision: str | None = None
    export: str = "peft"


def is_hub_id(name: str) -> bool:
    return (name.count("/") == 1 and not name.startswith(("/", ".", "~")) and ":" not in name
            and not Path(name).exists())


def is_graftlab_card(text: str) -> bool:
    """True when `text` is a card Graftlab wrote and nobody has edited since."""
    m = _MARK_RE.search(text)
    return bool(m) and hashlib.sha256(text[:m.start()].encode()).hexdigest() == m.group(1)


def user_readme(folder: Path) -> str | None:
    """The README in `folder` when the user wrote or edited it (to keep), else None."""
    path = Path(folder) / README
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return None if is_graftlab_card(text) else text


def _module_facts(folder: Path, config: dict[str, Any]) -> list[tuple[str, int, float]]:
    from graftlab.core.adapter.uniform import pattern_value
    from safetensors import safe_open

    a0 = float(config.get("lora_alpha") or 0)
    out = []
    with contextlib.suppress(Exception), \
            safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as fh:
        for key in sorted(fh.keys()):  # noqa: SIM118 - safe_open has no __iter__
            m = re.match(r"^(.+)\.lora_(?:embedding_)?A(?:\.[^.]+)?(?:\.weight)?$", key)
            if m:
                name = m.group(1).removeprefix("base_model.model.")
                alpha = float(pattern_value(name, config.get("alpha_pattern") or {}, a0))
                out.append((name, int(fh.get_slice(key).get_shape()[0]), alpha))
    return out


def _read_metrics(path: Path, facts: CardFacts) -> None:
    """Steps, final loss and the last eval of the adapted model, from metrics.jsonl."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        kind = e.get("event")
        if kind == "started":
            facts.max_steps = e.get("total_steps")
            facts.examples = e.get("num_examples")
            facts.device, facts.precision = e.get("device"), e.get("precision")
        elif kind == "step":
            facts.steps, facts.final_loss = e.get("step"), e.get("loss")
        elif kind == "eval" and not e.get("base"):
            facts.eval = {k: float(e[k]) for k in ("eval_loss", "perplexity", "accuracy",
                                                   "f1_macro") if e.get(k) is not None}
        elif kind == "finished":
            facts.steps = e.get("step", facts.steps)


def read_facts(adapter_dir: str | Path, run_dir: str | Path | None = None,
               base: str | None = None) -> CardFacts:
    """Facts from an adapter folder, plus its run folder when there is one (given, or the
    folder above a run's ``adapter/``)."""
    import yaml

    folder = Path(adapter_dir)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    variant = "dora" if config.get("use_dora") else "rslora" if config.get("use_rslora") \
        else "lora"
    facts = CardFacts(str(base or config.get("base_model_name_or_path") or ""),
                      _TASKS.get(str(config.get("task_type") or ""), ("causal-lm", ""))[0],
                      variant, int(config.get("r") or 0), float(config.get("lora_alpha") or 0),
                      _module_facts(folder, config))
    if run_dir is None and (folder.parent / "run.yaml").is_file():
        run_dir = folder.parent
    if run_dir is not None:
        run_dir = Path(run_dir)
        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
            run = yaml.safe_load((run_dir / "run.yaml").read_text(encoding="utf-8")) or {}
            facts.data, facts.training = dict(run.get("data") or {}), \
                dict(run.get("training") or {})
        _read_metrics(run_dir / "metrics.jsonl", facts)
    return facts


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _target_summary(names: list[str]) -> str:
    """``8 modules: q_proj, v_proj in layers 0-3``."""
    kinds = sorted({n.rpartition(".")[2] for n in names})
    layers = sorted({int(m.group(1)) for n in names if (m := re.search(r"\.(\d+)\.", n))})
    where = ""
    if layers:
        span = f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) \
            else ", ".join(map(str, layers))
        where = f" in layer{'s' if len(layers) > 1 else ''} {span}"
    return f"{len(names)} modules: {', '.join(kinds)}{where}"


def _scale(alpha: float, rank: int, variant: str) -> float:
    return alpha / (math.sqrt(rank) if variant == "rslora" else rank) if rank else 0.0


def _num(x: float) -> str:
    return f"{x:.4g}"


def _adapter_lines(f: CardFacts) -> list[str]:
    kind = {"lora": "LoRA", "rslora": "LoRA (rsLoRA: scale alpha/√r)", "dora": "DoRA"}
    lines = [f"- **Adapter:** {kind.get(f.variant, f.variant)}, task {f.task}",
             f"- **Rank / alpha:** r = {f.rank}, alpha = {_num(f.alpha)} "
             f"(scale {_num(_scale(f.alpha, f.rank, f.variant))})"]
    if f.modules:
        names = [n for n, _r, _a in f.modules]
        lines += [f"- **Target modules:** {_target_summary(names)}", "",
                  f"<details><summary>All {len(names)} modules</summary>", "",
                  *[f"- `{n}`" for n in names], "", "</details>"]
        groups: dict[tuple[int, float], list[str]] = {}
        for name, r, a in f.modules:
            if (r, a) != (f.rank, f.alpha):
                groups.setdefault((r, a), []).append(name)
        if groups:
            lines += ["", "Per-module overrides:", "", "| modules | rank | alpha | scale |",
                      "|---|---|---|---|"]
            lines += [f"| {_names(names, 3)} | {r} | {_num(a)} | "
                      f"{_num(_scale(a, r, f.variant))} |" for (r, a), names in groups.items()]
    return lines


def _training_lines(f: CardFacts) -> list[str]:
    d, t = f.data, f.training
    fmt = d.get("format") if d.get("format") not in (None, "auto") else None
    data = [f"- **Dataset:** `{d['path']}`" + (f" ({fmt})" if fmt else "")] \
        if d.get("path") else ["- **Dataset:** not recorded"]
    if f.examples is not None:
        held = d.get("eval_fraction") or 0
        data.append(f"- **Examples:** {f.examples} for training"
                    + (f", {held:.0%} of the data held out for evaluation" if held else ""))
    if d.get("max_length"):
        data.append(f"- **Max length:** {d['max_length']} tokens")
    hyper = [f"- **{label}:** {t[key]}" for key, label in (
        ("batch_size", "Batch size"), ("gradient_accumulation", "Gradient accumulation"),
        ("learning_rate", "Learning rate"), ("scheduler", "Scheduler"),
        ("warmup_steps", "Warmup steps"), ("seed", "Seed"))
        if t.get(key) is not None]
    if f.device or f.precision:
        hyper.append(f"- **Training regime:** {f.precision or '?'} on {f.device or '?'}")
    if f.steps is not None:
        planned = f" of {f.max_steps}" if f.max_steps else ""
        hyper.insert(0, f"- **Steps:** {f.steps}{planned}")
    return (["### Training Data", "", *data, "", "### Training Procedure", "",
             "#### Training Hyperparameters", "", *(hyper or ["- not recorded"])])


def _eval_lines(f: CardFacts) -> list[str]:
    rows = []
    if f.final_loss is not None:
        rows.append(f"- **Final training loss** (last logged step): {_num(f.final_loss)}")
    labels = {"eval_loss": "Eval loss", "perplexity": "Perplexity", "accuracy": "Accuracy",
              "f1_macro": "Macro-F1"}
    rows += [f"- **{labels[k]}:** {_num(v)}" for k, v in f.eval.items()]
    return ["## Evaluation", "", "### Results", "", *(rows or ["- no metrics recorded"])]


def _versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg, label in (("peft", "PEFT"), ("transformers", "Transformers"),
                       ("torch", "PyTorch"), ("graftlab", "Graftlab")):
        with contextlib.suppress(PackageNotFoundError):
            out.append(f"- {label} {version(pkg)}")
    return out


def _usage_lines(f: CardFacts) -> list[str]:
    if f.export == "gguf":
        return ["```bash", "llama-cli -m BASE.gguf --lora adapter.gguf", "```"]
    auto = "AutoModelForCausalLM" if f.task == "causal-lm" else \
        "AutoModelForSequenceClassification"
    return ["```python", "from peft import PeftModel", f"from transformers import {auto}", "",
            f"base = {auto}.from_pretrained({f.base!r})",
            'model = PeftModel.from_pretrained(base, "path/to/this/folder")', "```"]


def render_card(f: CardFacts) -> str:
    """The card text, ending in Graftlab's mark."""
    hub = is_hub_id(f.base)
    pipeline = "text-classification" if f.task == "sequence-classification" \
        else "text-generation"
    meta = ([f"base_model: {f.base}"] if hub else []) + [
        "library_name: peft", f"pipeline_tag: {pipeline}", "tags:"] + (
        [f"- base_model:adapter:{f.base}"] if hub else []) + [
        f"- {'dora' if f.variant == 'dora' else 'lora'}", "- transformers", "- graftlab"]
    where = (f"the hub model [`{f.base}`](https://huggingface.co/{f.base})" if hub else
             f"the local model `{Path(f.base).name}` (folder `{f.base}`)" if f.base else
             "an unrecorded base model")
    title = f.base if hub else (Path(f.base).name or "a base model")
    body = ["---", *meta, "---", "",
            f"# {'DoRA' if f.variant == 'dora' else 'LoRA'} adapter for {title}", "",
            f"Trained with Graftlab on {where}."]
    if _FORMATS.get(f.export):
        body += ["", _FORMATS[f.export]]
    body += ["", "## Model Details", "", f"- **Base model:** `{f.base or 'not recorded'}`",
             *_adapter_lines(f), "", "## How to Get Started with the Model", "",
             *_usage_lines(f), "", "## Training Details", "", *_training_lines(f), "",
             *_eval_lines(f), "", "### Framework versions", "", *_versions()]
    text = "\n".join(body) + "\n"
    return text + _MARK.format(hashlib.sha256(text.encode()).hexdigest()) + "\n"


def card_for_export(adapter_dir: str | Path, export: str = "peft",
                    base: str | None = None) -> str:
    """The README an export writes: the user's own card as it is, else a fresh one."""
    kept = user_readme(Path(adapter_dir))
    if kept is not None:
        return kept
    facts = read_facts(adapter_dir, base=base)
    facts.export = export
    return render_card(facts)
