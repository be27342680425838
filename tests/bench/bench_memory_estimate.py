"""Estimated versus measured peak memory of real training runs (CPU: peak RSS).

Run: python tests/bench/bench_memory_estimate.py [--quick]
Each case trains one step with graftlab.core.train.session.TrainingSession in a fresh subprocess
(LoRA r=8 on all seven Llama projections) and reports the child's peak RSS (``ru_maxrss``); on a
machine with CUDA it would compare ``torch.cuda.max_memory_allocated`` instead (not run here).
Prints one line per case and a final JSON line with estimate, measured and error% per case.
Target: every case within ±25%. About 3–4 minutes on 2 cores.
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

TARGETS = ["*.q_proj", "*.k_proj", "*.v_proj", "*.o_proj", "*.gate_proj", "*.up_proj",
           "*.down_proj"]
MODELS = {
    "h512-L4-V16k": ({"hidden": 512, "layers": 4, "heads": 8, "kv_heads": 4, "ffn": 1408},
                     16000),
    "h768-L6-V32k": ({"hidden": 768, "layers": 6, "heads": 12, "kv_heads": 4, "ffn": 2048},
                     32000),
}
# (model, batch, seq len, gradient checkpointing)
CASES = [
    ("h512-L4-V16k", 1, 16, False),
    ("h512-L4-V16k", 8, 256, False),
    ("h512-L4-V16k", 8, 256, True),
    ("h512-L4-V16k", 2, 1024, False),
    ("h768-L6-V32k", 4, 256, False),
]


def run_config(model_dir: str, data: str, out: str, batch: int, seq: int, ckpt: bool) -> dict:
    return {"model": {"source": model_dir},
            "adapter": {"rank": 8, "alpha": 16, "targets": TARGETS},
            "data": {"path": data, "format": "text", "max_length": seq},
            "training": {"max_steps": 1, "batch_size": batch, "gradient_checkpointing": ckpt,
                         "output_dir": out, "device": "cpu"}}


def child(cfg_json: str) -> None:
    """Train one step and print the peak memory of this process."""
    import torch
    from graftlab.core.config import RunConfig
    from graftlab.core.train.session import TrainingSession

    TrainingSession(RunConfig.from_dict(json.loads(cfg_json))).run()
    gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    print(json.dumps({"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "cuda_max_allocated": gpu}))


def build_model(folder: Path, size: dict, vocab: int) -> None:
    """A random Llama with a large vocabulary (the demo tokenizer only uses its first ids)."""
    import torch
    from graftlab.core.model.demo import build_config, build_tokenizer
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer(512)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(build_config("llama", vocab, size)).save_pretrained(folder)
    tok.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="only the first two cases")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from graftlab.core.adapter.plan import plan_adapter
    from graftlab.core.config import AdapterConfig, TrainingConfig
    from graftlab.core.model.demo import _sentences
    from graftlab.core.model.module_tree import build_tree
    from graftlab.core.train.memory_estimate import estimate_memory

    cases = CASES[:2] if args.quick else CASES
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "data.jsonl"  # every row is longer than the longest max_length: no padding
        data.write_text("".join(json.dumps({"text": " ".join(_sentences(160, seed=i))}) + "\n"
                                for i in range(8)), encoding="utf-8")
        for name in sorted({c[0] for c in cases}):
            build_model(root / name, *MODELS[name])
        for i, (name, batch, seq, ckpt) in enumerate(cases):
            tree = build_tree(str(root / name))
            plan = plan_adapter(tree, AdapterConfig(rank=8, alpha=16, targets=TARGETS))
            training = TrainingConfig(batch_size=batch, gradient_checkpointing=ckpt,
                                      device="cpu")
            est = estimate_memory(tree, plan, training, seq, device="cpu")
            cfg = run_config(str(root / name), str(data), str(root / f"run{i}"), batch, seq,
                             ckpt)
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)],
                                  capture_output=True, text=True, check=True,
                                  env=os.environ | {"PYTHONPATH": os.getcwd()})
            measured = json.loads(proc.stdout.strip().splitlines()[-1])["maxrss"]
            err = 100.0 * (est.total - measured) / measured
            row = {"case": f"{name} b{batch} s{seq}" + (" ckpt" if ckpt else ""),
                   "estimate_mb": round(est.total / 2**20), "measured_mb":
                   round(measured / 2**20), "error_pct": round(err, 1),
                   "breakdown_mb": {k: round(v / 2**20) for k, v in est.breakdown.items()}}
            print(f"{row['case']:<28} est {row['estimate_mb']:>6} MB  measured "
                  f"{row['measured_mb']:>6} MB  error {row['error_pct']:+.1f}%", flush=True)
            results.append(row)
    worst = max(abs(r["error_pct"]) for r in results)
    print(json.dumps({"bench": "memory_estimate", "metric": "peak RSS (CPU)",
                      "cases": results, "worst_abs_error_pct": worst,
                      "within_25pct": worst <= 25}))


if __name__ == "__main__":
    main()
