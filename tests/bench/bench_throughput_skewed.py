"""Non-padding tokens/s on length-skewed data: `graftlab train` (packing auto) versus a plain
padded PEFT + Trainer script, same model, data, LoRA, batch size, steps and example order.

Run: python tests/bench/bench_throughput_skewed.py [--steps 20] [--repeats 2]
Lengths run from 8 to 512 tokens with a long tail (most examples short, a few near 512), so a
padded batch is mostly padding. Both sides run as subprocesses, alternately; each side's best
run counts (the machine may be shared). Two ratios: over the training loop (plain:
Trainer's train_runtime; graftlab: the session's active seconds, adapter save included) and
over the whole process (interpreter start, tokenization and model load included). Prints a
final JSON line; target: loop ratio >= 1.5.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SIZE = {"hidden": 256, "layers": 4, "heads": 8, "kv_heads": 4, "ffn": 688}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MAX_LENGTH = 512
BATCH = 8

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
        e = tok([t + tok.eos_token for t in b["text"]], truncation=True, max_length=MAX_LENGTH)
        e["labels"] = [list(x) for x in e["input_ids"]]
        return e
    ds = ds.map(enc, batched=True, remove_columns=ds.column_names)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    args = TrainingArguments(out, max_steps=steps, per_device_train_batch_size=BATCH,
                             learning_rate=2e-4, logging_steps=1, report_to="none",
                             disable_tqdm=True, save_strategy="no", use_cpu=True, seed=0,
                             include_num_input_tokens_seen="non_padding")
    out = Trainer(model=model, args=args, train_dataset=ds,
                  data_collator=DataCollatorForSeq2Seq(tok, padding=True,
                                                       label_pad_token_id=-100)).train()
    print(json.dumps({"tokens": out.metrics.get("num_input_tokens_seen"),
                      "loop_s": out.metrics["train_runtime"]}))
''').replace("MAX_LENGTH", str(MAX_LENGTH)).replace("TARGETS", repr(TARGETS)).replace(
    "BATCH", str(BATCH))


def skewed_texts(n: int, seed: int = 0) -> list[str]:
    """Texts whose token counts follow a long tail from about 8 to beyond 512."""
    from graftlab.core.model.demo import _sentences

    rng = random.Random(seed)
    pool = _sentences(400, seed)
    texts = []
    for _ in range(n):
        tokens = min(8 + int((rng.paretovariate(1.2) - 1) * 12), 600)  # median ~15, long tail
        words: list[str] = []
        want = max(2, int(tokens * 0.8))  # ~1.2 tokens per word with the demo tokenizer
        while len(words) < want:
            words.extend(rng.choice(pool).split())
        texts.append(" ".join(words[:want]))
    return texts


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - t, proc.stdout


def graftlab_loop(run_dir: Path) -> tuple[int, float, bool]:
    tokens, loop_s, packed = 0, 0.0, False
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "step":
            tokens = event["tokens_seen"]
        elif event.get("event") == "finished":
            loop_s = event["elapsed_s"]
        elif event.get("event") == "message" and ("packing: on" in event.get("text", "")
                                                  or "chose on" in event.get("text", "")):
            packed = True
    return tokens, loop_s, packed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    import yaml
    from graftlab.core.model.demo import save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = dict(os.environ, GRAFTLAB_CACHE=str(tmp_path / "cache"),
                   HF_DATASETS_CACHE=str(tmp_path / "hf-datasets"),
                   TOKENIZERS_PARALLELISM="false")
        os.environ.update(env)
        model = save_tiny_model("llama", tmp_path / "model", size=SIZE, vocab_size=2048)
        data = tmp_path / "skewed.jsonl"
        texts = skewed_texts(a.steps * BATCH)
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model))
        lengths = sorted(min(len(tok(t)["input_ids"]) + 1, MAX_LENGTH) for t in texts)
        (tmp_path / "plain.py").write_text(PLAIN)
        run = {"model": {"source": str(model)},
               "adapter": {"rank": 16, "alpha": 32, "targets": [f"*.{t}" for t in TARGETS]},
               "data": {"path": str(data), "format": "text", "max_length": MAX_LENGTH},
               "training": {"max_steps": a.steps, "batch_size": BATCH, "learning_rate": 2e-4,
                            "output_dir": str(tmp_path / "unused")}}
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
        ours, plain = [], []
        for i in range(a.repeats):
            wall, out = timed([sys.executable, str(tmp_path / "plain.py"), str(model),
                               str(data), str(tmp_path / f"plain{i}"), str(a.steps)], env)
            p = json.loads(out.strip().splitlines()[-1])
            plain.append({"wall_s": wall, "tokens": p["tokens"], "loop_s": p["loop_s"]})
            out_dir = tmp_path / f"ours{i}"
            wall, _ = timed([sys.executable, "-m", "graftlab.core.cli", "train",
                             str(tmp_path / "run.yaml"), "--output", str(out_dir)], env)
            tokens, loop_s, packed = graftlab_loop(out_dir)
            ours.append({"wall_s": wall, "tokens": tokens, "loop_s": loop_s, "packed": packed})

    def best(runs: list[dict], key: str) -> float:
        return max(r["tokens"] / r[key] for r in runs)

    loop_ratio = best(ours, "loop_s") / best(plain, "loop_s")
    wall_ratio = best(ours, "wall_s") / best(plain, "wall_s")
    n = len(lengths)
    print(json.dumps({
        "bench": "throughput_skewed", "steps": a.steps, "batch_size": BATCH,
        "lengths": {"min": lengths[0], "p50": lengths[n // 2], "p95": lengths[int(0.95 * n)],
                    "max": lengths[-1], "mean": round(sum(lengths) / n, 1)},
        "packed": all(r["packed"] for r in ours),
        "plain_tokens": plain[0]["tokens"], "graftlab_tokens": ours[0]["tokens"],
        "plain_tok_s": round(best(plain, "loop_s"), 1),
        "graftlab_tok_s": round(best(ours, "loop_s"), 1),
        "plain_runs": [{k: round(v, 2) for k, v in r.items()} for r in plain],
        "graftlab_runs": [{k: (round(v, 2) if isinstance(v, float) else v)
                           for k, v in r.items()} for r in ours],
        "ratio": round(loop_ratio, 2), "wall_ratio": round(wall_ratio, 2), "target": 1.5,
    }))


if __name__ == "__main__":
    main()
