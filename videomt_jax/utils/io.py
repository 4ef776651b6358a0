"""Atomic file and directory writes: an interrupted write never leaves a half-written result."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` (same suffix) that replaces `path` on success.

    The file gets the permissions of a normally created one; on any error it is removed and
    `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _normal_modes(root: Path) -> None:
    """chmod everything under `root` to what the umask gives a newly created file / folder."""
    mask = _umask()
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)


def _entries(path: Path) -> list[Path]:
    return sorted(path.iterdir()) if path.is_dir() else []


def check_replaceable(
    path: str | os.PathLike,
    *,
    overwrite: bool,
    replaceable: Callable[[Path], bool] | None = None,
    flag: str = "overwrite=True",
) -> None:
    """Refuse, before any work, to write the directory `path` over something it must not replace.

    A missing path or an empty directory is fine. A file is refused. A non-empty directory needs
    `overwrite`, and then every entry in it must be `replaceable` (e.g. a file of a checkpoint
    this tool recognises); anything else is named in the error and nothing is touched.
    """
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a directory; not replacing it")
    entries = _entries(path)
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"{path} exists and is not empty; pass {flag} to replace it")
    foreign = [p.name for p in entries if replaceable is None or not replaceable(p)]
    if foreign:
        raise FileExistsError(
            f"{path} holds files this tool did not write and does not recognise ({', '.join(foreign[:8])}"
            f"{', ...' if len(foreign) > 8 else ''}); not replacing it: move them or choose another directory"
        )


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, *, overwrite: bool = False, replaceable: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one rename.

    An existing non-empty `path` needs `overwrite=True`, and is replaced only when each of its
    entries is either written again (same name in the new directory) or `replaceable(entry)`; any
    other entry (a file this tool did not write) raises FileExistsError, before and after the work,
    and `path` is left as it was. On any error the temporary directory is removed.
    """
    path = Path(path)
    check_replaceable(path, overwrite=overwrite, replaceable=lambda entry: True)  # a file; non-empty without overwrite
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
        yield tmp
        _normal_modes(tmp)
        names = {p.name for p in tmp.iterdir()}
        check_replaceable(
            path,
            overwrite=overwrite,
            replaceable=lambda e: e.name in names or (replaceable is not None and replaceable(e)),
        )
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
