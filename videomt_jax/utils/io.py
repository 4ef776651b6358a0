"""Safe output: atomic file and directory writes, one writer per output, our outputs recognised.

- `output_lock(path)`: claims an output for this process (a sibling `.NAME.lock` holding the pid,
  flock-ed, so a lock left by a dead process is simply taken over).
- `atomic_path` / `atomic_write_bytes` / `atomic_write_text`: a file lands in one rename (or, with
  overwrite=False, one exclusive link that never replaces anything).
- `atomic_directory`: a directory lands in one rename and carries a manifest (`MANIFEST_NAME`: the
  size and sha256 of every file, written last), so `--overwrite` replaces a directory only when it
  holds exactly the files its manifest lists, at any depth, and readers can verify it
  (`verify_manifest`).
- Temporary names carry the writer's pid (`.NAME.<pid>-<random>.tmp`, `.NAME.old-<pid>`): what a
  killed writer left is removed by the next writer of the same output (`recover`), and a directory
  swap cut between its two renames is undone (the old directory is put back).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from videomt_jax.utils.signals import STOP_SIGNALS

MANIFEST_NAME = "videomt_manifest.json"  # inside every directory `atomic_directory` writes
MANIFEST_FORMAT = "videomt-jax manifest"
MANIFEST_VERSION = 1
HASH_CHUNK = 2**22  # bytes read at a time when hashing


class ManifestError(ValueError):
    """A directory's files do not match its manifest (a file changed, missing or added)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, SIGTERM / SIGINT are only recorded; after it the first one recorded is
    raised again, so whatever handles it runs once the block's work is whole (e.g. a background
    write finished, a directory swapped in). Main thread only; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


# ---------------------------------------------------------------------------------------------
# names of our temporary files (they carry the writer's pid, so leftovers of dead writers are ours to remove)


def lock_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _file_tmp_affixes(path: Path) -> tuple[str, str]:
    """(prefix, suffix) of a temporary file for `path`; the suffix keeps `path`'s (writers pick the
    format by it)."""
    return f".{path.stem}.{os.getpid()}-", f".tmp{path.suffix}"


def _dir_tmp_affixes(path: Path) -> tuple[str, str]:
    return f".{path.name}.{os.getpid()}-", ".tmp"


def _old_name(path: Path) -> Path:
    """Where the previous directory waits while a new one is swapped in."""
    return path.with_name(f".{path.name}.old-{os.getpid()}")


_RANDOM = r"[a-z0-9_]{8}"  # what tempfile puts between prefix and suffix


def _debris_patterns(path: Path) -> dict[str, re.Pattern[str]]:
    """kind -> pattern of the sibling names our writers of `path` use; group "pid" is the writer."""
    name, stem, suffix = re.escape(path.name), re.escape(path.stem), re.escape(path.suffix)
    return {
        "file": re.compile(rf"\.{stem}\.(?P<pid>\d+)-{_RANDOM}\.tmp{suffix}"),
        "dir": re.compile(rf"\.{name}\.(?P<pid>\d+)-{_RANDOM}\.tmp"),
        "old": re.compile(rf"\.{name}\.old-(?P<pid>\d+)"),
    }


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (on this machine); unknown counts as alive."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_debris(path: Path) -> dict[str, list[Path]]:
    """kind -> siblings of `path` that our writers of `path` left and whose process is gone."""
    patterns = _debris_patterns(path)
    found: dict[str, list[Path]] = {kind: [] for kind in patterns}
    try:
        names = os.listdir(path.parent)
    except OSError:
        return found
    for entry in sorted(names):
        for kind, pattern in patterns.items():
            match = pattern.fullmatch(entry)
            if match and int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
                found[kind].append(path.parent / entry)
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def recover(path: str | os.PathLike) -> None:
    """Undo what a killed writer of `path` left: put back a directory its swap had moved aside
    (`path` missing, `.NAME.old-<pid>` there), then remove its temporary files and folders.

    Touches only names our writers use, and only those of processes that are gone; a live writer
    holding `path`'s lock is left alone (nothing is done).
    """
    path = Path(path)
    debris = _dead_debris(path)
    if not any(debris.values()):
        return
    try:
        with output_lock(path):
            debris = _dead_debris(path)
            olds = debris["old"]
            if olds and not os.path.lexists(path):
                os.rename(olds.pop(), path)  # the swap was cut after moving the old one aside
            for leftover in [*olds, *debris["dir"], *debris["file"]]:
                _remove(leftover)
    except (FileExistsError, PermissionError):
        return  # another process writes it now, or we may not: leave things as they are


# ---------------------------------------------------------------------------------------------
# one writer per output

_held: dict[str, int] = {}  # locks this process holds: absolute path -> depth
_held_guard = threading.Lock()


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return "unknown"


def _acquire(lock: Path, path: Path) -> int:
    """An open, flock-ed descriptor of `lock` holding our pid; FileExistsError while another holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) or (holder.isdigit() and pid_alive(int(holder))):
                os.close(fd)
                raise FileExistsError(
                    f"{path} is being written by another process (pid {holder}, lock file {lock}); "
                    "wait for it to finish"
                ) from None
            # no flock on this file system and the recorded writer is gone: take the lock over
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is None or not os.path.samestat(os.fstat(fd), current):
            os.close(fd)  # the previous holder removed the file between our open and flock: again
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Claim the output `path` (a file or a directory) for this process while the block runs.

    The claim is a sibling `.NAME.lock` holding our pid (flock-ed): another live process holding it
    -> FileExistsError naming `path` and its pid; one left by a dead process is taken over. The lock
    file is removed on exit (exceptions and signals included). Re-entrant within a process.
    """
    path = Path(path).absolute()
    key = str(path)
    with _held_guard:
        depth = _held.get(key, 0)
        if depth:
            _held[key] = depth + 1
    if depth:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    created = _make_parents(path.parent)
    lock = lock_name(path)
    try:
        fd = _acquire(lock, path)
    except BaseException:
        _remove_empty(created)
        raise
    with _held_guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
        _remove_empty(created)  # folders made for an output that was not written


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders it created, outermost first."""
    created = []
    for p in [p for p in (folder, *folder.parents) if not p.exists()][::-1]:
        try:
            p.mkdir()
        except FileExistsError:  # made by someone else meanwhile: not ours to remove
            continue
        created.append(p)
    return created


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only while empty


# ---------------------------------------------------------------------------------------------
# files


def check_new_file(path: str | os.PathLike, *, overwrite: bool, flag: str = "--overwrite") -> None:
    """Refuse, before any work, to write the file `path` over something: an existing regular file
    needs `overwrite`; anything else there (a folder, a link, a device) is never replaced."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_file():
        raise FileExistsError(f"{path} exists and is not a regular file; not replacing it")
    if not overwrite:
        raise FileExistsError(f"{path} exists; pass {flag} to replace it")


def _publish_file(tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Move the finished `tmp` to `path`: a rename, or with overwrite=False an exclusive link."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists (it appeared while writing); not replacing it") from None
    except OSError:  # a file system without hard links: check, then rename
        check_new_file(path, overwrite=False)
        os.rename(tmp, path)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (same suffix) that becomes `path` on success.

    The file gets the permissions of a normally created one; on any error it is removed and `path`
    is left as it was. overwrite=False: an existing `path` is never replaced (FileExistsError, before
    and after the work). The output is claimed (`output_lock`) while the block runs.
    """
    path = Path(path)
    with output_lock(path):
        recover(path)
        if not overwrite:
            check_new_file(path, overwrite=False)
        prefix, suffix = _file_tmp_affixes(path)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            yield tmp
            _publish_file(tmp, path, overwrite=overwrite)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray, *, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


# ---------------------------------------------------------------------------------------------
# manifests: what a directory written by `atomic_directory` holds


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _walk_entries(root: Path) -> tuple[list[str], list[str]]:
    """(files, others) under `root` as posix paths relative to it; others are links and special
    files (never ours). The manifest itself is left out."""
    files: list[str] = []
    others: list[str] = []
    for folder, dirs, names in os.walk(root):
        base = Path(folder)
        for name in [*dirs, *names]:
            full = base / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                others.append(rel)
            elif name in names and rel != MANIFEST_NAME:
                (files if full.is_file() else others).append(rel)
    return sorted(files), sorted(others)


def _describe(path: Path) -> dict[str, int | str]:
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def write_manifest(root: str | os.PathLike) -> Path:
    """Record the size and sha256 of every file under `root` in `root/MANIFEST_NAME` (atomically)."""
    root = Path(root)
    files, others = _walk_entries(root)
    if others:
        raise ValueError(f"{root} holds links or special files a manifest cannot record: {others[:8]}")
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "files": {rel: _describe(root / rel) for rel in files},
    }
    atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return root / MANIFEST_NAME


def read_manifest(root: str | os.PathLike) -> dict[str, dict] | None:
    """{relative path: {"size", "sha256"}} of `root`'s manifest; None when it has none."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        files = data["files"] if data.get("format") == MANIFEST_FORMAT else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
        raise ManifestError(f"{path} is corrupt: {e}") from e
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise ManifestError(f"{path} is corrupt: not a {MANIFEST_FORMAT}")
    return files


def manifest_mismatch(root: str | os.PathLike, *, check_hashes: bool = True) -> str | None:
    """None when `root` holds exactly the files its manifest lists (sizes and, with check_hashes,
    contents equal); else one phrase naming the first difference (or that there is no manifest)."""
    root = Path(root)
    listed = read_manifest(root)
    if listed is None:
        names = sorted(p.name for p in root.iterdir())
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"it has no {MANIFEST_NAME} (it holds {shown}; none of it is known to be ours)"
    files, others = _walk_entries(root)
    extra = sorted((set(files) - set(listed)) | set(others))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        return f"{root / extra[0]} is not one of its files{more}"
    missing = sorted(set(listed) - set(files))
    if missing:
        return f"{root / missing[0]} is missing"
    for rel in files:
        full, want = root / rel, listed[rel]
        if full.stat().st_size != want.get("size"):
            return f"{full} has {full.stat().st_size} bytes, the manifest says {want.get('size')}"
        if check_hashes and file_sha256(full) != want.get("sha256"):
            return f"{full} does not match its checksum (the file changed or is corrupt)"
    return None


def verify_manifest(root: str | os.PathLike) -> bool:
    """Check the files under `root` against its manifest: ManifestError naming the first file that
    differs; False (nothing checked) for a directory without one (written before manifests)."""
    if read_manifest(root) is None:
        return False
    problem = manifest_mismatch(root)
    if problem is not None:
        raise ManifestError(problem)
    return True


def add_to_manifest(root: str | os.PathLike, *names: str) -> None:
    """Record files just written into `root` (relative `names`) in its manifest, if it has one."""
    root = Path(root)
    with output_lock(root):
        listed = read_manifest(root)
        if listed is None:
            return
        listed.update({name: _describe(root / name) for name in names})
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": listed}
        atomic_write_text(root / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# directories


def _normal_modes(root: Path) -> None:
    """chmod everything under `root` to what the umask gives a newly created file / folder."""
    mask = _umask()
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def check_replaceable(path: str | os.PathLike, *, overwrite: bool, flag: str = "overwrite=True") -> None:
    """Refuse, before any work, to write the directory `path` over something it must not replace.

    A missing path or an empty directory is fine. A file is refused. A non-empty directory needs
    `overwrite`, and then must hold exactly the files of its manifest (one `atomic_directory`
    wrote, unchanged since); anything else is named in the error and nothing is touched.
    """
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory; not replacing it")
    if not any(path.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass {flag} to replace it")
    try:
        problem = manifest_mismatch(path)
    except ManifestError as e:
        problem = str(e)
    if problem is not None:
        raise FileExistsError(
            f"{path} is not (or no longer) exactly an output of this tool: {problem}; not replacing it "
            "(move it away or choose another directory)"
        )


def _swap_in(tmp: Path, path: Path) -> None:
    """`tmp` becomes `path`; an existing `path` is moved aside first and removed after. A kill
    between the two renames leaves `.NAME.old-<pid>`, which `recover` puts back."""
    with signals_deferred():
        if not os.path.lexists(path):
            os.rename(tmp, path)
            return
        old = _old_name(path)
        os.rename(path, old)
        os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, *, overwrite: bool = False, flag: str = "overwrite=True"
) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it gets a manifest and replaces `path`.

    An existing non-empty `path` needs `overwrite=True` and is replaced only when it holds exactly
    the files of its manifest (`check_replaceable`, before and after the work); else
    FileExistsError and `path` is left as it was. On any error (signals included) the temporary
    directory is removed. The output is claimed (`output_lock`) while the block runs; leftovers of
    killed writers of `path` are cleaned first (`recover`).
    """
    path = Path(path)
    with output_lock(path):
        recover(path)
        check_replaceable(path, overwrite=overwrite, flag=flag)
        prefix, suffix = _dir_tmp_affixes(path)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
            yield tmp
            _normal_modes(tmp)
            write_manifest(tmp)
            check_replaceable(path, overwrite=overwrite, flag=flag)
            _swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
