"""`graftlab train` versus a plain PEFT + Trainer script: same model, data, steps.

Run: python tests/bench/bench_train_overhead.py [--steps 40] [--repeats 2]
Both run as subprocesses (interpreter start included), alternately; the ratio uses each side's
fastest run. Prints a final JSON line (target ratio <= 1.02).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SIZE = {"hidden": 256, "layers": 4, "heads": 8, "kv_heads": 4, "ffn": 688}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

PLAIN = textwrap.dedent('''
    import json, sys, torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq,
                              Trainer, TrainingArguments)
    model_dir, data, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = load_dataset("json", data_files=data, split="train")
    def enc(b):
        e = tok([t + tok.eos_token for t in b["text"]], truncation=True, max_length=128)
        e["labels"] = [list(x) for x in e["input_ids"]]
        return e
    ds = ds.map(enc, batched=True, remove_columns=ds.column_names)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS_HERE,
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(out, max_steps=steps, per_device_train_batch_size=8,
                             learning_rate=2e-4, logging_steps=1, report_to="none",
                             disable_tqdm=True, save_strategy="no", use_cpu=True, seed=0)
    Trainer(model=model, args=args, train_dataset=ds,
            data_collator=DataCollatorForSeq2Seq(tok, padding=True,
                                                 label_pad_token_id=-100)).train()
''').replace("TARGETS_HERE", repr(TARGETS))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    import yaml
    from graftlab.core.model.demo import demo_data_path, save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = dict(os.environ, GRAFTLAB_CACHE=str(tmp_path / "cache"),
                   TOKENIZERS_PARALLELISM="false")
        os.environ.update(env)
        model = save_tiny_model("llama", tmp_path / "model", size=SIZE, vocab_size=2048)
        data = demo_data_path("stories")
        (tmp_path / "plain.py").write_text(PLAIN)
        run = {"model": {"source": str(model)},
               "adapter": {"rank": 16, "alpha": 32, "targets": [f"*.{t}" for t in TARGETS]},
               "data": {"path": str(data), "format": "text", "max_length": 128},
               "training": {"max_steps": a.steps, "batch_size": 8, "learning_rate": 2e-4,
                            "output_dir": str(tmp_path / "unused")}}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
        ours, plain = [], []
        for i in range(a.repeats):
            plain.append(timed([sys.executable, str(tmp_path / "plain.py"), str(model),
                                str(data), str(tmp_path / f"plain{i}"), str(a.steps)], env))
            ours.append(timed([sys.executable, "-m", "graftlab.core.cli", "train",
                               str(tmp_path / "run.yaml"), "--output",
                               str(tmp_path / f"ours{i}")], env))
    print(json.dumps({"bench": "train_overhead", "steps": a.steps,
                      "graftlab_s": [round(x, 2) for x in ours],
                      "plain_s": [round(x, 2) for x in plain],
                      "ratio": round(min(ours) / min(plain), 3)}))


if __name__ == "__main__":
    main()
