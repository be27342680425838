"""Hub models: the config to look at a model, the tokenizer when data needs it, the weights only
when training or merging starts.

Opening or inspecting a hub id fetches ``config.json`` alone (a few KB), never weights: a
70B model is 140 GB. Weights are fetched by :func:`fetch_weights` after a disk-space check,
file by file, reporting bytes as they arrive. Files are listed with ``model_info`` and fetched
with ``hf_hub_download`` into the usual Hugging Face cache, so other tools find them too.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graftlab.core.errors import UserError

# (bytes done, bytes in all, file name) while weights download
DownloadProgress = Callable[[int, int, str], None]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "merges.txt",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _fail(repo_id: str, exc: Exception) -> UserError:
    return UserError(f"could not fetch model {repo_id!r} from the hub "
                     f"({exc.__class__.__name__}); check the id and your connection, or choose "
                     "a local folder.", field="model.source")


def _download(repo_id: str, name: str, tqdm_class: Any = None) -> Path:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, name, endpoint=_endpoint(), tqdm_class=tqdm_class))


def fetch_config(repo_id: str) -> Path:
    """Download only ``config.json`` of `repo_id`; returns the snapshot folder holding it."""
    if hub_offline():
        raise UserError(f"model {repo_id!r} is not a local folder and not in the Hugging Face "
                        "cache, and the hub is offline; download it first or choose a local "
                        "folder.", field="model.source")
    try:
        return _download(repo_id, "config.json").parent
    except Exception as exc:  # network, auth, unknown repo: one sentence
        raise _fail(repo_id, exc) from None


def repo_files(repo_id: str) -> dict[str, int]:
    """Every file of the repository with its size in bytes (no file is downloaded)."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=_endpoint()).model_info(repo_id, files_metadata=True)
    except Exception as exc:
        raise _fail(repo_id, exc) from None
    return {s.rfilename: int(s.size or 0) for s in info.siblings or []}


def fetch_tokenizer(repo_id: str) -> Path:
    """Download the tokenizer files of `repo_id` (never weights); returns the snapshot folder."""
    if hub_offline():
        raise UserError(f"the tokenizer of {repo_id!r} is not downloaded and the hub is "
                        "offline; connect, or choose a local model folder.",
                        field="model.source")
    folder = fetch_config(repo_id)
    for name in repo_files(repo_id):
        if name in TOKENIZER_FILES:
            try:
                folder = _download(repo_id, name).parent
            except Exception as exc:
                raise _fail(repo_id, exc) from None
    return folder


def weight_files(files: dict[str, int]) -> dict[str, int]:
    """The files a safetensors load needs: the shards and their index."""
    return {n: s for n, s in files.items() if "/" not in n and (
        n.endswith(".safetensors") or n == "model.safetensors.index.json")}


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _progress_bar(report: DownloadProgress, done_before: int, total: int, name: str) -> type:
    """A silent tqdm class that hands each chunk's byte count to `report`."""
    from tqdm.auto import tqdm

    class ReportingBar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.got = 0

        def update(self, n: float | None = 1) -> bool | None:
            self.got += int(n or 0)
            report(min(total, done_before + self.got), total, name)
            return None

    return ReportingBar


def fetch_weights(repo_id: str, progress: DownloadProgress | None = None) -> Path:
    """Download the safetensors weights of `repo_id` after checking the free disk space.

    Args:
        repo_id: the hub id.
        progress: called with (bytes done, bytes in all, file) as data arrives.

    Returns:
        The snapshot folder holding config, tokenizer and weights.
    """
    from huggingface_hub import constants

    if hub_offline():
        raise UserError(f"the weights of {repo_id!r} are not downloaded and the hub is offline; "
                        "connect to download them, or choose a local model folder.",
                        field="model.source")
    files = repo_files(repo_id)
    weights = weight_files(files)
    if not any(n.endswith(".safetensors") for n in weights):
        raise UserError(f"hub model {repo_id!r} has no safetensors weights; choose a model that "
                        "ships *.safetensors, or convert it locally.", field="model.source")
    total = sum(weights.values())
    cache = Path(constants.HF_HUB_CACHE)
    free = shutil.disk_usage(_nearest_existing(cache)).free
    if total * 1.05 > free:
        raise UserError(f"the weights of {repo_id!r} need {total / 2**30:.1f} GB but the disk "
                        f"holding {_nearest_existing(cache)} has {free / 2**30:.1f} GB free; "
                        "free some space or set HF_HOME to a larger disk.",
                        field="model.source")
    folder = fetch_tokenizer(repo_id)
    done = 0
    for name, size in sorted(weights.items()):
        bar = _progress_bar(progress, done, total, name) if progress else None
        try:
            folder = _download(repo_id, name, bar).parent
        except Exception as exc:
            raise _fail(repo_id, exc) from None
        done += size
        if progress:
            progress(done, total, name)
    return folder
