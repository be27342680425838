"""Read any PEFT LoRA adapter folder and describe every adapted module, without the base model.

Only ``adapter_config.json`` and ``adapter_model.safetensors`` are read: no pickle, no
``torch.load``, no base weights. The safetensors header (names, dtypes, shapes) is checked before
any tensor is loaded, so a hostile or broken file is refused before it costs memory.

Saved key formats (peft 0.21), always prefixed ``base_model.model.``:
``<name>.lora_A.weight`` (r×in), ``<name>.lora_B.weight`` (out×r), ``<name>.lora_B.bias``
(lora_bias), ``<name>.lora_embedding_A`` (r×num_embeddings), ``<name>.lora_embedding_B``
(dim×r), ``<name>.lora_magnitude_vector`` (DoRA, out; older files add ``.weight``),
``<name>.base_layer.weight`` (full embedding copies when embeddings are targeted), and
``<module>.weight``/``.bias`` for ``modules_to_save`` copies.

Per-module rank and alpha come from PEFT's own ``rank_pattern``/``alpha_pattern`` lookup
(``peft.utils.other.get_pattern_key``): each key is a regex that must match the end of the module
name from a dot boundary, and the first key in dict order wins.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from graftlab.core.config import MAX_RANK
from graftlab.core.errors import UserError
from graftlab.core.model.module_tree import LAYER_INDEX, short_kinds

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
MAX_ELEMENTS = 2**31  # any single tensor larger than this is not a LoRA factor
MAX_PATTERN_CHARS = 2000  # pattern keys are regexes from an untrusted file: keep them short
_LORA_KEY = re.compile(
    r"^(?P<name>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_embedding_A|"
    r"lora_embedding_B|lora_magnitude_vector(?:\.weight)?)$")
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
           "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8,
             "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass
class AdaptedModule:
    """One module with a LoRA adapter, named as the base model names it."""

    name: str
    rank: int
    alpha: float
    scale: float
    params: int
    dtype: str
    in_features: int
    out_features: int
    delta_norm: float
    """‖scale·B·A‖_F (for DoRA: of the LoRA part only; the magnitude needs the base weight)."""
    singular_values: list[float]
    """Singular values of scale·B·A, descending, at most `rank` of them."""
    effective_rank: float
    """exp(entropy of σ/Σσ): 1 for a rank-1 update, `rank` when all σ are equal."""
    layer: int | None
    kind: str
    dora: bool
    embedding: bool = False
    a_key: str = field(default="", repr=False)
    b_key: str = field(default="", repr=False)


@dataclass
class SavedModule:
    """A module stored in full (``modules_to_save`` copy, or a saved embedding base layer)."""

    name: str
    params: int
    base_layer: bool = False


@dataclass
class AdapterInfo:
    """What an adapter folder holds; see :func:`read_adapter`."""

    path: Path
    base_model: str | None
    peft_type: str
    variant: str
    use_rslora: bool
    use_dora: bool
    rank: int
    alpha: float
    target_modules: Any
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]
    modules: list[AdaptedModule]
    saved_modules: list[SavedModule]
    total_params: int
    total_bytes: int
    file_size: int
    config: dict[str, Any] = field(repr=False, default_factory=dict)

    def module(self, name: str) -> AdaptedModule:
        return next(m for m in self.modules if m.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "base_model": self.base_model,
            "peft_type": self.peft_type,
            "variant": self.variant,
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": self.target_modules,
            "modules": [{k: v for k, v in asdict(m).items() if k not in ("a_key", "b_key")}
                        for m in self.modules],
            "modules_to_save": [asdict(s) for s in self.saved_modules],
            "totals": {"params": self.total_params, "bytes": self.total_bytes,
                       "modules": len(self.modules)},
            "file_size": self.file_size,
        }


def pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """The rank_pattern/alpha_pattern value PEFT gives module `name`, or `default`.

    PEFT's own lookup decides: the first key that matches the name's end at a dot boundary.
    """
    from peft.utils.other import get_pattern_key

    key = get_pattern_key(list(patterns), name)  # `name` itself when no key matches
    return patterns.get(key, default)


def _fail(path: Path, what: str, fix: str) -> UserError:
    return UserError(f"{path}: {what}; {fix}", field="adapter_dir")


def _inside(folder: Path, file: Path) -> bool:
    """The file resolves inside the folder, or into the HF cache's blobs/ of the same repo."""
    real, root = file.resolve(), folder.resolve()
    if real.is_relative_to(root):
        return True
    # HF cache snapshots link each file to ../../blobs/<sha>; that is the one allowed escape.
    parts = root.parts
    if "snapshots" in parts:
        repo = Path(*parts[:parts.index("snapshots")])
        return real.is_relative_to(repo / "blobs")
    return False


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"is not valid JSON ({exc})", "re-save the adapter with "
                    "save_pretrained") from None
    if not isinstance(cfg, dict):
        raise _fail(path, "is not a JSON object", "re-save the adapter with save_pretrained")
    peft_type = str(cfg.get("peft_type") or "").upper()
    if peft_type != "LORA":
        raise _fail(folder, f"is a {peft_type or 'non-PEFT'} adapter, not LoRA (peft_type "
                    f"{cfg.get('peft_type')!r})", "open a LoRA adapter folder")
    for key in ("rank_pattern", "alpha_pattern"):
        pats = cfg.get(key) or {}
        if not isinstance(pats, dict):
            raise _fail(path, f"`{key}` is not a mapping", "fix or remove it")
        for k in pats:
            try:
                if len(k) > MAX_PATTERN_CHARS:
                    raise re.error("too long")
                re.compile(k)
            except re.error as exc:
                raise _fail(path, f"`{key}` key {k[:80]!r} is not a usable regex ({exc})",
                            "fix or remove that key") from None
    try:
        r, alpha = int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8))
    except (TypeError, ValueError):
        raise _fail(path, "`r` or `lora_alpha` is not a number", "fix the config") from None
    if not 1 <= r <= MAX_RANK or not math.isfinite(alpha):
        raise _fail(path, f"declares r={r}, lora_alpha={alpha}", f"r must be 1..{MAX_RANK}")
    return cfg


def _check_header(path: Path) -> None:
    """Refuse truncated files early, with a clearer message than safetensors gives."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or struct.unpack("<Q", head)[0] + 8 > size:
        raise _fail(path, "is truncated or not a safetensors file (its header runs past the "
                    "end)", "copy or re-save the adapter file completely")


def _layer_and_kinds(names: list[str]) -> dict[str, tuple[int | None, str]]:
    """Layer index and kind of each adapted module, by the module tree's rule."""
    rel: dict[str, str] = {}
    out: dict[str, tuple[int | None, str]] = {}
    for n in names:
        m = LAYER_INDEX.search(n)
        if m:
            rel[n] = n[m.end():] or n.rpartition(".")[2]
            out[n] = (int(m.group(1)), "")
        else:
            out[n] = (None, n.rpartition(".")[2])
    short = short_kinds(rel.values())
    for n, r in rel.items():
        out[n] = (out[n][0], short[r])
    return out


def _check_folder(folder: Path) -> None:
    """The folder holds both adapter files, and neither links out of it."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; choose the folder that holds "
                        f"{CONFIG_FILE} and {WEIGHTS_FILE}.", field="adapter_dir")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
    if missing:
        subs = sorted(p.parent.name for p in folder.glob(f"*/{CONFIG_FILE}"))
        fix = (f"it holds adapters in subfolders ({', '.join(subs)}): open one of them" if subs
               else "only pickle weights (.bin): convert them to safetensors" if
               (folder / "adapter_model.bin").is_file() and missing == [WEIGHTS_FILE]
               else "choose a PEFT adapter folder (save_pretrained output)")
        raise _fail(folder, f"is not a PEFT adapter folder (missing {', '.join(missing)})", fix)
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not _inside(folder, folder / f):
            raise _fail(folder / f, "links to a file outside the adapter folder",
                        "copy the real file into the folder")


def _tensor_shapes(fh: Any, weights: Path) -> dict[str, tuple[list[int], str]]:
    """Shape and dtype of every tensor, from the header alone; absurd sizes are refused."""
    shapes: dict[str, tuple[list[int], str]] = {}
    for key in fh.keys():  # noqa: SIM118 - safe_open is not a dict
        sl = fh.get_slice(key)
        shape, dtype = list(sl.get_shape()), sl.get_dtype()
        if math.prod(shape) > MAX_ELEMENTS:
            raise _fail(weights, f"declares tensor {key} with shape {shape}, far larger "
                        "than any LoRA factor", "this file is not a usable adapter")
        shapes[key] = (shape, dtype)
    return shapes


def _split_keys(shapes: dict[str, tuple[list[int], str]]
                ) -> tuple[dict[str, dict[str, str]], dict[str, SavedModule]]:
    """LoRA factor keys per adapted module, and the modules stored in full."""
    parts: dict[str, dict[str, str]] = {}
    saved: dict[str, SavedModule] = {}
    for key, (shape, _dt) in shapes.items():
        short = key[len(PREFIX):] if key.startswith(PREFIX) else key
        m = _LORA_KEY.match(short)
        if m:
            part = m["part"].split(".")[0] if "magnitude" in m["part"] else m["part"]
            parts.setdefault(m["name"], {})[part] = key
            continue
        module = short.rpartition(".")[0]
        base_layer = module.endswith(".base_layer")
        module = module.removesuffix(".base_layer")
        entry = saved.setdefault(module, SavedModule(module, 0, base_layer))
        entry.params += math.prod(shape)
    return parts, saved


def _check_factor_shapes(weights: Path, name: str, sa: list[int], sb: list[int],
                         rank: int) -> None:
    if sa and sa[0] > MAX_RANK:
        raise _fail(weights, f"declares rank {sa[0]} for {name}, above {MAX_RANK}",
                    "this file is not a usable low-rank adapter")
    if len(sa) not in (2, 3, 4) or len(sb) != len(sa) or sa[0] != sb[1] \
            or any(d != 1 for d in sb[2:]):
        raise _fail(weights, f"has mismatched LoRA shapes for {name}: A {sa}, B {sb} "
                    "(A must be r×in and B out×r with the same r)",
                    "the file is corrupt or not a LoRA adapter")
    if sa[0] != rank:
        raise _fail(weights, f"stores rank {sa[0]} for {name} but {CONFIG_FILE} gives "
                    f"it rank {rank} (r/rank_pattern)", "use the config saved with "
                    "these weights")


def _adapted_module(fh: Any, weights: Path, name: str, keys: dict[str, str],
                    shapes: dict[str, tuple[list[int], str]], cfg: dict[str, Any],
                    layer_kind: tuple[int | None, str]) -> AdaptedModule:
    """One adapted module: its rank and alpha by PEFT's rule, checked shapes, ΔW's spectrum."""
    import torch
    from graftlab.core.adapter.update_norms import delta_norm, delta_singular_values, effective_rank
    from safetensors import SafetensorError

    emb = "lora_embedding_A" in keys or "lora_embedding_B" in keys
    ka, kb = ("lora_embedding_A", "lora_embedding_B") if emb else ("lora_A.weight",
                                                                   "lora_B.weight")
    if ka not in keys or kb not in keys:
        raise _fail(weights, f"has only one of the LoRA factors for {name} (no "
                    f"{kb if ka in keys else ka})", "the file is incomplete; re-save it")
    (sa, dt), (sb, _) = shapes[keys[ka]], shapes[keys[kb]]
    rank = pattern_value(cfg.get("rank_pattern") or {}, name, int(cfg.get("r", 8)))
    _check_factor_shapes(weights, name, sa, sb, rank)
    alpha = float(pattern_value(cfg.get("alpha_pattern") or {}, name,
                                float(cfg.get("lora_alpha", 8))))
    scale = alpha / (math.sqrt(rank) if cfg.get("use_rslora") else rank)
    try:
        a = fh.get_tensor(keys[ka]).to(torch.float64)
        b = fh.get_tensor(keys[kb]).to(torch.float64)
    except (SafetensorError, RuntimeError) as exc:
        raise _fail(weights, f"cannot be read at {name} ({exc})",
                    "copy or re-save the adapter file completely") from None
    sv = delta_singular_values(a, b, scale, torch.float64)
    return AdaptedModule(
        name, rank, alpha, scale, sum(math.prod(shapes[k][0]) for k in keys.values()),
        _DTYPES.get(dt, dt.lower()), math.prod(sa[1:]), sb[0],
        delta_norm(a, b, scale, torch.float64), [float(s) for s in sv], effective_rank(sv),
        layer_kind[0], layer_kind[1], "lora_magnitude_vector" in keys, emb, keys[ka], keys[kb])


def read_adapter(folder: str | Path) -> AdapterInfo:
    """Describe the PEFT LoRA adapter in `folder`.

    Raises:
        UserError: not a folder, missing or escaping files, not LoRA, a truncated or corrupt
            safetensors file, absurd or mismatched tensor shapes, ranks that disagree with the
            config.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder).expanduser()
    _check_folder(folder)
    cfg = _read_config(folder)
    weights = folder / WEIGHTS_FILE
    _check_header(weights)
    try:
        fh = safe_open(str(weights), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(weights, f"is not a readable safetensors file ({exc})",
                    "copy or re-save the adapter file completely") from None
    with fh:
        shapes = _tensor_shapes(fh, weights)
        parts, saved = _split_keys(shapes)
        kinds = _layer_and_kinds(list(parts))
        modules = [_adapted_module(fh, weights, name, keys, shapes, cfg, kinds[name])
                   for name, keys in parts.items()]
    total = sum(math.prod(s) for s, _ in shapes.values())
    total_bytes = sum(math.prod(s) * _ITEMSIZE.get(d, 4) for s, d in shapes.values())
    rslora, dora = bool(cfg.get("use_rslora")), bool(cfg.get("use_dora"))
    variant = "dora" if dora else "rslora" if rslora else "lora"
    return AdapterInfo(folder, cfg.get("base_model_name_or_path"), "LORA", variant, rslora,
                       dora, int(cfg.get("r", 8)), float(cfg.get("lora_alpha", 8)),
                       cfg.get("target_modules"), dict(cfg.get("rank_pattern") or {}),
                       dict(cfg.get("alpha_pattern") or {}), modules, list(saved.values()),
                       total, total_bytes, weights.stat().st_size, cfg)


# ---- comparing two adapters -------------------------------------------------------------------

@dataclass
class ModuleComparison:
    name: str
    norm_a: float
    norm_b: float
    norm_ratio: float | None
    """‖ΔW_b‖ / ‖ΔW_a‖ (None when ΔW_a is zero)."""
    cosine: float | None
    """⟨ΔW_a, ΔW_b⟩_F / (‖ΔW_a‖‖ΔW_b‖); None when shapes differ or an update is zero."""


@dataclass
class Comparison:
    a: AdapterInfo
    b: AdapterInfo
    common: list[ModuleComparison]
    only_a: list[str]
    only_b: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"a": str(self.a.path), "b": str(self.b.path),
                "common": [asdict(c) for c in self.common],
                "only_a": self.only_a, "only_b": self.only_b}


def compare_adapters(a: AdapterInfo | str | Path, b: AdapterInfo | str | Path) -> Comparison:
    """Which modules both adapters adapt, and per common module cosine and norm ratio.

    Factors are re-read from the files one module at a time and combined with r×r products
    (:func:`graftlab.core.adapter.update_norms.delta_inner`), so ΔW is never formed densely.
    """
    import torch
    from graftlab.core.adapter.update_norms import delta_inner
    from safetensors import safe_open

    ia = a if isinstance(a, AdapterInfo) else read_adapter(a)
    ib = b if isinstance(b, AdapterInfo) else read_adapter(b)
    by_b = {m.name: m for m in ib.modules}
    names_a = [m.name for m in ia.modules]
    common: list[ModuleComparison] = []
    with safe_open(str(ia.path / WEIGHTS_FILE), "pt") as fa, \
            safe_open(str(ib.path / WEIGHTS_FILE), "pt") as fb:
        for ma in ia.modules:
            mb = by_b.get(ma.name)
            if mb is None:
                continue
            ratio = mb.delta_norm / ma.delta_norm if ma.delta_norm > 0 else None
            cos = None
            same = (ma.in_features, ma.out_features) == (mb.in_features, mb.out_features)
            if same and ma.delta_norm > 0 and mb.delta_norm > 0:
                t = [f.get_tensor(k).to(torch.float64) for f, k in
                     ((fa, ma.a_key), (fa, ma.b_key), (fb, mb.a_key), (fb, mb.b_key))]
                inner = delta_inner(t[0], t[1], ma.scale, t[2], t[3], mb.scale, torch.float64)
                cos = max(-1.0, min(1.0, inner / (ma.delta_norm * mb.delta_norm)))
            common.append(ModuleComparison(ma.name, ma.delta_norm, mb.delta_norm, ratio, cos))
    return Comparison(ia, ib, common, [n for n in names_a if n not in by_b],
                      [m.name for m in ib.modules if m.name not in set(names_a)])
