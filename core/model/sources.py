"""Where a model comes from: a folder, a bare config.json, the local HF cache, the hub, or a demo.

Resolving a source never loads weights. It answers: where is the config, are weights present
(and in which format), and what tokenizer goes with it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graftlab.core.errors import UserError


@dataclass(frozen=True)
class ModelSource:
    """A resolved model source.

    Attributes:
        spec: what the user wrote (``demo:tiny-llama``, a path, a hub id).
        kind: one of ``folder``, ``config``, ``cache``, ``hub``, ``demo``.
        path: the local folder holding config.json, or the config file itself (kind config).
        weights: ``safetensors``, ``pickle`` (only .bin files), ``hub`` (not downloaded yet:
            fetched when training or merging starts) or ``none``.
        name: what to write as ``base_model_name_or_path`` in an exported adapter.
    """

    spec: str
    kind: str
    path: Path | None
    weights: str
    name: str

    @property
    def has_weights(self) -> bool:
        return self.weights != "none"

    @property
    def is_demo(self) -> bool:
        return self.kind == "demo"


@dataclass(frozen=True)
class CachedModel:
    """A model repository present in the local Hugging Face cache."""

    repo_id: str
    size_bytes: int
    path: Path
    has_config: bool


def _weights_in(folder: Path) -> str:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if any(n.endswith(".safetensors") for n in names) or "model.safetensors.index.json" in names:
        return "safetensors"
    if any(n.endswith(".bin") or n.endswith(".pt") or n.endswith(".pth") for n in names):
        return "pickle"
    return "none"


def _read_config_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc.__class__.__name__}); point "
                        "model.source at a Hugging Face model folder or its config.json.",
                        field="model.source") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object; it is not a model config.",
                        field="model.source")
    return data


def check_config(folder: Path, trust_remote_code: bool = False) -> dict[str, Any]:
    """Read and sanity-check ``folder/config.json`` without importing transformers."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{folder} has no config.json; choose a Hugging Face model folder "
                        "(it holds config.json and *.safetensors).", field="model.source")
    return _check_config_data(_read_config_json(cfg_path), cfg_path, trust_remote_code)


def _check_config_data(data: dict[str, Any], cfg_path: Path,
                       trust_remote_code: bool) -> dict[str, Any]:
    folder = cfg_path.parent
    if "model_type" not in data:
        raise UserError(f"{cfg_path} has no `model_type`; it is not a transformers model "
                        "config (re-export it with save_pretrained).", field="model.source")
    if data.get("auto_map") and not trust_remote_code:
        raise UserError(f"{folder} needs custom Python code shipped with the model "
                        "(auto_map in config.json); if you trust its author, set "
                        "`model.trust_remote_code: true` in run.yaml.",
                        field="model.trust_remote_code")
    return data


def resolve_source(spec: str, trust_remote_code: bool = False,
                   allow_download: bool = True) -> ModelSource:
    """Turn what the user typed into a :class:`ModelSource`; raise UserError if it is not one.

    A hub id that is not cached fetches its config.json (never weights); with
    `allow_download` False it is refused instead (the adapter inspector asks first).
    """
    spec = spec.strip()
    if not spec:
        raise UserError("no model given; choose a model folder, a config.json, a cached model "
                        "or demo:tiny-llama.", field="model.source")
    if spec.startswith("demo:"):
        from graftlab.core.model.demo import demo_model_path

        folder = demo_model_path(spec[5:])
        check_config(folder)
        # The real folder, not `demo:...`: other tools (llama.cpp's converter) read this name.
        return ModelSource(spec, "demo", folder, _weights_in(folder), str(folder.resolve()))
    path = Path(os.path.expanduser(spec))
    if path.exists() or spec.startswith((".", "/", "~")) or os.sep in spec and path.suffix:
        if not path.exists():
            raise UserError(f"model path {path} does not exist; check the spelling or choose "
                            "another folder.", field="model.source")
        if path.is_file():
            if path.name != "config.json" and path.suffix != ".json":
                raise UserError(f"{path} is a file, not a model folder; choose the folder that "
                                "holds config.json, or the config.json itself.",
                                field="model.source")
            _check_config_data(_read_config_json(path), path, trust_remote_code)
            return ModelSource(spec, "config", path, "none", str(path.parent.resolve()))
        check_config(path, trust_remote_code)
        return ModelSource(spec, "folder", path, _weights_in(path), str(path.resolve()))
    return _resolve_hub_id(spec, trust_remote_code, allow_download)


def _resolve_hub_id(spec: str, trust_remote_code: bool, allow_download: bool) -> ModelSource:
    """A hub id: the local Hugging Face cache first, then its config.json only (never weights).

    The weights come when a run or merge starts (graftlab.core.model.hub).
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise UserError(f"model {spec!r} is neither a local path nor a hub id "
                        "(owner/name); check the spelling.", field="model.source") from None
    cached = try_to_load_from_cache(spec, "config.json")  # a path, or a "not cached" marker
    if isinstance(cached, str):
        folder = Path(cached).parent
        check_config(folder, trust_remote_code)
        weights = _weights_in(folder)
        # Only the config may have been fetched so far: "hub" means weights still to come.
        return ModelSource(spec, "cache", folder, "hub" if weights == "none" else weights, spec)
    if not allow_download:
        raise UserError(f"model {spec!r} is not on this machine; its config.json can be "
                        "fetched from the hub (no weights) if you agree.", field="model.source")
    from graftlab.core.model.hub import fetch_config

    folder = fetch_config(spec)  # config.json only, never weights
    check_config(folder, trust_remote_code)
    weights = _weights_in(folder)
    return ModelSource(spec, "hub", folder, "hub" if weights == "none" else weights, spec)


def list_cached_models() -> list[CachedModel]:
    """Model repositories in the local Hugging Face cache, newest revision of each."""
    try:
        from huggingface_hub import constants, scan_cache_dir

        info = scan_cache_dir(constants.HF_HUB_CACHE)  # the current value, not import-time
    except Exception:  # no cache folder yet, or unreadable: nothing cached
        return []
    out = []
    for repo in info.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        rev = max(repo.revisions, key=lambda r: r.last_modified)
        snapshot = Path(rev.snapshot_path)
        out.append(CachedModel(repo.repo_id, int(repo.size_on_disk), snapshot,
                               (snapshot / "config.json").is_file()))
    return sorted(out, key=lambda c: c.repo_id.lower())


def load_auto_config(source: ModelSource, trust_remote_code: bool = False,
                     num_labels: int | None = None) -> Any:
    """``AutoConfig`` for a resolved source (local files only)."""
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    try:
        return AutoConfig.from_pretrained(str(source.path), **kwargs)
    except (ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"transformers cannot read the config of {source.spec}: {first}",
                        field="model.source") from None
