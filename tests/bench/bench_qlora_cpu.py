"""QLoRA smoke run on CPU: the same small run with a 4-bit base and unquantized.

Run: python tests/bench/bench_qlora_cpu.py [--steps 12] [--batch 4] [--seq 256]
Each case is a real Graftlab run (TrainingSession) in its own process on a random Llama
(hidden 512, 4 layers, vocabulary 16,000: 28M parameters), LoRA rank 8 on all seven
projections, uniform-length rows. Cases: unquantized (fp32), 4-bit NF4 with Graftlab's default
for it (gradient checkpointing on), and 4-bit with checkpointing off (the same work as the
unquantized run). Figures: training-loop tokens/s after the first two steps (from the step
events), the process's peak RSS (ru_maxrss) and the final loss.

What it shows on a CPU: 4-bit runs and trains, but it is slower (bitsandbytes dequantizes each
weight for every matmul) and peak RSS does not shrink (the fp32 weights read to quantize stay
resident); the memory saving of QLoRA is a GPU (VRAM) figure. Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SIZE = {"hidden": 512, "layers": 4, "heads": 8, "kv_heads": 4, "ffn": 1408}
TARGETS = ["*.q_proj", "*.k_proj", "*.v_proj", "*.o_proj", "*.gate_proj", "*.up_proj",
           "*.down_proj"]
CASES = [("unquantized", "none", None), ("4-bit (checkpointing on, the default)", "4bit", None),
         ("4-bit, checkpointing off", "4bit", False)]
WARMUP = 2


def child(run_json: str) -> None:
    from graftlab.core.config import RunConfig
    from graftlab.core.train.events import Step
    from graftlab.core.train.session import TrainingSession

    steps: list[Step] = []
    TrainingSession(RunConfig.from_dict(json.loads(run_json)),
                    [lambda e: steps.append(e) if isinstance(e, Step) else None]).run()
    first, last = steps[WARMUP - 1], steps[-1]
    print(json.dumps({"tokens_per_s": (last.tokens_seen - first.tokens_seen)
                      / (last.elapsed_s - first.elapsed_s), "final_loss": last.loss,
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers
    from graftlab.core.model.demo import _sentences, build_config, build_tokenizer
    from transformers import AutoModelForCausalLM

    transformers.logging.disable_progress_bar()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(build_config("llama", 16000, SIZE))
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(root / "model")
        build_tokenizer(512).save_pretrained(root / "model")
        data = root / "rows.jsonl"
        data.write_text("".join(json.dumps({"text": " ".join(_sentences(160, seed=i))}) + "\n"
                                for i in range(64)), encoding="utf-8")
        for i, (name, quantization, checkpointing) in enumerate(CASES):
            run = {"model": {"source": str(root / "model"), "quantization": quantization},
                   "adapter": {"rank": 8, "alpha": 16, "targets": TARGETS},
                   "data": {"path": str(data), "max_length": a.seq},
                   "training": {"max_steps": a.steps, "batch_size": a.batch, "device": "cpu",
                                "output_dir": str(root / f"run{i}"), "packing": "off",
                                "gradient_checkpointing": checkpointing,
                                "update_norms_every": 0, "checkpoint_minutes": 0.0}}
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(run)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"case": name, "tokens_per_s": round(r["tokens_per_s"]),
                         "peak_rss_mb": round(r["maxrss"] / 2**20),
                         "final_loss": round(r["final_loss"], 3)})
            print(f"{name:<40} {rows[-1]['tokens_per_s']:>7} tok/s  peak RSS "
                  f"{rows[-1]['peak_rss_mb']:>6} MB  loss {rows[-1]['final_loss']}", flush=True)
    base = rows[0]
    for r in rows[1:]:
        r["speed_vs_unquantized"] = round(r["tokens_per_s"] / base["tokens_per_s"], 2)
        r["rss_vs_unquantized"] = round(r["peak_rss_mb"] / base["peak_rss_mb"], 2)
    print(json.dumps({"bench": "qlora_cpu", "model": "llama h512 L4 V16k", "params": params,
                      "batch": a.batch, "seq": a.seq, "steps": a.steps, "cases": rows}))


if __name__ == "__main__":
    main()
