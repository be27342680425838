"""Sizes of LoRA updates ΔW = scale·B·A, computed from the small factors only.

A LoRA module stores A (r×in) and B (out×r). The dense update ΔW = scale·B·A is out×in, which
for a 70B model's MLP projection is 8192×28672 floats (940 MB in fp32), so it is never formed.
Everything here works on r×r matrices instead ("Gram trick"):

- ‖B·A‖²_F = trace(Aᵀ Bᵀ B A) = trace((A Aᵀ)(Bᵀ B)), two r×r Gram matrices;
- ⟨B₁A₁, B₂A₂⟩_F = trace((A₂ A₁ᵀ)(B₁ᵀ B₂)) for the cosine between two adapters;
- the singular values of B·A are those of the r×r matrix R_B R_Aᵀ, where Aᵀ = Q_A R_A and
  B = Q_B R_B are thin QR factorisations (Q_A, Q_B have orthonormal columns and drop out).

The cost is O(r²·(in+out)) per module instead of O(r·in·out).

:func:`relative_update_sizes` runs on a live ``PeftModel`` in the training worker thread every few
steps (the GUI's heatmap), so it caches ‖W‖_F of the frozen base weights and allocates nothing
big. Convolution factors are flattened to matrices (A: r×(in·k), B: out×r); embedding adapters
store A as r×num_embeddings and B as dim×r and their ΔW is (B·A)ᵀ, which has the same norm and
singular values, so the same functions apply.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch


def _as_matrices(A: torch.Tensor, B: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten conv factors to (r×in·k, out×r) and cast; plain Linear factors pass through."""
    a = A.detach().reshape(A.shape[0], -1).to(dtype)
    b = B.detach().reshape(B.shape[0], -1).to(dtype)
    if a.shape[0] != b.shape[1]:
        raise ValueError(f"LoRA factors do not chain: A is {tuple(A.shape)} (rank "
                         f"{a.shape[0]}) but B is {tuple(B.shape)} (rank {b.shape[1]})")
    return a, b


def delta_norm(A: torch.Tensor, B: torch.Tensor, scale: float = 1.0,
               dtype: torch.dtype = torch.float32) -> float:
    """‖scale·B·A‖_F via the r×r Gram matrices, without forming the out×in update.

    Args:
        A: lora_A weight, r×in (or r×in×k×k for convolutions).
        B: lora_B weight, out×r (or out×r×1×1).
        scale: the module's LoRA scale (alpha/r, or alpha/√r for rsLoRA).
        dtype: compute dtype; float32 is accurate to ~1e-6 relative, float64 for reference use.

    Returns:
        The Frobenius norm as a Python float.
    """
    a, b = _as_matrices(A, B, dtype)
    # trace(XY) for symmetric X, Y equals the sum of their elementwise product.
    sq = ((a @ a.T) * (b.T @ b)).sum().clamp_min(0.0)
    return abs(scale) * math.sqrt(float(sq))


def delta_inner(A1: torch.Tensor, B1: torch.Tensor, s1: float, A2: torch.Tensor,
                B2: torch.Tensor, s2: float, dtype: torch.dtype = torch.float32) -> float:
    """Frobenius inner product ⟨s1·B1·A1, s2·B2·A2⟩ using r1×r2 products only.

    The two ranks may differ; the shapes of the updates (out×in) must agree.
    """
    a1, b1 = _as_matrices(A1, B1, dtype)
    a2, b2 = _as_matrices(A2, B2, dtype)
    if a1.shape[1] != a2.shape[1] or b1.shape[0] != b2.shape[0]:
        raise ValueError(f"updates have different shapes: {b1.shape[0]}×{a1.shape[1]} vs "
                         f"{b2.shape[0]}×{a2.shape[1]}")
    # trace(A1ᵀB1ᵀB2A2) = trace((A2A1ᵀ)(B1ᵀB2)); both factors are r2×r1 / r1×r2.
    return s1 * s2 * float(((a2 @ a1.T) * (b1.T @ b2).T).sum())


def delta_singular_values(A: torch.Tensor, B: torch.Tensor, scale: float = 1.0,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The r largest singular values of scale·B·A, descending (the rest are zero).

    Uses thin QR factorisations rather than eigenvalues of the Gram product: the Gram route
    squares the condition number and loses the small singular values in float32.
    """
    a, b = _as_matrices(A, B, dtype)
    _, r_a = torch.linalg.qr(a.T)  # Aᵀ = Q_A R_A, R_A is r×r
    _, r_b = torch.linalg.qr(b)  # B = Q_B R_B
    return abs(scale) * torch.linalg.svdvals(r_b @ r_a.T)


def effective_rank(singular_values: torch.Tensor | list[float]) -> float:
    """Entropy effective rank (Roy & Vetterli, 2007): exp(H(p)) with p = σ / Σσ.

    It is 1 for a rank-1 update and r when all r singular values are equal, and varies smoothly
    in between (a threshold count would jump). Returns 0 for a zero update.
    """
    s = torch.as_tensor(singular_values, dtype=torch.float64).clamp_min(0.0)
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


# ---- live PeftModel ---------------------------------------------------------------------------

# ‖W‖_F of frozen base weights, per model: the base never changes during LoRA training, so each
# norm is computed once (a full pass over the weight) and then reused every refresh.
_BASE_NORMS: weakref.WeakKeyDictionary[Any, dict[str, float]] = weakref.WeakKeyDictionary()


def _lora_layers(peft_model: Any) -> list[tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    root = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    return [(name, m) for name, m in root.named_modules() if isinstance(m, LoraLayer)]


def _factors(layer: Any, adapter: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if adapter in getattr(layer, "lora_A", {}):
        return layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    if adapter in getattr(layer, "lora_embedding_A", {}):
        return layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter]
    return None


def _adapter_name(peft_model: Any, adapter: str | None) -> str:
    if adapter is not None:
        return adapter
    active = getattr(peft_model, "active_adapter", "default")
    return active[0] if isinstance(active, list | tuple) else active


@torch.no_grad()
def _dora_full_change(layer: Any, adapter: str, weight: torch.Tensor) -> float:
    """‖W' − W‖_F for DoRA, W' = m ⊙ (W + sBA) / ‖W + sBA‖_row: forms one dense weight."""
    a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    w = weight.float()
    if getattr(layer, "fan_in_fan_out", False):  # Conv1D stores W as in×out
        w = w.T
    w = w.reshape(w.shape[0], -1)
    combined = w + layer.scaling[adapter] * (b.float().reshape(b.shape[0], -1)
                                             @ a.float().reshape(a.shape[0], -1))
    mag = layer.lora_magnitude_vector[adapter].weight.float().reshape(-1, 1)
    new = mag * combined / combined.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return float((new - w).norm())


@torch.no_grad()
def relative_update_sizes(peft_model: Any, adapter: str | None = None,
                          dora_full: bool = False) -> dict[str, float]:
    """‖ΔW‖_F / ‖W‖_F for every LoRA module of a live ``PeftModel``.

    Cheap enough to call every few steps from the training thread: O(r²·(in+out)) per module
    plus a one-off pass over each frozen base weight (cached per model). Names are as the base
    model names its modules (``model.layers.0.self_attn.q_proj``).

    For DoRA, ΔW is by default the LoRA part scale·B·A, the same quantity as for plain LoRA, so
    heatmaps of LoRA and DoRA runs compare like for like. With ``dora_full=True`` it is the
    whole change of the effective weight, m ⊙ (W + sBA)/‖W + sBA‖ − W, including the learned
    magnitude; that forms one dense out×in matrix per module, so only use it on demand.

    Args:
        peft_model: a ``peft.PeftModel`` (or a model with injected LoRA layers).
        adapter: adapter name; the active adapter by default.
        dora_full: measure the full DoRA weight change (dense, slower) instead of scale·B·A.

    Returns:
        Module name → relative update size (0.0 when the base weight is zero or on meta).
    """
    name = _adapter_name(peft_model, adapter)
    cache = _BASE_NORMS.setdefault(peft_model, {})
    out: dict[str, float] = {}
    for module_name, layer in _lora_layers(peft_model):
        factors = _factors(layer, name)
        if factors is None:
            continue
        base = layer.get_base_layer()
        weight = getattr(base, "weight", None)
        if weight is None or weight.device.type == "meta":
            continue
        if module_name not in cache:
            cache[module_name] = float(weight.detach().float().norm())
        w_norm = cache[module_name]
        dora = name in getattr(layer, "lora_magnitude_vector", {})
        if dora and dora_full and name in getattr(layer, "lora_A", {}):
            delta = _dora_full_change(layer, name, weight)
        else:
            delta = delta_norm(factors[0], factors[1], float(layer.scaling[name]))
        out[module_name] = delta / w_norm if w_norm > 0 else 0.0
    return out
