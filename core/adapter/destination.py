"""Where an export or merge may write: never over something Graftlab did not write.

A folder counts as Graftlab output when it holds the marker file :data:`OUTPUT_MARKER` (written
into every adapter, export and merged model), or when it is the ``adapter/`` folder of a
Graftlab run folder (``run.yaml`` and ``metrics.jsonl`` beside it). Anything else that is not
empty is refused with a sentence that names a free subfolder to use instead. Replacing earlier
Graftlab output needs ``overwrite=True`` (``--overwrite``, or the GUI's confirmation), and the
old folder stays whole until the new one is complete (:func:`graftlab.core.atomic.atomic_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from graftlab.core.atomic import atomic_dir, recover_dir
from graftlab.core.errors import UserError

OUTPUT_MARKER = "graftlab-output.json"
_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


class OutputOccupiedError(UserError):
    """The output folder holds files Graftlab did not write; `suggestion` is a free subfolder."""

    def __init__(self, message: str, field: str | None, suggestion: Path) -> None:
        super().__init__(message, field)
        self.suggestion = suggestion


class OutputExistsError(UserError):
    """The output folder holds an earlier Graftlab export; replacing it needs consent."""

    def __init__(self, message: str, field: str | None, folder: Path) -> None:
        super().__init__(message, field)
        self.folder = folder


def is_graftlab_output(folder: Path) -> bool:
    """True for a folder Graftlab wrote (marker file, or a run folder's adapter/)."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8"))
        if isinstance(marker, dict) and marker.get("app") == "graftlab":
            return True
    except (OSError, ValueError):
        pass
    parent = folder.parent
    return folder.name == "adapter" and (parent / "run.yaml").is_file() \
        and (parent / "metrics.jsonl").is_file()


def free_subfolder(folder: Path, name: str = "graftlab-export") -> Path:
    """A path inside `folder` that does not exist yet (``graftlab-export``, ``-2``, ...)."""
    candidate, n = folder / name, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = folder / f"{name}-{n}"
    return candidate


def _nearest_existing(path: Path) -> Path:
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_output_dir(out_dir: str | Path, overwrite: bool = False,
                     field: str = "output") -> Path:
    """Refuse an output path that would lose something; creates nothing. Returns the path.

    Raises:
        OutputOccupiedError: a non-empty folder Graftlab did not write.
        OutputExistsError: earlier Graftlab output, and `overwrite` is False.
        UserError: a file, a symbolic link, or a folder that cannot be written.
    """
    out_dir = Path(os.path.expanduser(str(out_dir)))
    if os.path.islink(out_dir):
        raise UserError(f"output {out_dir} is a symbolic link (to {os.readlink(out_dir)}); "
                        "choose a real folder path, so nothing behind the link is replaced.",
                        field=field)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output {out_dir} is a file; choose a folder path (the file is kept).",
                        field=field)
    recover_dir(out_dir)  # a replacement a crash interrupted: put the old folder back first
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not is_graftlab_output(out_dir):
            suggestion = free_subfolder(out_dir)
            raise OutputOccupiedError(f"output folder {out_dir} already holds files that Graftlab "
                                 f"did not write; choose an empty or new folder, such as "
                                 f"{suggestion}.", field, suggestion)
        if not overwrite:
            raise OutputExistsError(f"output folder {out_dir} holds an earlier Graftlab export; "
                               "pass --overwrite to replace it (it is kept until the new one "
                               "is complete), or choose a new folder.", field, out_dir)
    writable = _nearest_existing(out_dir.parent if out_dir.exists() else out_dir)
    if not os.access(writable, os.W_OK):
        raise UserError(f"cannot write to {writable} (read-only or not yours); choose a folder "
                        "you have write access to.", field=field)
    return out_dir


def write_error(exc: OSError, out_dir: Path, field: str = "output") -> UserError | None:
    """The sentence for a write that failed on a full disk or a denied folder, else None."""
    if exc.errno in _FULL:
        where = _nearest_existing(out_dir.parent)
        try:
            free = f" ({shutil.disk_usage(where).free / 2**30:.1f} GB free)"
        except OSError:
            free = ""
        return UserError(f"the disk holding {where} is full{free}; free some space or choose "
                         f"another output folder; nothing at {out_dir} was changed.", field=field)
    if exc.errno in _DENIED:
        return UserError(f"cannot write to {exc.filename or out_dir} ({exc.strerror}); choose "
                         f"a folder you have write access to; nothing at {out_dir} was "
                         "changed.", field=field)
    return None


def check_free_space(out_dir: Path, need_bytes: int, field: str = "output") -> None:
    """Refuse a write that cannot fit, before anything is loaded or written."""
    where = _nearest_existing(Path(out_dir).parent)
    free = shutil.disk_usage(where).free
    if need_bytes * 1.05 > free:
        raise UserError(f"the disk holding {where} has {free / 2**30:.1f} GB free but this "
                        f"needs about {need_bytes / 2**30:.1f} GB; free some space or choose "
                        "another output folder.", field=field)


@contextlib.contextmanager
def graftlab_output(out_dir: str | Path, kind: str, overwrite: bool = False,
                    field: str = "output") -> Iterator[Path]:
    """Check `out_dir`, then yield a staging folder that becomes `out_dir` when complete.

    The staging folder gets :data:`OUTPUT_MARKER` so a later write recognises it. A full disk
    or a denied write becomes one sentence; the previous folder is untouched in every case.
    """
    out_dir = check_output_dir(out_dir, overwrite, field)
    try:
        with atomic_dir(out_dir, replace=True) as tmp:
            yield tmp
            (tmp / OUTPUT_MARKER).write_text(json.dumps(
                {"app": "graftlab", "kind": kind,
                 "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n", encoding="utf-8")
    except OSError as exc:
        sentence = write_error(exc, out_dir, field)
        if sentence is None:
            raise
        raise sentence from None
