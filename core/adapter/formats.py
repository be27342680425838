"""The export formats, which runtime each is for, and one call that writes any of them (the
CLI's `graftlab export` and the window's export dialog both use :func:`export_as`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("peft", "uniform", "gguf", "merged")


@dataclass(frozen=True)
class Runtime:
    """A runtime the user serves the adapter with, and the format that suits it."""

    key: str
    label: str
    format: str
    explains: str  # one line: what will be written and why


RUNTIMES = (
    Runtime("peft", "PEFT / transformers", "peft",
            "A PEFT adapter folder as trained (adapter_config.json + adapter_model.safetensors); "
            "PeftModel.from_pretrained(base, folder) loads it."),
    Runtime("vllm", "vLLM", "uniform",
            "A PEFT folder with one rank and one alpha, each module's scale folded into lora_B, "
            "so vLLM's single lora_alpha / r serves every module at its trained strength."),
    Runtime("llama.cpp", "llama.cpp / Ollama", "gguf",
            "adapter.gguf, a llama.cpp LoRA file (--lora, or ADAPTER in an Ollama Modelfile), "
            "scales folded so llama.cpp's alpha / rank rule matches PEFT."),
    Runtime("merged", "Merged model (any runtime)", "merged",
            "The base weights with the adapter folded in, plus the tokenizer: a standalone "
            "model as large as the base."),
)


def runtime_for(fmt: str) -> Runtime:
    return next(r for r in RUNTIMES if r.format == fmt)


def export_as(fmt: str, adapter_dir: str | Path, out: str | Path, base: str | None = None,
              overwrite: bool = False, task: str = "auto",
              on_download: Any = None, on_note: Any = None) -> list[tuple[Path, int]]:
    """Write `adapter_dir` at `out` in format `fmt`; returns the files written with sizes.

    `base`: needed for ``merged``; for ``gguf`` only its config.json is read (default: the
    base the adapter or its run names); ignored otherwise. `on_note(sentence)`: what a merge
    wants said (e.g. that a quantized run merges into the unquantized base).
    """
    from graftlab.core.errors import UserError

    if fmt == "peft":
        from graftlab.core.adapter.export import export_adapter

        return export_adapter(adapter_dir, out, overwrite=overwrite)
    if fmt == "uniform":
        from graftlab.core.adapter.uniform import export_uniform

        return export_uniform(adapter_dir, out, overwrite=overwrite)
    if fmt == "gguf":
        from graftlab.core.adapter.gguf_export import export_gguf

        return export_gguf(adapter_dir, out, base, overwrite=overwrite)
    if fmt == "merged":
        if not base:
            raise UserError("`--format merged` needs the base model: add --base MODEL (a "
                            "folder, a cached hub id or demo:<name>).", field="base")
        from graftlab.core.adapter.export import export_merged

        return export_merged(base, adapter_dir, out, task, False, overwrite=overwrite,
                             on_download=on_download, on_note=on_note)
    raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.",
                    field="format")
