"""Export: a plain PEFT adapter folder, or a merged model, written atomically.

A failure at any point leaves an existing folder at the destination untouched (the new one is
built in a temporary sibling and renamed into place only when complete), and no destination that
holds anything Graftlab did not write is ever replaced (graftlab.core.adapter.destination).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from graftlab.core.adapter.destination import check_free_space, check_output_dir, graftlab_output
from graftlab.core.errors import UserError
from graftlab.core.model.quantization import merge_note, write_record

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# A classifier's class names beside adapter_config.json ({"0": "negative", ...}, the base
# config's id2label form): PEFT's own config has no place for them.
LABELS_FILE = "id2label.json"


def classifier_labels(model: Any) -> dict[str, str] | None:
    """The class names of a sequence-classification PeftModel, else None."""
    configs = getattr(model, "peft_config", None) or {}
    task_types = {str(getattr(c, "task_type", "") or "") for c in configs.values()}
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if not id2label or not any(t.endswith("SEQ_CLS") for t in task_types):
        return None
    return {str(k): str(v) for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))}


def read_label_names(adapter_dir: str | Path) -> list[str] | None:
    """The class names stored with a classification adapter (id = index), or None."""
    path = Path(adapter_dir) / LABELS_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        ids = sorted(int(k) for k in raw) if isinstance(raw, dict) else None
    except (ValueError, TypeError):
        ids = None
    if ids is None:
        raise UserError(f"{path} is not a mapping of class ids to names; restore it from the "
                        "run's adapter or delete it.", field="adapter_dir")
    if ids != list(range(len(ids))):
        raise UserError(f"{path} does not number its classes 0 to {len(ids) - 1}; restore it "
                        "from the run's adapter.", field="adapter_dir")
    names = {int(k): str(v) for k, v in raw.items()}
    return [names[i] for i in ids]


def _listing(folder: Path) -> list[tuple[Path, int]]:
    return sorted((p, p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _is_hub_id(name: str) -> bool:
    return (name.count("/") == 1 and not name.startswith(("/", ".", "~"))
            and ":" not in name and not Path(name).exists())


def adapter_readme(base_name: str) -> str:
    """The short model card of earlier Graftlab versions (recognised, and replaced, by
    save_adapter; graftlab.core.adapter.model_card writes today's). ``base_model`` metadata
    only for a hub id: the hub turns it into a link, and a local path would become a broken
    URL."""
    meta = ["library_name: peft", "tags:", "- lora", "- graftlab"]
    if _is_hub_id(base_name):
        meta.insert(0, f"base_model: {base_name}")
    where = "hub model" if _is_hub_id(base_name) else "local model folder"
    return ("---\n" + "\n".join(meta) + "\n---\n\n# LoRA adapter\n\n"
            f"Trained with Graftlab on the {where} `{base_name}`. Load it with\n"
            "`peft.PeftModel.from_pretrained(base_model, this_folder)`.\n")


def finite_check(model: Any) -> str | None:
    """None when every trainable (adapter) weight is finite, else a sentence naming one."""
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and not bool(torch.isfinite(param.detach()).all()):
            return (f"the adapter weight {name} holds NaN or infinite values, so it was not "
                    "saved")
    return None


def save_adapter(model: Any, out_dir: str | Path, base_name: str,
                 overwrite: bool = False, run_dir: str | Path | None = None
                 ) -> list[tuple[Path, int]]:
    """Save a PeftModel's adapter as a plain PEFT folder with ``base_model_name_or_path`` set,
    and its model card (README.md; from `run_dir`'s run.yaml and metrics.jsonl when given).

    Refuses non-finite weights (nothing is written then) and destinations that hold files
    Graftlab did not write; `overwrite` allows replacing an earlier Graftlab export. A README
    the user wrote in `out_dir` is carried over unchanged.
    """
    from graftlab.core.adapter.model_card import read_facts, render_card, user_readme

    out_dir = Path(out_dir)
    bad = finite_check(model)
    if bad:
        raise UserError(bad + "; lower training.learning_rate (or check the data) and resume "
                        "from the last good checkpoint.", field="training.learning_rate")
    with graftlab_output(out_dir, "adapter", overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = base_name
        if isinstance(cfg.get("modules_to_save"), list):  # peft appends the head's name again
            cfg["modules_to_save"] = list(dict.fromkeys(cfg["modules_to_save"]))
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
        kept = user_readme(out_dir)
        if kept is not None and kept == adapter_readme(base_name):
            kept = None  # the short card of earlier Graftlab versions: ours to replace
        card = kept if kept is not None else render_card(read_facts(tmp, run_dir, base_name))
        (tmp / "README.md").write_text(card, encoding="utf-8")
        labels = classifier_labels(model)
        if labels:
            (tmp / LABELS_FILE).write_text(json.dumps(labels, indent=2), encoding="utf-8")
        write_record(tmp, model)  # quantization.json, for a base trained quantized
    return _listing(out_dir)


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    adapter_dir = Path(adapter_dir)
    missing = [f for f in ADAPTER_FILES if not (adapter_dir / f).is_file()]
    if missing:
        raise UserError(f"{adapter_dir} is not a PEFT adapter folder (missing "
                        f"{', '.join(missing)}); choose the adapter/ folder of a run.",
                        field="adapter_dir")
    return adapter_dir


def export_adapter(adapter_dir: str | Path, out_dir: str | Path,
                   overwrite: bool = False) -> list[tuple[Path, int]]:
    """Copy a trained adapter folder to `out_dir` atomically; returns files with sizes."""
    src = check_adapter_dir(adapter_dir)
    out_dir = Path(out_dir)
    if out_dir.resolve() == src.resolve():
        return _listing(out_dir)
    check_output_dir(out_dir, overwrite)  # before reading anything
    check_free_space(out_dir, sum(n for _p, n in _listing(src)))
    from graftlab.core.adapter.model_card import README, card_for_export

    with graftlab_output(out_dir, "adapter", overwrite) as tmp:
        for item in src.iterdir():
            if item.is_file() and item.name != README:
                shutil.copy2(item, tmp / item.name)
        (tmp / README).write_text(card_for_export(src, "peft"), encoding="utf-8")
    return _listing(out_dir)


def check_adapter_fits(adapter_dir: str | Path, model_source: str, task: str = "auto",
                       trust_remote_code: bool = False) -> None:
    """Check, from shapes alone, that every adapted module exists in the base with the same size.

    PEFT loads an adapter onto a base with *fewer* layers without a word (the extra tensors are
    dropped), so this check runs before any weight is loaded.
    """
    from graftlab.core.model.module_tree import build_tree
    from safetensors import safe_open

    src = check_adapter_dir(adapter_dir)
    tree = build_tree(model_source, task, trust_remote_code)
    try:
        with safe_open(str(src / "adapter_model.safetensors"), framework="pt") as fh:
            shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # truncated or not a safetensors file
        raise UserError(f"{src / 'adapter_model.safetensors'} cannot be read "
                        f"({type(exc).__name__}); the file is damaged or incomplete.",
                        field="adapter_dir") from None
    prefix = "base_model.model."
    for key, shape in shapes.items():
        for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not key.endswith(part):
                continue
            name = key[: -len(part)].removeprefix(prefix)
            module = tree.modules.get(name)
            if module is None:
                raise UserError(f"the adapter in {src} does not fit {model_source}: it adapts "
                                f"{name}, which the base does not have ({tree.model_type}, "
                                f"{tree.num_layers} layers); pick the base it was trained on.",
                                field="model.source")
            want = module.in_features if dim == 1 else module.out_features
            if want != shape[dim]:
                raise UserError(f"the adapter in {src} does not fit {model_source}: {name} has "
                                f"size {want} in the base but {shape[dim]} in the adapter; pick "
                                "the base it was trained on.", field="model.source")


def load_peft_model(model_source: str, adapter_dir: str | Path, task: str = "auto",
                    trust_remote_code: bool = False, on_download: Any = None) -> Any:
    """Load base weights and apply the adapter (for merging, inspection and tests)."""
    from graftlab.core.model.loading import load_base_model
    from peft import PeftModel

    src = check_adapter_dir(adapter_dir)
    check_adapter_fits(src, model_source, task, trust_remote_code)
    # A classifier's head is sized and named from the labels stored with its adapter.
    model, _tok, _task = load_base_model(model_source, task, trust_remote_code=trust_remote_code,
                                         label_names=read_label_names(src),
                                         on_download=on_download)
    return PeftModel.from_pretrained(model, str(src))


def _weights_bytes(folder: Path | None) -> int:
    if folder is None or not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.name.endswith((".safetensors", ".bin")))


def export_merged(model_source: str, adapter_dir: str | Path, out_dir: str | Path,
                  task: str = "auto", trust_remote_code: bool = False,
                  overwrite: bool = False, on_download: Any = None,
                  on_note: Any = None) -> list[tuple[Path, int]]:
    """Merge the adapter into the base weights and save a standalone model with its tokenizer.

    The destination and the free disk space are checked before any weight is loaded. The base
    is always loaded fresh and unquantized; for an adapter trained on a quantized base,
    `on_note` (a callable taking one sentence) is told so.
    """
    from graftlab.core.model.loading import load_tokenizer
    from graftlab.core.model.sources import resolve_source

    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    check_adapter_dir(adapter_dir)
    source = resolve_source(model_source, trust_remote_code)
    if source.weights == "hub":  # merged size = base size; known from the hub's file list
        from graftlab.core.model.hub import repo_files, weight_files

        need = sum(weight_files(repo_files(source.spec)).values())
    else:
        need = _weights_bytes(source.path if source.kind != "config" else None)
    check_free_space(out_dir, need)
    note = merge_note(adapter_dir, model_source)
    if note and on_note is not None:
        on_note(note)
    peft_model = load_peft_model(model_source, adapter_dir, task, trust_remote_code,
                                 on_download)
    merged = peft_model.merge_and_unload()
    tokenizer = load_tokenizer(resolve_source(model_source, trust_remote_code))
    with graftlab_output(out_dir, "merged", overwrite) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return _listing(out_dir)
