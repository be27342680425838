"""Hub models against a local fake hub: opening or inspecting fetches config.json only, the
tokenizer when data needs it, and the weights only when a run or merge starts, after a
disk-space check, with progress."""

from __future__ import annotations

import shutil

import pytest
from fake_hub import FakeHub
from graftlab.core.cli import main
from graftlab.core.errors import UserError

REPO = "acme/tiny-llama"


@pytest.fixture
def hub(tiny_models, tmp_path, monkeypatch):
    from huggingface_hub import constants

    server = FakeHub(REPO, tiny_models["llama"])
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    yield server
    server.close()


def fetched(server):
    return sorted({path.rsplit("/", 1)[-1] for method, path in server.requests
                   if method == "GET" and "/resolve/" in path})


def test_inspect_fetches_config_json_only(hub, capsys):
    assert main(["inspect", REPO]) == 0
    assert "llama" in capsys.readouterr().out
    assert hub.weight_requests() == []
    assert fetched(hub) == ["config.json"]


def test_opening_twice_uses_the_cache_and_still_no_weights(hub):
    from graftlab.core.model.sources import resolve_source

    first = resolve_source(REPO)
    assert first.kind == "hub" and first.weights == "hub"
    again = resolve_source(REPO)  # now from the local cache, weights still not there
    assert again.kind == "cache" and again.weights == "hub"
    assert hub.weight_requests() == []


def test_tokenizer_comes_without_weights(hub):
    from graftlab.core.model.loading import load_tokenizer
    from graftlab.core.model.sources import resolve_source

    tok = load_tokenizer(resolve_source(REPO))
    assert tok("hello world")["input_ids"]
    assert hub.weight_requests() == []
    assert "tokenizer.json" in fetched(hub)


def test_weights_download_when_training_starts_with_progress(hub, tmp_path):
    from graftlab.core.config import RunConfig
    from graftlab.core.train.events import Download, Step
    from graftlab.core.train.session import TrainingSession

    cfg = RunConfig()
    cfg.model.source = REPO
    cfg.data.path = "demo:stories"
    cfg.data.max_length = 32
    cfg.adapter.targets = ["model.layers.*.self_attn.q_proj"]
    cfg.training.max_steps = 2
    cfg.training.output_dir = str(tmp_path / "run")
    events = []
    TrainingSession(cfg, [events.append]).run()
    downloads = [e for e in events if isinstance(e, Download)]
    assert downloads and downloads[-1].done_bytes == downloads[-1].total_bytes > 0
    first_step = next(i for i, e in enumerate(events) if isinstance(e, Step))
    assert events.index(downloads[-1]) < first_step
    gets = [r for r in hub.weight_requests() if r[0] == "GET"]
    assert len(gets) == 1, gets  # model.safetensors, once


def test_too_little_disk_space_refuses_before_any_weight_request(hub, monkeypatch, tmp_path):
    from graftlab.core.model.hub import fetch_weights

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(UserError, match="GB free"):
        fetch_weights(REPO)
    assert hub.weight_requests() == []


def test_unknown_repo_is_one_sentence(hub):
    from graftlab.core.model.sources import resolve_source

    with pytest.raises(UserError, match="could not fetch model 'acme/nope'"):
        resolve_source("acme/nope")
