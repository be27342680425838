"""GGUF export: a PEFT LoRA adapter as the llama.cpp LoRA file that llama.cpp's own
``convert_lora_to_gguf.py`` writes (for ``llama-cli --lora``, llama-server, Ollama's ADAPTER).

What llama.cpp expects, and what this module writes:

- metadata ``general.architecture`` (the base's llama.cpp architecture), ``general.type`` =
  ``adapter``, ``adapter.type`` = ``lora``, ``adapter.lora.alpha`` (float32);
- per adapted weight two f32 tensors, ``<gguf name>.lora_a`` (PEFT's lora_A, [r, in]) and
  ``.lora_b`` (lora_B, [out, r]), named through gguf's own tensor map (``blk.N.attn_q.weight``);
  for the token embeddings lora_a is transposed, as the converter does;
- for Llama and Mistral, the rows of q_proj and k_proj's lora_B permuted the way the converter
  permutes those weights of the base (``LlamaModel.permute`` with n_head / n_head_kv, so RoPE
  sees the order llama.cpp uses); lora_A is unchanged. Qwen2 is converted without a permute.

Scales: llama.cpp multiplies each tensor by ``alpha / rank`` (its rank read from the tensor),
whereas PEFT uses each module's own ``alphaᵢ / rᵢ`` (``alpha_pattern``, ``rank_pattern``) or
``alphaᵢ / √rᵢ`` (rsLoRA). The file keeps the config's ``lora_alpha`` and multiplies each
lora_B by ``sᵢ / (alpha / rᵢ)``, so llama.cpp's rule reproduces PEFT's update for every tensor
(modules at the global rank and alpha are written unchanged, as the converter writes them).

Refused, each with one sentence: architectures other than llama, mistral and qwen2; DoRA
(llama.cpp has no magnitude vector); classifier adapters; tensors that are not LoRA factors
(``modules_to_save``, LoRA biases, trainable tokens); modules llama.cpp cannot map; an
lm_head adapter on a base that ties lm_head to the embeddings (llama.cpp has no separate head).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from graftlab.core.adapter.destination import (
    OutputExistsError,
    check_free_space,
    check_output_dir,
    graftlab_output,
    write_error,
)
from graftlab.core.adapter.uniform import pattern_value
from graftlab.core.errors import UserError

GGUF_FILE = "adapter.gguf"
MARKER_KEY = "graftlab.export"  # a Graftlab-written .gguf file carries this key
# Hugging Face model_type -> (llama.cpp architecture, whether q/k rows are permuted); from the
# converter's registrations (LlamaModel: Llama and Mistral; Qwen2Model: no permute).
ARCHS = {"llama": ("LLAMA", True), "mistral": ("LLAMA", True), "qwen2": ("QWEN2", False)}
_KEY = re.compile(r"^(?P<module>.+?)\.(?P<which>lora_A|lora_B|lora_embedding_A|"
                  r"lora_embedding_B)(?:\.weight)?$")


def llama_permute(rows: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """Reorder the rows (dim 0) of a q/k projection factor as llama.cpp's converter does."""
    n = n_head_kv if n_head_kv is not None and n_head_kv != n_head else n_head
    return (rows.reshape(n, 2, rows.shape[0] // n // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def _refuse(message: str, field: str = "format") -> UserError:
    return UserError(message, field=field)


def _check_adapter(config: dict[str, Any], model_type: str) -> tuple[str, bool]:
    if model_type not in ARCHS:
        raise _refuse(f"llama.cpp export supports Llama, Mistral and Qwen2 bases, not "
                      f"{model_type or 'this'} models; export as PEFT or merged instead.")
    if config.get("use_dora"):
        raise _refuse("a DoRA adapter cannot be written as a llama.cpp LoRA file (llama.cpp "
                      "has no magnitude vector); merge it into the base instead.")
    if str(config.get("task_type") or "") == "SEQ_CLS":
        raise _refuse("a classifier adapter cannot run in llama.cpp (it runs language models "
                      "only); export it as PEFT or merged instead.")
    return ARCHS[model_type]


def gguf_tensors(config: dict[str, Any], tensors: dict[str, Any],
                 base_config: dict[str, Any]) -> tuple[str, float, list[tuple[str, Any]]]:
    """(llama.cpp architecture name, adapter.lora.alpha, [(tensor name, f32 array)])."""
    import gguf
    import torch

    model_type = str(base_config.get("model_type") or "")
    arch_key, permutes = _check_adapter(config, model_type)
    arch = getattr(gguf.MODEL_ARCH, arch_key)
    layers = int(base_config.get("num_hidden_layers") or 0)
    name_map = gguf.get_tensor_name_map(arch, layers)
    n_head = int(base_config.get("num_attention_heads") or 0)
    n_kv = int(base_config.get("num_key_value_heads") or n_head)
    tied = bool(base_config.get("tie_word_embeddings", False))

    pairs: dict[str, dict[str, Any]] = {}
    others = []
    for key, value in tensors.items():
        if key.endswith(".base_layer.weight"):  # PEFT's copy of an adapted embedding/head
            continue  # (the base has it; the converter skips it too)
        m = _KEY.match(key)
        if m is None:
            others.append(key)
            continue
        which = "A" if m.group("which").endswith("A") else "B"
        pairs.setdefault(m.group("module"), {})[which] = value
    if others:
        shown = ", ".join(others[:2]) + (f" and {len(others) - 2} more" if len(others) > 2
                                         else "")
        raise _refuse(f"the adapter holds tensors that are not LoRA factors ({shown}: "
                      "modules_to_save, a LoRA bias or trainable tokens), which a llama.cpp "
                      "LoRA file cannot carry; train without them or merge instead.")
    if not pairs:
        raise _refuse("the adapter has no LoRA tensors to export.", field="adapter")
    a0 = float(config.get("lora_alpha") or 0.0)
    ranks = {mod: int(p["A"].shape[0]) for mod, p in pairs.items() if "A" in p and "B" in p}
    alpha = a0 if a0 > 0 else float(max(ranks.values(), default=1))
    rslora = bool(config.get("use_rslora"))
    out: list[tuple[str, Any]] = []
    for module in sorted(pairs):
        if module not in ranks:
            raise _refuse(f"the adapter's {module} has only one of lora_A / lora_B; the "
                          "adapter file is damaged.", field="adapter")
        hf_name = module.removeprefix("base_model.model.")
        target = name_map.get_name(hf_name + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise _refuse(f"llama.cpp has no tensor for {hf_name} in a {layers}-layer "
                          f"{model_type} model, so it cannot carry its adapter; train without "
                          "it, or check that --base is the model the adapter was trained on.")
        if target == "output.weight" and tied:
            raise _refuse("the base ties lm_head to the token embeddings, and llama.cpp has no "
                          "separate head to adapt; train without lm_head or merge instead.")
        r = ranks[module]
        want = float(pattern_value(hf_name, config.get("alpha_pattern") or {}, a0)) / (
            math.sqrt(r) if rslora else r)
        a = pairs[module]["A"].detach().to(torch.float32)
        b = pairs[module]["B"].detach().to(torch.float32) * (want / (alpha / r))
        if permutes and hf_name.endswith("q_proj"):
            b = llama_permute(b, n_head, n_head)
        elif permutes and hf_name.endswith("k_proj"):
            b = llama_permute(b, n_head, n_kv)
        if target == "token_embd.weight":  # llama.cpp looks rows up in lora_a: [vocab, r]
            a = a.T
        out.append((target + ".lora_a", a.contiguous().numpy()))
        out.append((target + ".lora_b", b.contiguous().numpy()))
    return gguf.MODEL_ARCH_NAMES[arch], alpha, out


def write_gguf(path: Path, arch: str, alpha: float, tensors: list[tuple[str, Any]],
               name: str, base_name: str) -> None:
    """Write the llama.cpp adapter file (metadata as the converter writes it)."""
    import gguf
    from graftlab.core.adapter.model_card import is_hub_id

    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_name(name)
    if base_name:  # a hub id gets its page; a local folder only its name, never a made-up URL
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, Path(base_name).name if not is_hub_id(base_name)
                                   else base_name)
        if is_hub_id(base_name):
            writer.add_base_model_repo_url(0, f"https://huggingface.co/{base_name}")
    writer.add_tags(["lora", "graftlab"])
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_string(MARKER_KEY, json.dumps({"app": "graftlab", "kind": "adapter-gguf",
                                              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    for tensor_name, data in tensors:
        writer.add_tensor(tensor_name, data)
    writer.write_header_to_file(path=path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def base_config_of(base: str) -> dict[str, Any]:
    """The base model's config.json (never weights; a hub id fetches its config only)."""
    from graftlab.core.model.sources import resolve_source

    source = resolve_source(base)
    assert source.path is not None
    path = source.path if source.path.is_file() else source.path / "config.json"
    return json.loads(path.read_text(encoding="utf-8"))


def is_graftlab_gguf(path: Path) -> bool:
    """True for a .gguf file that Graftlab wrote (it carries :data:`MARKER_KEY`)."""
    try:
        import gguf

        return MARKER_KEY in gguf.GGUFReader(str(path)).fields
    except Exception:  # not a GGUF file at all, or an unreadable one: not ours
        return False


def _check_file_output(path: Path, overwrite: bool) -> None:
    """The rules of every export, for a single-file output (``--output NAME.gguf``)."""
    if os.path.islink(path):
        raise UserError(f"output {path} is a symbolic link (to {os.readlink(path)}); choose a "
                        "real file path, so nothing behind the link is replaced.",
                        field="output")
    if path.exists():
        if not is_graftlab_gguf(path):
            raise UserError(f"output {path} is a file that Graftlab did not write; choose "
                            "another file name (the file is kept).", field="output")
        if not overwrite:
            raise OutputExistsError(f"output {path} holds an earlier Graftlab export; pass "
                                    "--overwrite to replace it (it is kept until the new one "
                                    "is complete), or choose a new name.", "output", path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {path}: {parent} is not a folder you have write access "
                        "to; choose another place.", field="output")


def export_gguf(adapter_dir: str | Path, out: str | Path, base: str | None = None,
                overwrite: bool = False) -> list[tuple[Path, int]]:
    """Write `adapter_dir` as a llama.cpp LoRA file.

    `out` ending in ``.gguf`` (and not an existing folder) is the file itself; any other path
    is a folder that gets ``adapter.gguf`` and the model card (README.md). `base` defaults to
    the base the adapter (or its run) names; only its config.json is read.
    """
    from graftlab.core.adapter.export import check_adapter_dir
    from graftlab.core.adapter.model_card import card_for_export
    from graftlab.core.adapter.targets import adapter_name, adapter_target
    from graftlab.core.atomic import atomic_file
    from safetensors.torch import load_file

    src = check_adapter_dir(adapter_dir)
    out = Path(os.path.expanduser(str(out)))
    as_file = out.suffix == ".gguf" and not out.is_dir()
    if as_file:
        _check_file_output(out, overwrite)
    else:
        check_output_dir(out, overwrite)
    if not base:
        try:
            base = adapter_target(src).base
        except UserError:
            raise UserError(f"{src} does not name its base model (no base_model_name_or_path "
                            "and no run.yaml beside it); add --base MODEL (only its "
                            "config.json is read).", field="base") from None
    config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
    arch, alpha, tensors = gguf_tensors(config, load_file(str(src / "adapter_model.safetensors")),
                                        base_config_of(base))
    check_free_space(out, sum(t.nbytes for _n, t in tensors) + 2**20)
    name = adapter_name(src)
    base_name = str(config.get("base_model_name_or_path") or base)
    if as_file:
        try:
            with atomic_file(out) as tmp:
                write_gguf(tmp, arch, alpha, tensors, name, base_name)
        except OSError as exc:
            sentence = write_error(exc, out)
            if sentence is None:
                raise
            raise sentence from None
        return [(out, out.stat().st_size)]
    with graftlab_output(out, "adapter-gguf", overwrite) as tmp:
        write_gguf(tmp / GGUF_FILE, arch, alpha, tensors, name, base_name)
        (tmp / "README.md").write_text(card_for_export(src, "gguf"), encoding="utf-8")
    return sorted((p, p.stat().st_size) for p in out.iterdir() if p.is_file())
