"""Loading a model's weights and tokenizer the way every user's model is loaded.

Used by training, export/merge and the inspector; nothing here knows about runs.
"""

from __future__ import annotations

from typing import Any

from graftlab.core.errors import UserError
from graftlab.core.model.hub import (
    TOKENIZER_FILES,
    DownloadProgress,
    fetch_tokenizer,
    fetch_weights,
)
from graftlab.core.model.sources import ModelSource, resolve_source


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    folder = source.path
    if source.kind in ("hub", "cache") and folder is not None and not any(
            (folder / n).is_file() for n in TOKENIZER_FILES):
        folder = fetch_tokenizer(source.spec)  # the tokenizer files only, never weights
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{source.spec} has no usable tokenizer ({first}); the model folder "
                        "needs tokenizer.json or the tokenizer files saved with it.",
                        field="model.source") from None
    if tok.pad_token is None:  # Llama-style tokenizers ship without one
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def check_weights(source: ModelSource, allow_pickle: bool = False) -> None:
    """Refuse a source without loadable weights, before anything else is done with it."""
    spec = source.spec
    if source.kind == "config":
        raise UserError(f"{spec} is a bare config.json: it can be inspected but not trained; "
                        "point model.source at the model folder that holds the weights.",
                        field="model.source")
    if source.weights == "hub":
        from graftlab.core.model.hub import hub_offline

        if hub_offline():
            raise UserError(f"the weights of {spec!r} are not downloaded and the hub is "
                            "offline; connect to download them, or choose a local model "
                            "folder.", field="model.source")
        return
    if source.weights == "none":
        raise UserError(f"{source.path} holds no weights (*.safetensors); choose a folder "
                        "with the model's weights.", field="model.source")
    if source.weights == "pickle" and not allow_pickle:
        raise UserError(f"{source.path} only has pickle weights (.bin), which can run code "
                        "when loaded; convert them to safetensors, or set "
                        "`model.allow_pickle_weights: true` if you trust the file.",
                        field="model.allow_pickle_weights")


def load_base_model(spec: str, task: str = "auto", *, trust_remote_code: bool = False,
                    allow_pickle: bool = False, num_labels: int | None = None,
                    label_names: list[str] | None = None, dtype: Any = "auto",
                    device: str = "cpu",
                    on_download: DownloadProgress | None = None,
                    quantization: str = "none",
                    keep_modules: list[str] | None = None) -> tuple[Any, Any, str]:
    """Load weights the way a user's model is always loaded. Returns (model, tokenizer, task).

    A hub model's weights are downloaded here (after a disk-space check), reporting bytes to
    `on_download`; opening or inspecting it fetched only its config. With `quantization`
    (``8bit``, ``4bit``) the weights are quantized by bitsandbytes as they load, computing in
    `dtype`, placed on `device` directly; `keep_modules` (the heads) stay unquantized.
    """
    from graftlab.core.model.module_tree import infer_task
    from graftlab.core.model.sources import load_auto_config
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    source = resolve_source(spec, trust_remote_code)
    check_weights(source, allow_pickle)
    if source.weights == "hub":
        folder = fetch_weights(source.spec, on_download)
        source = ModelSource(source.spec, "hub", folder, "safetensors", source.name)
    config = load_auto_config(source, trust_remote_code,
                              len(label_names) if label_names else num_labels)
    if task == "auto":
        task = infer_task(config)
    if label_names:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
    auto = AutoModelForSequenceClassification if task == "sequence-classification" \
        else AutoModelForCausalLM
    extra: dict[str, Any] = {}
    if quantization != "none":
        from graftlab.core.model import quantization as q

        q.quiet_bitsandbytes()
        extra = {"quantization_config": q.bnb_config(quantization, dtype, keep_modules or []),
                 "device_map": q.device_map(device)}
    try:
        model = auto.from_pretrained(str(source.path), config=config, dtype=dtype,
                                     use_safetensors=source.weights == "safetensors",
                                     trust_remote_code=trust_remote_code, **extra)
    except Exception as exc:  # corrupt/truncated files surface as many exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if quantization != "none":
            raise UserError(f"bitsandbytes could not load {spec} quantized to {quantization} "
                            f"({first}); set model.quantization: none to train it unquantized.",
                            field="model.quantization") from None
        raise UserError(f"could not load the weights of {spec}: {first}; check that the "
                        "safetensors files are complete (re-download or re-save them).",
                        field="model.source") from None
    if device != "cpu" and quantization == "none":  # quantized weights are placed as loaded
        model.to(device)
    return model, load_tokenizer(source), task


def quiet_libraries() -> None:
    """No tqdm bars or deprecation chatter from the libraries: we report progress ourselves."""
    import warnings

    import datasets
    import transformers
    from graftlab.core.model.quantization import quiet_bitsandbytes

    quiet_bitsandbytes()  # before peft imports it: it logs about optional kernels on import
    datasets.disable_progress_bars()
    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    # peft 0.21 calls a deprecated transformers property on every get_peft_model.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                            category=FutureWarning)
