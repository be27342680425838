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
MODELS = {  # name: (arch, size, vocab, task)
    "h512-L4-V16k": ("llama", {"hidden": 512, "layers": 4, "heads": 8, "kv_heads": 4,
                               "ffn": 1408}, 16000, "causal-lm"),
    "h768-L6-V32k": ("llama", {"hidden": 768, "layers": 6, "heads": 12, "kv_heads": 4,
                               "ffn": 2048}, 32000, "causal-lm"),
    # a Qwen-sized vocabulary on a ~79M-parameter model (embedding + head are most of it)
    "h256-L4-V152k": ("llama", {"hidden": 256, "layers": 4, "heads": 4, "kv_heads": 2,
                                "ffn": 688}, 151936, "causal-lm"),
    "bert-h512-L4": ("bert", {"hidden": 512, "layers": 4, "heads": 8, "ffn": 2048}, 16000,
                     "sequence-classification"),
}
# (shape, model, batch, seq len, data, extra run.yaml settings)
CASES = [
    ("uniform", "h512-L4-V16k", 8, 256, "long", {}),
    ("uniform, checkpointing", "h512-L4-V16k", 8, 256, "long",
     {"training": {"gradient_checkpointing": True}}),
    ("uniform, small", "h512-L4-V16k", 1, 16, "long", {}),
    ("skewed (packed)", "h512-L4-V16k", 8, 512, "skewed", {}),
    ("skewed (padded)", "h512-L4-V16k", 8, 512, "skewed", {"training": {"packing": "off"}}),
    ("long documents", "h512-L4-V16k", 2, 1024, "long", {}),
    ("long documents, checkpointing", "h512-L4-V16k", 2, 1024, "long",
     {"training": {"gradient_checkpointing": True}}),
    ("larger model", "h768-L6-V32k", 4, 256, "long", {}),
    ("vocab 151,936, plain loss", "h256-L4-V152k", 8, 512, "long",
     {"training": {"chunked_loss": "off"}}),
    ("vocab 151,936, chunked loss", "h256-L4-V152k", 8, 512, "long",
     {"training": {"chunked_loss": "on"}}),
    ("4-bit base", "h768-L6-V32k", 4, 256, "long", {"model": {"quantization": "4bit"}}),
    ("8-bit base", "h768-L6-V32k", 4, 256, "long", {"model": {"quantization": "8bit"}}),
    ("classification head", "bert-h512-L4", 8, 256, "classify", {}),
]


def run_config(model_dir: str, data: str, out: str, batch: int, seq: int, task: str,
               extra: dict) -> dict:
    targets = TARGETS if task == "causal-lm" else ["*.query", "*.key", "*.value", "*.dense"]
    cfg = {"model": {"source": model_dir},
           "adapter": {"rank": 8, "alpha": 16, "targets": targets},
           "data": {"path": data, "max_length": seq},
           "training": {"max_steps": 1, "batch_size": batch, "output_dir": out,
                        "device": "cpu", "update_norms_every": 0}}
    for section, values in extra.items():
        cfg[section].update(values)
    return cfg


def _missing_field(extra: dict) -> str | None:
    """The run.yaml key of `extra` this checkout does not have yet (the row is skipped)."""
    from graftlab.core.config import RunConfig

    fields = RunConfig().to_dict()
    for section, values in extra.items():
        for key in values:
            if key not in fields[section]:
                return f"{section}.{key}"
    return None


def child(cfg_json: str) -> None:
    """Train one step and print the peak memory of this process."""
    import torch
    from graftlab.core.config import RunConfig
    from graftlab.core.train.session import TrainingSession

    TrainingSession(RunConfig.from_dict(json.loads(cfg_json))).run()
    gpu = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    print(json.dumps({"maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "cuda_max_allocated": gpu}))


def build_model(folder: Path, arch: str, size: dict, vocab: int, task: str) -> None:
    """A random model with a large vocabulary (the demo tokenizer only uses its first ids)."""
    import torch
    from graftlab.core.model.demo import build_config, build_tokenizer
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = build_config(arch, vocab, size)
    auto = AutoModelForCausalLM
    if task != "causal-lm":
        auto = AutoModelForSequenceClassification
        config.num_labels, config.id2label = 2, {0: "neg", 1: "pos"}
        config.label2id = {"neg": 0, "pos": 1}
    torch.manual_seed(0)
    auto.from_config(config).save_pretrained(folder)
    build_tokenizer(512).save_pretrained(folder)


def write_data(root: Path) -> dict[str, Path]:
    """long: every row longer than the longest max_length (uniform lengths after truncation);
    skewed: 8 rows of 10 to 500 tokens (one batch of 8 holds all of them); classify: labelled."""
    from graftlab.core.model.demo import _sentences

    out = {"long": root / "long.jsonl", "skewed": root / "skewed.jsonl",
           "classify": root / "classify.jsonl"}
    out["long"].write_text("".join(json.dumps({"text": " ".join(_sentences(160, seed=i))})
                                   + "\n" for i in range(16)), encoding="utf-8")
    out["skewed"].write_text("".join(json.dumps({"text": " ".join(_sentences(n, seed=n))})
                                     + "\n" for n in (1, 3, 6, 10, 20, 35, 60, 100)),
                             encoding="utf-8")
    out["classify"].write_text("".join(json.dumps({"text": " ".join(_sentences(160, seed=i)),
                                                   "label": ["neg", "pos"][i % 2]}) + "\n"
                                       for i in range(16)), encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="only the first two cases")
    parser.add_argument("--only", help="only the cases whose name contains this text")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from graftlab.core.config import RunConfig
    from graftlab.core.train.preflight import make_plan

    cases = CASES[:2] if args.quick else CASES
    if args.only:
        cases = [c for c in cases if args.only in c[0]]
    results, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_data(root)
        for name in sorted({c[1] for c in cases}):
            build_model(root / name, *MODELS[name])
        for i, (shape, name, batch, seq, rows, extra) in enumerate(cases):
            missing = _missing_field(extra)
            if missing:
                skipped.append({"case": shape, "skipped": f"pending {missing}"})
                print(f"{shape:<32} skipped: {missing} is not in this checkout", flush=True)
                continue
            cfg = run_config(str(root / name), str(data[rows]), str(root / f"run{i}"), batch,
                             seq, MODELS[name][3], extra)
            est = make_plan(RunConfig.from_dict(cfg)).memory  # what `graftlab plan` says
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)],
                                  capture_output=True, text=True, check=True)
            measured = json.loads(proc.stdout.strip().splitlines()[-1])["maxrss"]
            err = 100.0 * (est.total - measured) / measured
            row = {"case": f"{shape}: {name} b{batch} s{seq}",
                   "estimate_mb": round(est.total / 2**20), "measured_mb":
                   round(measured / 2**20), "error_pct": round(err, 1),
                   "breakdown_mb": {k: round(v / 2**20) for k, v in est.breakdown.items()}}
            print(f"{row['case']:<48} est {row['estimate_mb']:>6} MB  measured "
                  f"{row['measured_mb']:>6} MB  error {row['error_pct']:+.1f}%", flush=True)
            results.append(row)
    worst = max(abs(r["error_pct"]) for r in results)
    print(json.dumps({"bench": "memory_estimate", "metric": "peak RSS (CPU)",
                      "cases": results, "skipped": skipped, "worst_abs_error_pct": worst,
                      "within_25pct": worst <= 25}))


if __name__ == "__main__":
    main()
