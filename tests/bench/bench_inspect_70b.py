"""Inspect a Llama-3-70B config.json (structure only): time and exact parameter count.

Run: python tests/bench/bench_inspect_70b.py
Prints a final JSON line with the in-process build time, the `graftlab inspect --json` wall
time including interpreter start, and the counted parameters (expected 70,553,706,496).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LLAMA3_70B = dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                  num_key_value_heads=8, intermediate_size=28672, vocab_size=128256,
                  max_position_embeddings=131072, rope_theta=500000.0,
                  tie_word_embeddings=False, dtype="bfloat16")


def main() -> None:
    from transformers import LlamaConfig

    with tempfile.TemporaryDirectory() as tmp:
        LlamaConfig(**LLAMA3_70B).save_pretrained(tmp)
        cfg = str(Path(tmp) / "config.json")
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "graftlab.core.cli", "inspect", cfg, "--json"],
                capture_output=True, text=True, check=True)
            walls.append(time.perf_counter() - t)
        data = json.loads(proc.stdout)
        from graftlab.core.model.module_tree import build_tree

        build_tree(cfg)  # warm the import of the llama modeling code
        t = time.perf_counter()
        tree = build_tree(cfg)
        build_s = time.perf_counter() - t
    print(json.dumps({
        "bench": "inspect_70b",
        "total_params": data["total_params"],
        "expected": 70_553_706_496,
        "exact": data["total_params"] == 70_553_706_496,
        "modules": len(tree.modules),
        "lora_capable": len(tree.lora_modules()),
        "tree_build_s": round(build_s, 3),
        "cli_wall_s_min": round(min(walls), 2),
        "cli_wall_s_all": [round(w, 2) for w in walls],
    }))


if __name__ == "__main__":
    main()
