"""Shared fixtures: tiny models built from configs, saved with save_pretrained, loaded back
through the same code path a user's model takes. Nothing downloads."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No spare training process per window (each would import torch); tests that want one opt in.
os.environ.setdefault("GRAFTLAB_PRESTART", "0")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# A fast-lane test that runs this long is hung, not slow: fail it well before the 600 s that
# pyproject.toml gives every test (a slow test waits on a child process or a real run).
FAST_TEST_TIMEOUT_S = 180


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") is None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAST_TEST_TIMEOUT_S))


@pytest.fixture(scope="session", autouse=True)
def _graftlab_cache(tmp_path_factory):
    """Demo models and data go to a per-session cache, never the user's."""
    root = tmp_path_factory.mktemp("graftlab-cache")
    old = os.environ.get("GRAFTLAB_CACHE")
    os.environ["GRAFTLAB_CACHE"] = str(root)
    os.environ.setdefault("HF_HOME", str(root / "hf"))
    yield root
    if old is None:
        os.environ.pop("GRAFTLAB_CACHE", None)
    else:
        os.environ["GRAFTLAB_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Folders of tiny random models: llama, gpt2, qwen2 (causal LM) and bert (classifier)."""
    from graftlab.core.model.demo import save_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "llama": save_tiny_model("llama", root / "llama"),
        "gpt2": save_tiny_model("gpt2", root / "gpt2"),
        "qwen2": save_tiny_model("qwen2", root / "qwen2"),
        "bert": save_tiny_model("bert", root / "bert", task="sequence-classification"),
    }


@pytest.fixture
def write_jsonl(tmp_path):
    """write_jsonl(rows, name="data.jsonl") -> Path."""

    def write(rows, name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    return write


def _save_peft(out, arch="llama", layers=2, seed=0, **lora_kwargs):
    """get_peft_model + save_pretrained on an in-memory tiny model, with random non-zero B.

    Returns the PeftModel; the adapter folder is `out`.
    """
    import warnings

    import torch
    from graftlab.core.model.demo import build_config
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_config(build_config(arch, 128, {"layers": layers}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(base, LoraConfig(init_lora_weights=False, **lora_kwargs))
        pm.save_pretrained(str(out))
    return pm


@pytest.fixture(scope="session")
def save_peft():
    """save_peft(out, arch="llama", layers=2, seed=0, **LoraConfig kwargs) -> PeftModel."""
    return _save_peft


@pytest.fixture
def no_orphans(tmp_path):
    """A failing test never leaves a detached run training: kill what is live under tmp_path."""
    yield
    import contextlib
    import os
    import signal

    from graftlab.core.process.attached import live_runs
    from graftlab.core.train.live import read_live

    for run in live_runs([tmp_path], depth=3):
        pid = read_live(run).get("pid")
        if isinstance(pid, int):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
