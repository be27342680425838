"""Peak memory at a Qwen-sized vocabulary: the chunked loss against the plain PEFT + Trainer
script a user would write, side by side.

Run: python tests/bench/bench_chunked_loss.py
A random ~79M-parameter Llama with a 151,936-token vocabulary (hidden 256, 4 layers; the
embedding and LM head are most of it), LoRA r=8 on all seven projections, three steps of batch
8 × 512 tokens on CPU. Each run is a fresh subprocess; the figure is its peak RSS
(``ru_maxrss``). Runs: the plain script (AutoModelForCausalLM + get_peft_model + Trainer with
the default loss), `graftlab train` with `training.chunked_loss: off`, and with `on` (auto picks
on at this vocabulary). Target: chunked at most 0.5x the plain script (aim 0.3x). Final JSON
line. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_memory_estimate import MODELS, TARGETS, build_model, run_config, write_data  # noqa: E402

MODEL = "h256-L4-V152k"


def plain(model_dir: str, data: str, out: str) -> float:
    """The script a user would write: PEFT + Trainer, padded batches, the model's own loss."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    ds = load_dataset("json", data_files=data)["train"].map(
        lambda r: tok(r["text"], truncation=True, max_length=512), remove_columns=["text"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=[
        t.removeprefix("*.") for t in TARGETS]))
    args = TrainingArguments(out, max_steps=3, per_device_train_batch_size=8, report_to="none",
                             save_strategy="no", use_cpu=True, logging_steps=1)
    out = Trainer(model=model, args=args, train_dataset=ds,
                  data_collator=DataCollatorForLanguageModeling(tok, mlm=False)).train()
    return float(out.metrics["train_runtime"])


def graftlab(cfg_json: str) -> float:
    from graftlab.core.config import RunConfig
    from graftlab.core.train.events import Finished
    from graftlab.core.train.session import TrainingSession

    done: list[float] = []
    TrainingSession(RunConfig.from_dict(json.loads(cfg_json)),
                    [lambda e: isinstance(e, Finished) and done.append(e.elapsed_s)]).run()
    return done[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, payload = args.child
        seconds = plain(*json.loads(payload)) if kind == "plain" else graftlab(payload)
        print(json.dumps({"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                          "train_s": seconds}))
        return
    out: dict[str, int] = {}
    secs: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = str(write_data(root)["long"])
        build_model(root / MODEL, *MODELS[MODEL])
        runs = {"plain script": ("plain", json.dumps([str(root / MODEL), data,
                                                      str(root / "plain")]))}
        for mode in ("off", "on"):
            cfg = run_config(str(root / MODEL), data, str(root / f"g-{mode}"), 8, 512,
                             "causal-lm", {"training": {"chunked_loss": mode, "max_steps": 3}})
            runs[f"graftlab, chunked_loss {mode}"] = ("graftlab", json.dumps(cfg))
        for name, (kind, payload) in runs.items():
            proc = subprocess.run([sys.executable, __file__, "--child", kind, payload],
                                  capture_output=True, text=True, check=True)
            last = json.loads(proc.stdout.strip().splitlines()[-1])
            out[name], secs[name] = last["maxrss"], last["train_s"]
            print(f"{name:<28} peak RSS {out[name] / 2**30:6.2f} GB, training {secs[name]:.1f} s",
                  flush=True)
    base = out["plain script"]
    ratios = {k: round(v / base, 3) for k, v in out.items()}
    print(json.dumps({"bench": "chunked_loss", "vocab": 151936, "batch": "8x512",
                      "peak_rss_gb": {k: round(v / 2**30, 2) for k, v in out.items()},
                      "ratio_to_plain": ratios,
                      "train_s": {k: round(v, 2) for k, v in secs.items()},
                      "chunked_within_0_5x": ratios["graftlab, chunked_loss on"] <= 0.5}))


if __name__ == "__main__":
    main()
