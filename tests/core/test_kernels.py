"""training.kernels: Liger kernels on CUDA only; a clean skip on CPU, one sentence for `on`."""

from __future__ import annotations

import sys
import types

import pytest
from graftlab.core.config import RunConfig
from graftlab.core.errors import UserError
from graftlab.core.train import kernels
from graftlab.core.train.kernels import apply_kernels, decide_kernels


def test_auto_skips_on_cpu_with_a_log_line():
    choice = decide_kernels("auto", "cpu", "llama", "causal-lm")
    assert not choice.use
    assert choice.message.startswith("fused kernels: skipped (") and "CPU" in choice.message


@pytest.mark.parametrize("device,installed,fragment", [
    ("cpu", True, "need a CUDA GPU"),
    ("cuda", False, "liger-kernel is not installed (pip install liger-kernel)"),
])
def test_on_where_they_cannot_run_is_one_sentence(monkeypatch, device, installed, fragment):
    monkeypatch.setattr(kernels, "liger_installed", lambda: installed)
    with pytest.raises(UserError) as info:
        decide_kernels("on", device, "llama", "causal-lm")
    assert fragment in info.value.message and info.value.field == "training.kernels"
    assert "\n" not in info.value.message and info.value.message.endswith(".")
    assert not decide_kernels("auto", device, "llama", "causal-lm").use


def test_missing_liger_is_detected_without_importing_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)
    assert not kernels.liger_installed()
    choice = decide_kernels("auto", "cuda", "llama", "causal-lm")
    assert not choice.use and "not installed" in choice.message


def _fake_liger(monkeypatch, calls):
    def apply_liger_kernel_to_llama(rope=True, cross_entropy=False,
                                    fused_linear_cross_entropy=True, rms_norm=True,
                                    swiglu=True, model=None):
        calls.append(dict(rope=rope, cross_entropy=cross_entropy, rms_norm=rms_norm,
                          fused_linear_cross_entropy=fused_linear_cross_entropy,
                          swiglu=swiglu, model=model))

    patch = types.ModuleType("liger_kernel.transformers.monkey_patch")
    patch.MODEL_TYPE_TO_APPLY_LIGER_FN = {"llama": apply_liger_kernel_to_llama}
    for name, module in (("liger_kernel", types.ModuleType("liger_kernel")),
                         ("liger_kernel.transformers",
                          types.ModuleType("liger_kernel.transformers")),
                         ("liger_kernel.transformers.monkey_patch", patch)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(kernels, "liger_installed", lambda: True)


def test_cuda_with_liger_applies_every_kernel_but_the_loss(monkeypatch):
    calls: list[dict] = []
    _fake_liger(monkeypatch, calls)
    choice = decide_kernels("on", "cuda", "llama", "causal-lm")
    assert choice.use and "the loss stays Graftlab's" in choice.message
    with pytest.raises(UserError, match="no kernels for model type 'bert'"):
        decide_kernels("on", "cuda", "bert", "causal-lm")
    assert not decide_kernels("auto", "cuda", "gpt2", "causal-lm").use
    model = types.SimpleNamespace(config=types.SimpleNamespace(model_type="llama"))
    apply_kernels(model)
    assert calls == [dict(rope=True, cross_entropy=False, rms_norm=True, swiglu=True,
                          fused_linear_cross_entropy=False, model=model)]


def test_kernels_value_is_checked():
    with pytest.raises(UserError, match="`training.kernels` is 'fast'; use one of auto, on"):
        RunConfig.from_dict({"training": {"kernels": "fast"}})
    assert RunConfig().training.kernels == "auto"


def test_off_says_so():
    choice = decide_kernels("off", "cuda", "llama", "causal-lm")
    assert not choice.use and "off" in choice.message
