"""Data files, demo data and hub datasets -> a raw ``datasets.Dataset``.

Every bad input becomes a :class:`UserError` naming the file, the column or the row and saying how
to fix it: the datasets/pyarrow messages ("StopIteration", "JSON parse error ... in row 0" counted
from the start of a 10 MB block) are not something a user can act on.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any

from graftlab.core.config import DataConfig
from graftlab.core.data.columns import KNOWN_COLUMNS, is_list_of_records
from graftlab.core.errors import UserError

# file suffix -> (datasets builder, extra load_dataset kwargs)
BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".jsonl": ("json", {}),
    ".ndjson": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
    ".text": ("text", {}),
}
SUPPORTED = "jsonl, json, csv, tsv, parquet or txt"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_data_path(path: str) -> str:
    """Turn ``data.path`` into something ``load_dataset`` can read.

    Args:
        path: ``demo:<name>``, a local file or folder, or a hub dataset id ``owner/name``.

    Returns:
        The demo's jsonl file, the local path, or the hub id unchanged.

    Raises:
        UserError: the path is empty, names an unknown demo, or is a local path that does not
            exist.
    """
    text = path.strip()
    if not text:
        raise UserError(
            "`data.path` is empty; choose a jsonl/json/csv/parquet/txt file or a "
            "demo dataset such as demo:stories.",
            field="data.path",
        )
    if text.startswith("demo:"):
        from graftlab.core.model.demo import demo_data_path

        return str(demo_data_path(text.removeprefix("demo:")))
    local = Path(text).expanduser()
    if local.exists():
        return str(local)
    if local.suffix.lower() not in BUILDERS and _HUB_ID.match(text):
        return text
    raise UserError(
        f"data file {text} does not exist; check `data.path` (relative paths start "
        "at the folder Graftlab runs in).",
        field="data.path",
    )


def load_raw(cfg: DataConfig) -> Any:
    """Load ``cfg.path`` as a ``datasets.Dataset`` (the train split), first ``max_examples`` rows.

    The builder follows the file suffix; a folder loads all its data files of one kind; a hub
    id loads ``split="train"`` when online. Blank lines of a .txt file are skipped.

    Raises:
        UserError: the file is missing, empty, binary, not UTF-8, malformed, or has no rows.
    """
    source = resolve_data_path(cfg.path)
    local = Path(source)
    where = cfg.path.strip()
    if local.is_dir():
        files = _folder_files(local, where)
        builder, kwargs = BUILDERS[files[0].suffix.lower()]
        for f in files:
            _check_readable(f, builder, where if len(files) == 1 else str(f))
        ds = _load(builder, [str(f) for f in files], kwargs, where, files)
    elif local.is_file():
        suffix = local.suffix.lower()
        if suffix not in BUILDERS:
            raise UserError(
                f"{where} has the suffix {suffix or '(none)'}, which Graftlab cannot "
                f"read; save the data as {SUPPORTED}.",
                field="data.path",
            )
        builder, kwargs = BUILDERS[suffix]
        _check_readable(local, builder, where)
        ds = _load(builder, str(local), kwargs, where, [local])
        if suffix == ".json":
            ds = _unnest(ds, str(local), where)
    else:
        ds = _load_hub(source)
        builder = "hub"
    if builder == "text":  # an empty line is a paragraph break, not an example
        ds = ds.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True)
    if len(ds) == 0:
        raise UserError(
            f"{where} holds no examples; add some rows (one JSON object per line for jsonl).",
            field="data.path",
        )
    if cfg.max_examples is not None and cfg.max_examples < len(ds):
        ds = ds.select(range(cfg.max_examples))
    return ds


def _folder_files(folder: Path, where: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in BUILDERS)
    kinds = {BUILDERS[p.suffix.lower()][0] for p in files}
    if not files:
        raise UserError(
            f"folder {where} has no {SUPPORTED} files; point `data.path` at a data "
            "file or a folder of them.",
            field="data.path",
        )
    if len(kinds) > 1:
        raise UserError(
            f"folder {where} mixes file kinds ({', '.join(sorted(kinds))}); point "
            "`data.path` at one file or keep one kind per folder.",
            field="data.path",
        )
    return files


def _check_readable(path: Path, builder: str, where: str) -> None:
    """Catch empty, binary and non-UTF-8 files before datasets turns them into odd errors."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if not head:
        raise UserError(
            f"{where} is empty; add examples to it or choose another file.", field="data.path"
        )
    if builder == "parquet":
        if not head.startswith(b"PAR1"):
            raise UserError(
                f"{where} is not a Parquet file (no PAR1 header); re-export it, or "
                "rename it to match its real format.",
                field="data.path",
            )
        return
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UserError(f"{where} is UTF-16 text; re-save it as UTF-8.", field="data.path")
    if b"\0" in head:
        raise UserError(
            f"{where} is a binary file, not text; `data.path` must point to a {SUPPORTED} file.",
            field="data.path",
        )
    if len(head) < 1 << 16 and not head.decode("utf-8", errors="replace").strip():
        raise UserError(f"{where} holds only blank lines; add examples to it.", field="data.path")
    _check_utf8(path, where)


def _check_utf8(path: Path, where: str) -> None:
    """Scan the whole file: pyarrow's JSON reader keeps invalid UTF-8 in strings, and the
    dataset then fails on first access, deep inside tokenization."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = line = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk.count(b"\n", 0, exc.start)
                raise UserError(
                    f"{where} is not UTF-8 text (line {line + 1}, byte {offset + exc.start}); "
                    "re-save it with UTF-8 encoding.",
                    field="data.path",
                ) from None
            offset += len(chunk)
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserError(
                f"{where} ends in the middle of a UTF-8 character; re-save it with UTF-8 encoding.",
                field="data.path",
            ) from None


def _load(
    builder: str, data_files: Any, kwargs: dict[str, Any], where: str, files: list[Path]
) -> Any:
    import datasets

    try:
        return datasets.load_dataset(builder, data_files=data_files, split="train", **kwargs)
    except FileNotFoundError:
        raise UserError(
            f"data file {where} does not exist; check `data.path`.", field="data.path"
        ) from None
    except Exception as exc:
        raise _explain(exc, builder, where, files) from exc


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def _explain(exc: Exception, builder: str, where: str, files: list[Path]) -> Exception:
    """Map a datasets/pyarrow/pandas loading error to one actionable sentence."""
    chain = _causes(exc)
    names = {type(c).__name__ for c in chain}
    text = " ".join(str(c) for c in chain)
    if any(isinstance(c, UnicodeDecodeError) for c in chain) or "Invalid UTF8" in text:
        return UserError(
            f"{where} is not UTF-8 text; re-save it with UTF-8 encoding.", field="data.path"
        )
    if "EmptyDataError" in names or "SchemaInferenceError" in names or "no data" in text:
        return UserError(f"{where} holds no examples; add some rows.", field="data.path")
    if builder == "json":
        located = _locate_json_error(files)
        if located:
            return UserError(
                f"{located}; fix that line (each line of a jsonl file must be one "
                "complete JSON object).",
                field="data.path",
            )
        return UserError(
            f"{where} is not in a shape Graftlab can read: use JSON Lines (one "
            "object per line) or a JSON list of objects.",
            field="data.path",
        )
    if builder == "csv":
        detail = str(chain[-1]).strip().splitlines()[0] if str(chain[-1]).strip() else "parse error"
        return UserError(
            f"{where} is not a valid CSV file ({detail}); check the quoting and "
            "that each row has as many fields as the header.",
            field="data.path",
        )
    if builder == "parquet":
        return UserError(
            f"{where} is not a readable Parquet file ({chain[-1]}); re-export it.",
            field="data.path",
        )
    return UserError(
        f"could not read {where}: {chain[-1]}; check that the file is valid.", field="data.path"
    )


def _locate_json_error(files: list[Path]) -> str | None:
    """Find the first malformed line with Python's json (pyarrow counts rows per block)."""
    for path in files:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        if path.suffix.lower() == ".json":
            try:
                json.loads(text)
                continue
            except json.JSONDecodeError:
                pass  # maybe JSON Lines saved as .json: check line by line below
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                return (
                    f"{path.name} line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})"
                )
            if not isinstance(value, dict):
                return (
                    f"{path.name} line {lineno} holds a JSON {type(value).__name__}, not an "
                    "object with named fields"
                )
    return None


def _unnest(ds: Any, path: str, where: str) -> Any:
    """A .json file like ``{"version": 1, "data": [{...}, ...]}`` loads as one row; use the list."""
    if len(ds) != 1 or KNOWN_COLUMNS & set(ds.column_names):
        return ds
    nested = [c for c in ds.column_names if is_list_of_records(ds.features[c])]
    if len(nested) != 1:
        return ds
    return _load("json", path, {"field": nested[0]}, where, [Path(path)])


def _load_hub(name: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name, split="train")
    except ConnectionError:
        raise UserError(
            f"could not reach the Hugging Face Hub for dataset {name} (offline?); "
            "download it while online, or point `data.path` at a local file.",
            field="data.path",
        ) from None
    except FileNotFoundError:
        raise UserError(
            f"{name} is neither a local file nor a dataset on the Hub; check `data.path`.",
            field="data.path",
        ) from None
    except ValueError as exc:
        raise UserError(
            f"could not load hub dataset {name}: {exc}; it needs a `train` split.",
            field="data.path",
        ) from None
