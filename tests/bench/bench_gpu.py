"""GPU training throughput of a ~1B Llama-shaped model with LoRA on all linear layers.

Run on a CUDA machine: python tests/bench/bench_gpu.py [--seq 2048] [--batch 4] [--steps 20]
Self-contained (torch, transformers, peft, this repo); random weights built from a config
(hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate 5632, vocab 32000: ~1.1B).
Uses the same GPU path as a Graftlab run: bf16 weights and autocast, SDPA attention, fused AdamW,
optional torch.compile (--compile), optional packing (--packed: one row of `batch` documents of
random lengths, block-diagonal mask from restarting position ids).

MFU: model FLOPs per second over the GPU's dense bf16 peak (H200/H100 SXM: 989 TFLOPS). For a
frozen base with LoRA, the backward pass needs activation gradients (2N per token) but not
weight gradients of the base (another 2N), so the bound is 4·N·tokens per step (forward 2N +
backward 2N), N = base parameters excluding the embedding table (a lookup, no FLOPs) but
including the LM head; attention score FLOPs are left out (a lower bound on work done).
Prints a final JSON line; without CUDA it prints {"bench": "gpu", "skipped": "no GPU"} and
exits 0. Runs in well under 5 minutes on an H200.
"""

from __future__ import annotations

import argparse
import json
import time

PEAK_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16 (no sparsity)
SHAPE = dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, intermediate_size=5632, vocab_size=32000,
             max_position_embeddings=4096, tie_word_embeddings=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--packed", action="store_true")
    ap.add_argument("--checkpointing", action="store_true")
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"bench": "gpu", "skipped": "no GPU"}))
        return
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dev = torch.device("cuda")
    config = LlamaConfig(**SHAPE, use_cache=False, attn_implementation="sdpa")
    with dev:
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    n_flop = n_params - model.get_input_embeddings().weight.numel()
    if a.checkpointing:
        model.activation_checkpointing_enable()
        model.enable_input_require_grads()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank,
                                             target_modules=targets))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    fwd = torch.compile(model) if a.compile else model
    tokens_per_step = a.batch * a.seq
    gen = torch.Generator(device="cpu").manual_seed(0)

    def batch() -> dict:
        if not a.packed:
            ids = torch.randint(0, SHAPE["vocab_size"], (a.batch, a.seq), generator=gen)
            return {"input_ids": ids.to(dev), "labels": ids.to(dev)}
        cuts = sorted(torch.randint(1, tokens_per_step, (a.batch - 1,), generator=gen).tolist())
        lengths = [b - c for c, b in zip([0, *cuts], [*cuts, tokens_per_step], strict=True)]
        ids = torch.randint(0, SHAPE["vocab_size"], (1, tokens_per_step), generator=gen)
        labels = ids.clone()
        pos, start = [], 0
        for n in lengths:
            labels[0, start] = -100
            pos.append(torch.arange(n))
            start += n
        return {"input_ids": ids.to(dev), "labels": labels.to(dev),
                "position_ids": torch.cat(pos).unsqueeze(0).to(dev)}

    def step() -> float:
        b = batch()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(**b, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())  # a sync point, once per step as Trainer's logging does

    t0 = time.perf_counter()
    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    tok_s = a.steps * tokens_per_step / dt
    mfu = 4 * n_flop * tok_s / (PEAK_BF16_TFLOPS * 1e12)
    print(json.dumps({
        "bench": "gpu", "device": torch.cuda.get_device_name(0),
        "params": n_params, "flop_params": n_flop, "seq": a.seq, "batch": a.batch,
        "packed": a.packed, "compile": a.compile, "checkpointing": a.checkpointing,
        "steps": a.steps, "warmup_s": round(warmup_s, 1), "step_ms": round(1000 * dt / a.steps, 1),
        "tokens_per_s": round(tok_s), "peak_mem_gib": round(torch.cuda.max_memory_allocated()
                                                            / 2**30, 2),
        "mfu": round(mfu, 3), "mfu_formula": "4*N*tokens/s / 989e12 (frozen base, N excl. "
                                             "embedding)", "loss": round(loss, 3),
    }))


if __name__ == "__main__":
    main()
