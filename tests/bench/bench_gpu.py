"""GPU training throughput of a ~1B Llama-shaped model: bf16 LoRA against 4-bit QLoRA.

Run on a CUDA machine: python tests/bench/bench_gpu.py [--seq 2048] [--batch 4] [--steps 20]
    [--warmup 5] [--modes lora,qlora] [--checkpointing auto|on|off] [--peak-tflops T]

Each mode is a real Graftlab run (graftlab.core.train.session.TrainingSession, the path
`graftlab train` takes) in its own process, on a random-weight model built from a config and
saved with save_pretrained (no download): hidden 2048, 16 layers, 32 heads, 8 KV heads,
intermediate 5632, vocabulary 32000 (~1.1B parameters, TinyLlama's shape). LoRA rank 16 on all
seven projections, uniform-length rows (no padding, packing off), precision auto (bf16 where the
GPU supports it). ``lora``: bf16 base. ``qlora``: ``model.quantization: 4bit`` (NF4, double
quantization, bf16 compute), gradient checkpointing as Graftlab's default for it (on) unless
--checkpointing says otherwise.

Figures per mode, over the steps after the warm-up: tokens/s (non-padding tokens from the
run's step events over the time between them), peak VRAM (torch.cuda.max_memory_allocated,
reset after the warm-up; also the peak of the whole run, loading included) and MFU.

MFU: model FLOPs per second over the GPU's dense bf16 peak. For a frozen base with LoRA, the
backward pass needs activation gradients (2N per token) but not the base's weight gradients,
so the work counted is 4·N·tokens per step (forward 2N + backward 2N), N = base parameters
excluding the embedding table (a lookup) but including the LM head; attention score FLOPs and
the recomputed forward of gradient checkpointing are not counted (the usual convention, so a
checkpointed run reports a lower MFU for the same hardware work). Dense bf16 peaks used
(tensor cores, no sparsity, TFLOPS): H100/H200 SXM 989, H100 PCIe 756, A100 312, L40S 362,
RTX 4090 165, RTX 3090 71, L4 121, A10G 125; another GPU needs --peak-tflops.

Without CUDA it says so on stderr, prints {"bench": "gpu", "skipped": ...} and exits 0 (so
tests/bench/run_all.py records a skip). --smoke runs the same pipeline on a tiny model on the
CPU (figures meaningless; it checks the script). Prints a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SHAPE = {"hidden": 2048, "layers": 16, "heads": 32, "kv_heads": 8, "ffn": 5632}
VOCAB = 32000
SMOKE_SHAPE = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 128}
TARGETS = ["*.q_proj", "*.k_proj", "*.v_proj", "*.o_proj", "*.gate_proj", "*.up_proj",
           "*.down_proj"]
# Dense bf16 tensor-core peaks in TFLOPS, matched against torch.cuda.get_device_name(0);
# the first match wins, so the more specific names come first.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H200", 989.0), ("H100", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("L4", 121.0),
                    ("A10G", 125.0)]
MODES = {"lora": ("bf16 LoRA", "none"), "qlora": ("4-bit QLoRA", "4bit")}


def peak_tflops(device_name: str, override: float | None) -> tuple[float | None, str]:
    """(peak TFLOPS, where it came from) for a GPU name; (None, ...) when unknown."""
    if override is not None:
        return override, "--peak-tflops"
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value, f"table ({key})"
    return None, "unknown GPU: pass --peak-tflops"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=2048, help="tokens per row")
    ap.add_argument("--batch", type=int, default=4, help="rows per step")
    ap.add_argument("--steps", type=int, default=20, help="measured steps")
    ap.add_argument("--warmup", type=int, default=5, help="steps before measuring")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--modes", default="lora,qlora",
                    help="comma-separated: lora (bf16 base), qlora (4-bit base)")
    ap.add_argument("--checkpointing", choices=("auto", "on", "off"), default="auto",
                    help="training.gradient_checkpointing (auto: Graftlab's default, on for "
                    "4-bit)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense bf16 peak for MFU (default: from the table above)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny model, CPU allowed: checks the script, not the GPU")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        ap.error(f"--modes: unknown {', '.join(unknown) or '(none given)'}; use lora, qlora")
    if min(a.seq, a.batch, a.steps) < 1 or a.warmup < 1:
        ap.error("--seq, --batch and --steps must be at least 1, --warmup at least 1")
    a.mode_list = modes
    return a


def build_model(folder: Path, smoke: bool) -> int:
    """Save the random-weight model and a tokenizer; returns N for the MFU (no embedding)."""
    import torch
    import transformers
    from graftlab.core.model.demo import build_config, build_tokenizer
    from transformers import AutoModelForCausalLM

    transformers.logging.disable_progress_bar()
    config = build_config("llama", 512 if smoke else VOCAB, SMOKE_SHAPE if smoke else SHAPE)
    config.max_position_embeddings = 4096
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    build_tokenizer(512).save_pretrained(folder)
    total = sum(p.numel() for p in model.parameters())
    return total - model.get_input_embeddings().weight.numel()


def write_rows(path: Path, rows: int, seq: int) -> None:
    """Rows longer than --seq tokens, so every row is truncated to exactly --seq."""
    from graftlab.core.model.demo import _sentences

    per_row = max(4, seq // 4)  # a sentence is more than 4 tokens of the demo tokenizer
    path.write_text("".join(json.dumps({"text": " ".join(_sentences(per_row, seed=i))}) + "\n"
                            for i in range(rows)), encoding="utf-8")


def child(spec_json: str) -> None:
    """One Graftlab run; prints its figures as a JSON line."""
    import torch
    from graftlab.core.config import RunConfig
    from graftlab.core.train.events import Step
    from graftlab.core.train.session import TrainingSession

    spec = json.loads(spec_json)
    cuda = torch.cuda.is_available()
    steps: list[Step] = []
    whole_run_peak = [0]

    def sink(event: object) -> None:
        if isinstance(event, Step):
            steps.append(event)
            if event.step == spec["warmup"] and cuda:  # measure the steady steps only
                torch.cuda.synchronize()
                whole_run_peak[0] = torch.cuda.max_memory_allocated()
                torch.cuda.reset_peak_memory_stats()

    session = TrainingSession(RunConfig.from_dict(spec["run"]), [sink])
    session.run()
    first = next(s for s in steps if s.step == spec["warmup"])
    last = steps[-1]
    tokens = last.tokens_seen - first.tokens_seen
    seconds = last.elapsed_s - first.elapsed_s
    peak = torch.cuda.max_memory_allocated() if cuda else None
    print(json.dumps({"tokens": tokens, "seconds": seconds, "steps": last.step - first.step,
                      "peak_vram": peak, "run_peak_vram": max(whole_run_peak[0], peak or 0)
                      if cuda else None, "final_loss": last.loss}))


def run_mode(mode: str, model_dir: Path, data: Path, out: Path, a: argparse.Namespace,
             n_flop: int, peak: float | None) -> dict:
    label, quantization = MODES[mode]
    checkpointing = {"auto": None, "on": True, "off": False}[a.checkpointing]
    run = {"model": {"source": str(model_dir), "quantization": quantization},
           "adapter": {"rank": a.rank, "alpha": 2 * a.rank, "targets": TARGETS},
           "data": {"path": str(data), "max_length": a.seq},
           "training": {"max_steps": a.warmup + a.steps, "batch_size": a.batch,
                        "learning_rate": 1e-4, "output_dir": str(out),
                        "device": "cpu" if a.smoke else "cuda", "packing": "off",
                        "gradient_checkpointing": checkpointing, "update_norms_every": 0,
                        "checkpoint_minutes": 0.0, "logging_steps": 1}}
    proc = subprocess.run([sys.executable, __file__, "--child",
                           json.dumps({"run": run, "warmup": a.warmup})],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"mode": label, "error": f"exit {proc.returncode}: {tail}"}
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    tok_s = r["tokens"] / r["seconds"] if r["seconds"] > 0 else 0.0
    gib = 2**30
    return {
        "mode": label, "quantization": quantization,
        "gradient_checkpointing": quantization == "4bit" if checkpointing is None
        else checkpointing,
        "tokens_per_s": round(tok_s), "step_ms": round(1000 * r["seconds"] / r["steps"], 1),
        "peak_vram_gib": round(r["peak_vram"] / gib, 2) if r["peak_vram"] else None,
        "run_peak_vram_gib": round(r["run_peak_vram"] / gib, 2) if r["run_peak_vram"] else None,
        "mfu": round(4 * n_flop * tok_s / (peak * 1e12), 3) if peak else None,
        "final_loss": round(r["final_loss"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.child:
        child(a.child)
        return 0
    import torch

    if not torch.cuda.is_available() and not a.smoke:
        print("bench_gpu.py needs a CUDA GPU: torch.cuda.is_available() is False on this "
              "machine, so nothing was measured (run it on a GPU machine, or --smoke to check "
              "the script on the CPU).", file=sys.stderr)
        print(json.dumps({"bench": "gpu", "skipped": "no GPU"}))
        return 0
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (smoke)"
    peak, peak_source = peak_tflops(device, a.peak_tflops)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_flop = build_model(root / "model", a.smoke)
        write_rows(root / "rows.jsonl", a.batch * (a.warmup + a.steps), a.seq)
        cases = [run_mode(m, root / "model", root / "rows.jsonl", root / f"run-{m}", a,
                          n_flop, peak) for m in a.mode_list]
    print(json.dumps({"bench": "gpu", "device": device, "peak_tflops": peak,
                      "peak_source": peak_source, "flop_params": n_flop, "seq": a.seq,
                      "batch": a.batch, "steps": a.steps, "warmup": a.warmup,
                      "mfu_formula": "4*N*tokens/s / peak (frozen base, N excl. embedding)",
                      "cases": cases}))
    return 1 if any("error" in c for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
