"""Peak memory of a training run, estimated before any weight is loaded.

peak ≈ weights + adapter + gradients + optimizer + activations + overhead, compared with the
chosen device (system RAM, or the GPU's free memory) for a fits / tight / will-not-fit verdict.

Model dimensions come from the module tree (shapes only): hidden size and vocabulary from the
token embedding, FFN width from the widest projection in a layer, the K/V width from
``k_proj``/``v_proj`` against ``q_proj``. An optional transformers config (or its dict) adds
the attention heads and attention dropout that shapes cannot show.

Activations (bytes per token per layer, autograd's saved tensors with frozen base weights):
a frozen Linear saves nothing, a LoRA layer saves its input, RMSNorm/LayerNorm save their input,
SiLU/GELU and the gated product save theirs, SDPA saves q, k, v and its output (the CPU and GPU
flash kernels keep no s×s scores; with attention dropout the math kernel keeps probabilities
and a mask, b·heads·s² each). The causal-LM loss holds three fp32 b·s·vocab tensors at the start
of backward: the log-softmax output, its gradient and the logits' gradient (the logits
themselves are freed when the Trainer drops the model's outputs before calling backward).
Gradient checkpointing keeps one b·s·hidden input per layer plus one layer being recomputed.

Quantized bases (``model.quantization``): bitsandbytes quantizes the weight of every Linear
(and GPT-2 Conv1D) except the heads. 4-bit NF4 stores half a byte per weight plus its state: one
absmax per block of 64 weights, double-quantized to one byte, with an fp32 absmax per 256
blocks. 8-bit stores a byte per weight plus an fp32 scale per output row. Everything else
(embeddings, norms, biases, heads) is cast to fp32 for k-bit training. Each quantized layer
dequantizes its weight in the compute dtype for its matmuls, one layer at a time. On CPU the
process keeps the full-precision weights it read in order to quantize them (peak RSS does not
shrink with 4-bit, measured), so they are counted as well; the memory win is a GPU figure.

Calibration (tests/bench/bench_memory_estimate.py, peak RSS on CPU, torch 2.13, Llama-style
models hidden 512–768, vocab 16k–32k): peak RSS exceeds the tensor sum by a roughly constant
factor, glibc keeping freed activation memory mapped, so activations are multiplied by
``CPU_ALLOCATOR_SLACK``. The CPU baseline is the RSS of a process that has imported torch,
transformers, peft, datasets and accelerate and built a Trainer. GPU figures use the same
tensor model with ``max_memory_allocated`` semantics and are not calibrated on hardware yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graftlab.core.adapter.plan import AdapterPlan
from graftlab.core.config import TrainingConfig
from graftlab.core.model.module_tree import LINEAR_CLASSES, ModuleTree
from graftlab.core.train.chunked_loss import chunk_tokens, use_chunked_loss
from graftlab.core.train.device import CPU_ONLY, Accelerator, decide, probe_accelerator

CPU_BASELINE = 600 * 2**20  # imported libraries + Trainer/runtime, measured (see module doc)
CUDA_CONTEXT = 500 * 2**20  # CUDA context + cuBLAS workspaces, outside max_memory_allocated
CPU_ALLOCATOR_SLACK = 1.2  # peak RSS / live activation tensors, calibrated on CPU
LOSS_BYTES_PER_LOGIT = 12  # three fp32 b·s·vocab tensors at the loss (see module doc)
# bytes per quantized weight: 4-bit packed, absmax per 64 (1 byte), fp32 absmax per 256 blocks
NF4_DQ_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
INT8_BYTES = 1.0  # plus an fp32 scale per output row
_ATTN_OUT = ("o_proj", "out_proj", "c_proj", "dense", "wo")
_DROPOUT_KEYS = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob")


@dataclass
class ModelDims:
    """The dimensions the activation formula needs, and where they came from."""

    hidden: int
    layers: int
    ffn: int
    vocab: int
    heads: int
    kv_width: int
    gated: bool
    attn_dropout: float


@dataclass
class MemoryEstimate:
    """A peak-memory estimate in bytes, with the device it is compared with."""

    breakdown: dict[str, int]
    total: int
    device: str
    device_total: int
    device_free: int
    verdict: str  # "fits" | "tight" | "will not fit"
    dims: ModelDims | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"breakdown": self.breakdown, "total": self.total, "device": self.device,
                "device_total": self.device_total, "device_free": self.device_free,
                "verdict": self.verdict, "notes": self.notes}


def _cfg_get(config: Any, *keys: str) -> Any:
    for k in keys:
        v = config.get(k) if isinstance(config, dict) else getattr(config, k, None)
        if v is not None:
            return v
    return None


def model_dims(tree: ModuleTree, model_config: Any = None) -> ModelDims:
    """Derive hidden size, layers, FFN width, vocabulary, heads and K/V width from the tree."""
    embeds = [m for m in tree.modules.values() if m.cls == "Embedding" and m.layer is None
              and m.in_features and m.out_features]
    tok = max(embeds, key=lambda m: m.in_features or 0, default=None)
    hidden = tok.out_features if tok else 0
    vocab = tok.in_features if tok else 0
    for name in tree.head:
        head = tree.modules[name]
        if head.out_features and tree.task == "causal-lm":
            vocab = head.out_features
    layer0 = [m for m in tree.modules.values() if m.layer == 0 and m.lora and m.out_features]
    if not hidden and layer0:
        hidden = min(m.in_features or 0 for m in layer0)
    ffn = max((m.out_features or 0 for m in layer0 if m.in_features == hidden), default=hidden)
    gated = sum(1 for m in layer0 if m.in_features == hidden and m.out_features == ffn) >= 2
    q = next((m for m in layer0 if m.kind.endswith("q_proj")), None)
    k = next((m for m in layer0 if m.kind.endswith("k_proj")), None)
    kv_width = k.out_features if q and k and k.out_features else hidden
    heads = _cfg_get(model_config, "num_attention_heads", "n_head") if model_config else None
    dropout = _cfg_get(model_config, *_DROPOUT_KEYS) if model_config else None
    if dropout is None:  # transformers' defaults: Llama-family 0.0, GPT-2 and BERT 0.1
        dropout = 0.0 if q is not None else 0.1
    return ModelDims(hidden, tree.num_layers, ffn, vocab, int(heads or max(1, hidden // 64)),
                     kv_width or hidden, gated, float(dropout))


def _per_token_layer(dims: ModelDims, tree: ModuleTree, plan: AdapterPlan) -> float:
    """Elements saved for backward per token in one layer (the widest adapted layer)."""
    h, f = dims.hidden, dims.ffn
    # gated: norm in, q, k, v, attention out, norm in, gate, up, act(gate); otherwise norm in,
    # fused qkv, attention out, norm in, fc out (GELU input) and two dropout masks.
    units = 4 * h + 2 * dims.kv_width + 3 * f if dims.gated else 6.5 * h + f
    roles: dict[int | None, set[str]] = {}
    dora_out: dict[int | None, int] = {}
    for m in plan.modules:
        info = tree.modules[m.name]
        if info.group == "attention":
            role = "attn_out" if info.kind.rpartition(".")[2] in _ATTN_OUT or \
                "output" in info.kind else "qkv"
        else:
            role = "mlp_out" if m.in_features == f and f != h else "mlp_in"
        roles.setdefault(m.layer, set()).add(role)
        if plan.variant == "dora":  # DoRA keeps the LoRA branch output for the magnitude grad
            dora_out[m.layer] = dora_out.get(m.layer, 0) + m.out_features
    extra = 0.0
    for layer, rs in roles.items():
        if layer is None:
            continue
        e = sum(f if r == "mlp_out" else h for r in rs) + dora_out.get(layer, 0)
        extra = max(extra, e)
    return units + extra


def quantized_weights(tree: ModuleTree, plan: AdapterPlan,
                      quantization: str) -> tuple[int, int, int]:
    """(bytes of the quantized weights with their state, parameters quantized, largest
    quantized weight) for a base loaded with `quantization`; (0, 0, 0) for ``none``."""
    if quantization == "none":
        return 0, 0, 0
    keep = set(tree.head) | set(plan.saved_modules)
    total, count, largest = 0.0, 0, 0
    for m in tree.modules.values():
        if m.cls not in LINEAR_CLASSES or not m.in_features or not m.out_features:
            continue
        if m.name in keep or m.name.rpartition(".")[2] == "lm_head":
            continue
        n = m.in_features * m.out_features
        count, largest = count + n, max(largest, n)
        total += n * NF4_DQ_BYTES if quantization == "4bit" else n * INT8_BYTES + 4 * m.out_features
    return int(total), count, largest


def verdict_for(total: int, free: int) -> str:
    """fits below 80 % of the free memory, tight below 100 %, else will not fit."""
    return "fits" if total < 0.8 * free else "tight" if total < free else "will not fit"


def _device_memory(device: str) -> tuple[int, int]:
    """(total, free) bytes of system RAM; the GPU's come from the accelerator probe."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


def estimate_memory(tree: ModuleTree, plan: AdapterPlan, training: TrainingConfig,
                    max_length: int, device: str = "cpu", dtype_bytes: int | None = None,
                    model_config: Any = None,
                    accel: Accelerator | None = None,
                    quantization: str = "none") -> MemoryEstimate:
    """Estimate the peak memory of training `plan` on `tree` with `training` settings.

    Args:
        tree: the model's module tree (shapes only).
        plan: the adapter plan (targets, ranks, variant, fully-trained modules).
        training: batch size, gradient checkpointing and precision are used.
        max_length: tokens per example (the worst case: every example this long).
        device: ``cpu``, ``cuda`` or ``auto``; resolved with `training.precision` by the
            same rule the training session uses (graftlab.core.train.device.decide).
        dtype_bytes: bytes per base weight; by default 4, or 2 for bf16 on a GPU (the dtype the
            training session loads the model in).
        model_config: optional transformers config or config dict for head count and attention
            dropout.
        accel: what the machine has (GPU, bf16 support, GPU memory). Without it, a CPU device
            needs no probe and any other asks torch in this process.
        quantization: ``model.quantization`` (``none``, ``8bit``, ``4bit``): quantized weights
            with their quantization state, the rest in fp32 (see the module doc).

    Returns:
        The estimate with a breakdown (weights, adapter, gradients, optimizer, activations,
        overhead), the device's total/free memory and a verdict: fits below 80% of free
        memory, tight below 100%, else will not fit. On CPU the baseline counts even when the
        libraries are already loaded in this process, so the verdict errs on the safe side.
    """
    if accel is None:
        accel = CPU_ONLY if device == "cpu" else probe_accelerator()
    choice = decide(device, training.precision, accel)
    device, precision = choice.device, choice.precision
    half = precision in ("bf16", "fp16") and not (precision == "fp16" and device == "cpu")
    if dtype_bytes is None:
        dtype_bytes = 2 if device == "cuda" and precision == "bf16" else 4
    act_bytes = 2 if half else 4
    dims = model_dims(tree, model_config)
    b, s = training.batch_size, max_length
    tokens = b * s
    trainable = plan.trainable_params
    per_layer = _per_token_layer(dims, tree, plan) * tokens * act_bytes
    scores = (2.25 * b * dims.heads * s * s * act_bytes) if dims.attn_dropout > 0 else 0.0
    checkpointing = training.gradient_checkpointing
    if checkpointing is None:  # unset: on with a 4-bit base (graftlab.core.config)
        checkpointing = quantization == "4bit"
    if checkpointing:
        # Layer inputs stay; one layer is recomputed at a time. Freed forward memory is reused
        # by the recompute, but the loss tensors come on top (CPU allocator keeps both).
        saved = dims.layers * tokens * dims.hidden * act_bytes + per_layer + scores
    else:
        saved = dims.layers * (per_layer + scores)
    grads_transient = (2 * dims.ffn + 3 * dims.hidden) * tokens * act_bytes
    logits = tokens * dims.vocab * LOSS_BYTES_PER_LOGIT if tree.task == "causal-lm" else 0
    if use_chunked_loss(training.chunked_loss, tree.task, dims.vocab):
        # one chunk's logits (forward, recomputed in backward, and their gradient) plus the
        # gathered hidden states of the trained tokens and their gradient
        chunk = min(tokens, chunk_tokens(dims.vocab))
        logits = chunk * dims.vocab * LOSS_BYTES_PER_LOGIT + 2 * tokens * dims.hidden * 4
    activations = saved + grads_transient + logits
    if plan.variant == "dora":  # one dense W + s·B·A at a time for the weight norm
        activations += 2 * max((m.in_features * m.out_features for m in plan.modules),
                               default=0) * 4
    quant_bytes, quant_params, largest = quantized_weights(tree, plan, quantization)
    if quant_params:  # one layer's weight dequantized for its matmul (and its input gradient)
        activations += 2 * largest * act_bytes
        weights = quant_bytes + (tree.total_params - quant_params) * 4
        if device == "cpu":  # the full-precision weights read to quantize stay resident
            weights += quant_params * 4
    else:
        weights = tree.total_params * dtype_bytes
    if device == "cpu":
        activations *= CPU_ALLOCATOR_SLACK
    breakdown = {
        "weights": weights,
        "adapter": trainable * 4,  # PEFT keeps adapter weights in fp32 (autocast_adapter_dtype)
        "gradients": trainable * 4,
        "optimizer": trainable * 8,  # AdamW: exp_avg and exp_avg_sq in fp32
        "activations": int(activations),
        "overhead": CPU_BASELINE if device == "cpu" else CUDA_CONTEXT,
    }
    total = sum(breakdown.values())
    if device == "cuda":
        dev_total, dev_free = accel.total_bytes, accel.free_bytes
    else:
        dev_total, dev_free = _device_memory(device)
    verdict = verdict_for(total, dev_free)
    notes = [f"hidden {dims.hidden}, layers {dims.layers}, ffn {dims.ffn}, vocab {dims.vocab}, "
             f"batch {b} × {s} tokens, {precision} on {device}"]
    if quant_params:
        notes.append(f"{quantization} base: {quant_params:,} weights quantized "
                     f"({quant_bytes / 2**20:,.1f} MB with their quantization state)")
    if device == "cuda":
        notes.append("GPU estimate is not calibrated on hardware yet.")
    return MemoryEstimate(breakdown, total, device, dev_total, dev_free, verdict, dims, notes)
