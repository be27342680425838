"""Write files and folders so that a failure never leaves half of one in place.

Everything goes to a temporary sibling on the same filesystem, is fsynced, and is renamed into
place; an existing file or folder is replaced only after the new one is complete.

Replacing a folder: on Linux the new and the old folder are exchanged in one step
(``renameat2(RENAME_EXCHANGE)``), so the target name always holds one complete folder. Where
that call is missing (other systems, old kernels, some filesystems) the old folder is first moved
aside to ``.NAME.old-PID`` and the new one renamed into place; a crash between the two renames
leaves no folder under the name, and :func:`recover_dir` (run before every write of the folder,
and by callers at start) puts the old one back. Leftover ``.NAME.staging-*`` folders are always
safe to delete: they hold either a half-written new folder or, after an exchange, the old one.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # os.umask is the only way to read it; restore at once
    os.umask(mask)
    return mask


_UMASK = _umask()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """Write `text` to `path` via a temporary file + rename."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """`mode`: the file's permissions (default: what the umask gives a new file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600; give the file normal permissions unless told otherwise
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary sibling path to write (by any writer); on success it is fsynced and
    renamed to `path` (replacing a file there in one step), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (before a rename makes it visible)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _load_renameat2() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step. False: the OS or filesystem cannot (the
    caller falls back to two renames); other failures raise OSError."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),  # type: ignore[operator]
                    _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


# The exact names atomic_dir gives its own folders beside a target: `.NAME.old-PID` and
# mkdtemp's `.NAME.staging-PID-XXXXXXXX`. Only folders with these names are ever restored or
# removed, so a user's `.NAME.old-backup` beside the target is never touched.
_LEFTOVER_NAME = {"old": r"old-\d+", "staging": r"staging-\d+-[A-Za-z0-9_]{8}"}


def _leftovers(target: Path, kind: str) -> list[Path]:
    pattern = re.compile(re.escape(f".{target.name}.") + _LEFTOVER_NAME[kind])
    try:
        return sorted(p for p in target.parent.iterdir() if pattern.fullmatch(p.name)
                      and p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def recover_dir(target: str | Path) -> str | None:
    """Finish or undo a folder replacement that a crash interrupted.

    No folder at `target` but a ``.NAME.old-*`` beside it: the old folder is put back. A
    folder at `target`: the ``.old-*`` copies are the replaced content, removed. Staging folders
    are removed in both cases. Returns a sentence saying what was done, or None.
    """
    target = Path(target)
    olds, staging = _leftovers(target, "old"), _leftovers(target, "staging")
    if not olds and not staging:
        return None
    note = None
    if olds and not os.path.lexists(target):
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.replace(newest, target)
        olds.remove(newest)
        note = f"restored {target} from an interrupted replacement"
    for leftover in olds + staging:
        shutil.rmtree(leftover, ignore_errors=True)
    _fsync_dir(target.parent)
    return note or f"removed leftovers of an interrupted write beside {target}"


def _is_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


@contextlib.contextmanager
def atomic_dir(target: Path, replace: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it becomes `target`, on failure it is removed.

    Args:
        target: the folder to create or replace.
        replace: allow replacing an existing non-empty folder. Without it such a folder raises
            FileExistsError before anything is written; the caller decides (and asks) whether
            a folder may be replaced. An empty folder is always replaced.

    At every moment the old or the new complete folder exists under its name (or, on systems
    without an atomic exchange, under ``.NAME.old-PID`` until :func:`recover_dir` runs).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    if os.path.islink(target) or (target.exists() and not target.is_dir()):
        raise FileExistsError(errno.EEXIST, "not a folder", str(target))
    if target.exists() and not replace and not _is_empty_dir(target):
        raise FileExistsError(errno.EEXIST, "folder is not empty", str(target))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-",
                                dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        fsync_tree(tmp)
        if not target.exists():
            os.rename(tmp, target)
        elif not exchange(tmp, target):
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.rename(target, old)
            os.rename(tmp, target)  # a crash before this line: recover_dir restores `old`
            _fsync_dir(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():  # the old folder after an exchange, or a failed new one
            shutil.rmtree(tmp, ignore_errors=True)
