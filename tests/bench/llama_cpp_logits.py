"""One-off check against llama.cpp itself: the logits of a tiny base with a LoRA file from
`graftlab export --format gguf`, run by llama.cpp, against PEFT's logits; beside them, the
same adapter converted by llama.cpp's own convert_lora_to_gguf.py (which drops the
per-module rank/alpha overrides).

Needs llama-cpp-python (it builds llama.cpp) and a llama.cpp source tree for the converters
(llama-cpp-python's sdist has one under vendor/llama.cpp):

    GRAFTLAB_LLAMA_CPP=path/to/llama.cpp python tests/bench/llama_cpp_logits.py

Prints one JSON line per architecture (the base alone in llama.cpp against transformers gives
the numerical noise floor) and a final summary line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

LLAMA_CPP = Path(os.environ["GRAFTLAB_LLAMA_CPP"])
IDS = [1, 5, 9, 17, 33, 64, 100, 7, 250, 3]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
OVERRIDE = "model.layers.1.self_attn.q_proj"
# The demo tokenizer's pre-tokenizer is unknown to llama.cpp; only token ids are used here.
CONVERT_BASE = f"""
import sys
sys.path.insert(0, {str(LLAMA_CPP)!r})
import conversion.base as base
def no_sentencepiece(self, *a, **k):
    raise FileNotFoundError
base.TextModel._set_vocab_sentencepiece = no_sentencepiece
base.TextModel.get_vocab_base_pre = lambda self, tok: "default"
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[1:]]
convert_hf_to_gguf.main()
"""


def run(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], cwd=LLAMA_CPP, capture_output=True,
                          text=True, timeout=600)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])


def llama_cpp_logits(base_gguf: Path, lora: Path | None) -> list[list[float]]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(base_gguf), lora_path=str(lora) if lora else None,
                logits_all=True, n_ctx=64, n_threads=2, verbose=False)
    llm.eval(IDS)
    return llm.scores[: len(IDS)].tolist()


def check(arch: str, root: Path) -> dict[str, object]:
    import torch
    from graftlab.core.adapter.gguf_export import export_gguf
    from graftlab.core.model.demo import save_tiny_model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = save_tiny_model(arch, root / arch / "base")
    base_gguf = root / arch / "base.gguf"
    run("-c", CONVERT_BASE, str(base_dir), "--outfile", str(base_gguf), "--outtype", "f32")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                            LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                                       target_modules=TARGETS, rank_pattern={OVERRIDE: 16},
                                       alpha_pattern={OVERRIDE: 32}))
        for name, p in pm.named_parameters():  # B·A large enough to move the logits clearly
            if "lora_B" in name:
                p.data.mul_(20)
        adapter = root / arch / "adapter"
        pm.save_pretrained(adapter)
        pm.eval()
        with torch.no_grad():
            want = pm(input_ids=torch.tensor([IDS])).logits[0]
            base = pm.get_base_model()
            with pm.disable_adapter():
                plain = pm(input_ids=torch.tensor([IDS])).logits[0]
    del base
    ours = root / arch / "ours.gguf"
    export_gguf(adapter, ours, base=str(base_dir))
    ref = root / arch / "converter.gguf"
    run("convert_lora_to_gguf.py", "--base", str(base_dir), "--outfile", str(ref), str(adapter))
    got = torch.tensor(llama_cpp_logits(base_gguf, ours))
    theirs = torch.tensor(llama_cpp_logits(base_gguf, ref))
    alone = torch.tensor(llama_cpp_logits(base_gguf, None))
    return {"arch": arch, "base_alone_max_abs_diff": float((alone - plain).abs().max()),
            "adapter_moves_logits_by": round(float((want - plain).abs().max()), 4),
            "graftlab_gguf_max_abs_diff": float((got - want).abs().max()),
            "converter_gguf_max_abs_diff": float((theirs - want).abs().max())}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("llama", "mistral", "qwen2"):
            rows.append(check(arch, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"max_abs_diff_graftlab": max(r["graftlab_gguf_max_abs_diff"]
                                                   for r in rows),
                      "max_abs_diff_converter": max(r["converter_gguf_max_abs_diff"]
                                                    for r in rows)}))


if __name__ == "__main__":
    main()
