"""Writing outputs without ever losing a user's data.

Every command that writes goes through this module:

* ``commit_folder(final, kind)`` stages a folder beside ``final`` and swaps it into place
  atomically (Linux ``renameat2(RENAME_EXCHANGE)``, else two renames under the lock). It replaces
  ``final`` only when edgevid made it: a folder of the same ``kind`` (an artifact with its
  manifest, a golden pack with its ``pack.json``) holding nothing edgevid did not write. Anything
  else (a user's folder, a file, ``.``) is refused with one line before any work starts.
* ``write_output_file(path, text, kind)`` does the same for single files (``--json``, ``--md``,
  ``--out`` rankings, report tables): an existing file is replaced only when edgevid wrote it (a
  marker inside it says so).
* One writer at a time per output path (``filelock``, in ``$EDGEVID_HOME/locks``); a second one
  waits, then fails with one line. SIGTERM and SIGINT both remove the staging folder.
* New folders get the user's umask (``mkdtemp`` alone would make them 0700).

Torch-free: runners and the on-device harness use it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import EdgevidError
from .paths import edgevid_home

LOCK_TIMEOUT_S = float(os.environ.get("EDGEVID_LOCK_TIMEOUT", "600"))
MARKER = "edgevid_output"  # key of the marker in JSON outputs; Markdown outputs carry it in a comment


class OutputError(EdgevidError):
    """An output path edgevid must not write to (not its own, not writable, busy)."""


# --- what edgevid made ---------------------------------------------------------------------------

def _marker(path: Path, keys: set[str]) -> dict | None:
    """The JSON object in ``path`` when it has ``keys`` (an edgevid folder's own file), else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and keys <= data.keys() else None


def _artifact_files(folder: Path) -> set[str] | None:
    data = _marker(folder / "manifest.json", {"model", "backend", "spec"})
    if data is None:
        return None
    listed = data.get("files") if isinstance(data.get("files"), dict) else {}
    from .artifact import is_mutable

    return _Names(set(listed), is_mutable)


def _pack_files(folder: Path) -> set[str] | None:
    data = _marker(folder / "pack.json", {"format", "digest", "chunks"})
    if data is None:
        return None
    chunks = [c.get("file") for c in data.get("chunks", []) if isinstance(c, dict)]
    return {"pack.json", "gates.yaml", "signature.json", *chunks}


class _Names(set):
    """A set of names that also admits any name ``extra(name)`` accepts."""

    def __init__(self, names: set[str], extra: Callable[[str], bool]):
        super().__init__(names)
        self.extra = extra

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (isinstance(name, str) and self.extra(name))


def _bundle_files(folder: Path) -> set[str] | None:
    """A phone bundle (``golden export``) or the outputs folder of its run: both carry bundle.json."""
    if _marker(folder / "bundle.json", {"format", "pack_digest", "cases"}) is None:
        return None
    fixed = {"bundle.json", "model.bpte", "model.pte", "run_on_device.sh", "ran_on.txt"}
    return _Names(fixed, lambda name: name.startswith(("inputs/", "outputs/")) or
                  (name.startswith("case-") and name.endswith(".bin") and "/" not in name))


# kind -> function returning the names edgevid writes into such a folder, or None when it is not one
FOLDER_KINDS: dict[str, Callable[[Path], set[str] | None]] = {
    "artifact": _artifact_files, "pack": _pack_files, "bundle": _bundle_files, "bundle outputs": _bundle_files}


def edgevid_made(folder: Path, kind: str) -> tuple[bool, str]:
    """``(True, '')`` when ``folder`` is an edgevid ``kind`` holding only what edgevid wrote, else why not."""
    names = FOLDER_KINDS[kind](folder)
    if names is None:
        return False, f"it is not an edgevid {kind}"
    extra = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if not p.is_dir() and p.relative_to(folder).as_posix() not in names)
    if extra:
        shown = ", ".join(extra[:3]) + (" ..." if len(extra) > 3 else "")
        return False, f"it holds files edgevid did not write ({shown})"
    return True, ""


def _final_path(final: str | Path, flag: str) -> Path:
    path = Path(os.path.abspath(final))
    if path == path.parent or path == Path.cwd() or Path.cwd().is_relative_to(path):
        raise OutputError(f"{flag} {final}: is the current folder or one above it; pass a new folder name, e.g. {flag} out/pack")
    return path


def check_output_folder(final: str | Path, kind: str, overwrite: bool, flag: str = "--out") -> Path:
    """The absolute output folder, after refusing anything edgevid may not replace (nothing is written)."""
    path = _final_path(final, flag)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OutputError(f"{flag} {final}: a file (or link) is there, not an edgevid {kind}; edgevid will not"
                          f" replace it: choose another {flag}")
    if path.is_dir():
        ours, why = edgevid_made(path, kind)
        if not ours:
            raise OutputError(f"{flag} {final} already exists and {why}; edgevid replaces only its own {kind}s:"
                              f" choose another {flag} or move that folder away")
        if not overwrite:
            raise OutputError(f"{flag} {final}: an edgevid {kind} is already there; pass --overwrite to replace it")
    _check_parent(path, flag, final)
    return path


def _check_parent(path: Path, flag: str, given) -> None:
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {given}: {parent} is a file, not a folder; pass a writable {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {given}: {parent} is not writable; pass a writable {flag}")


# --- locking -------------------------------------------------------------------------------------

@contextmanager
def output_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the per-path writer lock; a second writer waits up to ``LOCK_TIMEOUT_S``, then fails."""
    from filelock import FileLock, Timeout

    folder = edgevid_home() / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".lock")))
    except OSError:  # no writable cache: lock beside the output instead
        lock = FileLock(str(path.parent / f".{path.name}.lock"))
    try:
        with lock.acquire(timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise OutputError(f"{path}: another edgevid process has been writing {what} for {LOCK_TIMEOUT_S:.0f} s;"
                          " wait for it to finish or set EDGEVID_LOCK_TIMEOUT") from None


# --- the atomic swap -----------------------------------------------------------------------------

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2; False when this system or file system lacks it (the caller falls back)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Put ``tmp`` at ``final``; the previous ``final`` (checked to be edgevid's) is removed."""
    if not final.exists() and not final.is_symlink():
        if not _renameat2(tmp, final, _RENAME_NOREPLACE):
            os.rename(tmp, final)  # under the lock, after the check: nothing else appeared
        return
    if _renameat2(tmp, final, _RENAME_EXCHANGE):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        return
    old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
    os.rename(final, old / "x")
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def _remove_stale_staging(final: Path) -> None:
    """Remove ``.NAME.tmp-PID-*`` folders left by edgevid processes that no longer run (SIGKILL)."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*-*"):
        pid = tmp.name[len(final.name) + 6:].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


@contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit(143)`` so ``finally`` clauses clean up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def commit_folder(final: str | Path, kind: str, overwrite: bool = False, flag: str = "--out") -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final`` atomically.

    ``final`` may be replaced only when it is edgevid's own ``kind`` and ``overwrite`` is set.
    On any exception, SIGINT or SIGTERM the staging folder is removed and ``final`` is untouched.
    """
    path = check_output_folder(final, kind, overwrite, flag)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(path)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-"))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {path.parent} ({exc.strerror}); pass a writable {flag}") from None
    try:
        with terminate_cleanly():
            yield tmp
            with output_lock(path, f"the {kind} {path.name}"):
                check_output_folder(path, kind, overwrite, flag)  # again: something may have appeared meanwhile
                _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- single files --------------------------------------------------------------------------------

def _file_is_ours(path: Path, kind: str) -> bool:
    try:
        head = path.read_bytes()[:1 << 20]
    except OSError:
        return False
    if path.suffix == ".json":
        try:
            data = json.loads(head)
        except ValueError:
            return False
        return isinstance(data, dict) and data.get(MARKER) == kind
    return f"{MARKER}: {kind}".encode() in head


def check_output_file(path: str | Path | None, kind: str, flag: str) -> Path | None:
    """Refuse (before any work) an output file edgevid may not write; ``None`` passes through."""
    if path is None:
        return None
    given, path = path, Path(os.path.abspath(path))
    if path.is_dir():
        raise OutputError(f"{flag} {given} is a folder; pass a file path, e.g. {flag} {Path(given) / ('result' + (path.suffix or '.json'))}")
    if path.is_symlink() or (path.exists() and not _file_is_ours(path, kind)):
        raise OutputError(f"{flag} {given} already exists and was not written by edgevid {kind}; edgevid will not"
                          f" replace it: choose another {flag} or delete that file")
    _check_parent(path, flag, given)
    return path


def mark(data: dict, kind: str) -> dict:
    """``data`` with the marker that lets a later run replace the file it is written to."""
    return {MARKER: kind, **data}


def markdown_marker(kind: str) -> str:
    return f"<!-- {MARKER}: {kind} -->\n"


def write_output_file(path: str | Path, content: str | bytes, kind: str, flag: str = "--out") -> Path:
    """Write ``content`` to ``path`` atomically, replacing only a file edgevid ``kind`` wrote."""
    path = check_output_file(path, kind, flag)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with output_lock(path, f"{path.name}"):
            check_output_file(path, kind, flag)
            write_atomic(path, content)
    except OSError as exc:
        raise OutputError(f"cannot write {flag} {path} ({exc.strerror or exc}); pass a writable path with free space") from None
    return path


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write via a temp file in the same folder and rename (readers never see half a file)."""
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
