"""Model sources: folders, bare config.json, the local Hugging Face cache, demos."""

from __future__ import annotations

import shutil

import pytest
from graftlab.core.errors import UserError
from graftlab.core.model.sources import list_cached_models, resolve_source


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, tiny_models):
    """A Hugging Face hub cache holding one model, laid out as huggingface_hub writes it."""
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    blobs = repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for i, f in enumerate(sorted(tiny_models["llama"].iterdir())):
        blob = blobs / f"{i:064x}"
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_cached_model_is_listed_and_resolves(hf_cache):
    cached = list_cached_models()
    assert [c.repo_id for c in cached] == ["acme/tiny-llama"]
    assert cached[0].size_bytes > 0 and cached[0].has_config
    source = resolve_source("acme/tiny-llama")
    assert source.kind == "cache" and source.has_weights and source.name == "acme/tiny-llama"


def test_folder_config_and_demo(tiny_models):
    folder = resolve_source(str(tiny_models["gpt2"]))
    assert folder.kind == "folder" and folder.weights == "safetensors"
    config = resolve_source(str(tiny_models["gpt2"] / "config.json"))
    assert config.kind == "config" and not config.has_weights
    demo = resolve_source("demo:tiny-bert")
    assert demo.kind == "demo" and demo.has_weights and demo.name == str(demo.path.resolve())


def test_offline_unknown_hub_id_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        resolve_source("acme/never-downloaded")
