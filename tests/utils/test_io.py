"""utils/io.py: output locks, atomic files and directories, manifests, leftovers of killed writers.

The processes here are real (`tests.helpers.processes`): a lock held by a live process, a writer
killed with SIGKILL between the two renames of a directory swap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import dead_pid, start_python
from videomt_jax.utils import io


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_dir(path: Path, files: dict[str, str], **kwargs) -> None:
    with io.atomic_directory(path, **kwargs) as tmp:
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)


HOLD_LOCK = """
import sys, time
from videomt_jax.utils.io import output_lock
with output_lock(sys.argv[1]):
    print("ready", flush=True)
    time.sleep(60)
"""


def test_output_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    out = tmp_path / "result.json"
    holder = start_python(HOLD_LOCK, str(out))
    try:
        busy = rf"result.json is being written by another process \(pid {holder.pid}"
        with pytest.raises(FileExistsError, match=busy), io.output_lock(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / ".result.json.lock").read_text().strip() == str(holder.pid)  # SIGKILL left it
    with io.output_lock(out):  # the holder is gone: taken over
        assert (tmp_path / ".result.json.lock").read_text().strip() == str(os.getpid())
        with io.output_lock(out):  # re-entrant
            pass
    assert list(tmp_path.iterdir()) == []  # removed on exit


def test_output_lock_is_released_on_an_exception(tmp_path):
    with pytest.raises(RuntimeError), io.output_lock(tmp_path / "x"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_without_overwrite_never_replaces(tmp_path):
    path = tmp_path / "a.txt"
    io.atomic_write_text(path, "first", overwrite=False)
    with pytest.raises(FileExistsError, match="a.txt exists; pass --overwrite"):
        io.atomic_write_text(path, "second", overwrite=False)
    assert path.read_text() == "first"
    other = tmp_path / "b.txt"
    with pytest.raises(FileExistsError, match="appeared while writing"), io.atomic_path(other, overwrite=False) as tmp:
        tmp.write_text("third")
        other.write_text("someone else's")  # created by another program during the work
    assert other.read_text() == "someone else's"
    io.atomic_write_text(path, "fourth")  # overwrite=True is the default
    assert path.read_text() == "fourth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_check_new_file(tmp_path):
    io.check_new_file(tmp_path / "missing", overwrite=False)
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="pass --force"):
        io.check_new_file(tmp_path / "f", overwrite=False, flag="--force")
    io.check_new_file(tmp_path / "f", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "f")
    for other in (tmp_path, tmp_path / "link"):
        with pytest.raises(FileExistsError, match="not a regular file"):
            io.check_new_file(other, overwrite=True)


def test_directory_manifest_lists_every_file(tmp_path):
    out = tmp_path / "ckpt"
    _write_dir(out, {"config.json": "{}", "params/d/chunk": "0123"})
    manifest = json.loads((out / io.MANIFEST_NAME).read_text())["files"]
    assert sorted(manifest) == ["config.json", "params/d/chunk"]
    assert manifest["params/d/chunk"]["size"] == 4
    assert io.verify_manifest(out) is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda d: (d / "params" / "holiday.jpg").write_bytes(b"\xff\xd8"), "params/holiday.jpg is not one of its"),
        (lambda d: (d / "config.json").write_text("{} "), "config.json has 3 bytes"),
        (lambda d: (d / "params" / "d" / "chunk").write_text("3210"), "chunk does not match its checksum"),
        (lambda d: (d / "params" / "d" / "chunk").unlink(), "chunk is missing"),
        (lambda d: (d / io.MANIFEST_NAME).unlink(), "has no videomt_manifest.json"),
    ],
    ids=["foreign-file-deep", "changed-size", "changed-content", "missing", "no-manifest"],
)
def test_overwrite_replaces_only_exactly_our_files(tmp_path, damage, named):
    """Issue 24: `--overwrite` deleted OUT/params/holiday.jpg and a user's own OUT/config.json."""
    out = tmp_path / "ckpt"
    _write_dir(out, {"config.json": "{}", "params/d/chunk": "0123"})
    _write_dir(out, {"config.json": "{}", "params/d/chunk": "4567"}, overwrite=True)  # our own: replaced
    assert (out / "params" / "d" / "chunk").read_text() == "4567"
    damage(out)
    before = _tree(out)
    with pytest.raises(FileExistsError, match=named):
        _write_dir(out, {"config.json": "{}"}, overwrite=True)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    if named != "has no videomt_manifest.json":
        with pytest.raises(io.ManifestError, match=named):
            io.verify_manifest(out)


def test_directory_needs_overwrite_and_is_never_a_file(tmp_path):
    out = tmp_path / "ckpt"
    _write_dir(out, {"a": "1"})
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        _write_dir(out, {"a": "2"})
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        _write_dir(tmp_path / "file", {"a": "2"}, overwrite=True)


def test_manifest_records_files_added_later(tmp_path):
    out = tmp_path / "model"
    _write_dir(out, {"config.json": "{}"})
    io.atomic_write_text(out / "data.json", "{}")
    with pytest.raises(io.ManifestError, match="data.json is not one of its files"):
        io.verify_manifest(out)
    io.add_to_manifest(out, "data.json")
    assert io.verify_manifest(out) is True


SWAP_KILLED = """
import os, signal, sys
from pathlib import Path
from videomt_jax.utils import io

target = Path(sys.argv[1])
real = os.rename
def rename(src, dst):  # SIGKILL right after the old directory was moved aside
    real(src, dst)
    if Path(dst).name.startswith(f".{target.name}.old-"):
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename
with io.atomic_directory(target, overwrite=True) as tmp:
    (tmp / "w.txt").write_text("new")
"""


def _killed_in_swap(target: Path) -> int:
    child = subprocess.Popen([sys.executable, "-c", SWAP_KILLED, str(target)], stderr=subprocess.PIPE, text=True)
    _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err
    return child.pid


@pytest.mark.parametrize("by", ["recover", "next writer"])
def test_swap_cut_by_sigkill_is_undone(tmp_path, by):
    """Issue 24: a kill between the two renames left K missing, the old one only as `.K.old-<pid>`."""
    target = tmp_path / "K"
    _write_dir(target, {"w.txt": "old"})
    pid = _killed_in_swap(target)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "K" not in left and f".K.old-{pid}" in left and ".K.lock" in left
    assert any(name.startswith(f".K.{pid}-") and name.endswith(".tmp") for name in left)
    if by == "recover":
        io.recover(target)
        assert (target / "w.txt").read_text() == "old"
    else:
        _write_dir(target, {"w.txt": "newer"}, overwrite=True)
        assert (target / "w.txt").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["K"]
    assert io.verify_manifest(target)


def test_recover_removes_only_our_leftovers_of_dead_processes(tmp_path):
    target, gone, alive = tmp_path / "out.json", dead_pid(), os.getppid()
    ours = [f".out.{gone}-abcdefgh.tmp.json", f".out.json.{gone}-abcd_123.tmp", f".out.json.old-{gone}"]
    kept = [
        f".out.{alive}-abcdefgh.tmp.json",  # a live writer's
        f".out.{gone}-abcdefgh.tmp.txt",  # another output's
        f".other.{gone}-abcdefgh.tmp.json",
        f"out.{gone}-abcdefgh.tmp.json",  # not hidden: not a name we use
        "out.json",
    ]
    for name in ours + kept:
        (tmp_path / name).write_text("x")
    io.recover(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_signals_deferred_acts_after_the_block(monkeypatch):
    seen: list[str] = []

    def handler(signum, frame):
        seen.append("handled")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt), io.signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            seen.append("block finished")
        assert seen == ["block finished", "handled"]
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_folders_made_for_an_output_that_was_not_written_are_removed(tmp_path):
    with pytest.raises(RuntimeError), io.atomic_directory(tmp_path / "a" / "b" / "out") as tmp:
        (tmp / "x").write_text("1")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    _write_dir(tmp_path / "a" / "b" / "out", {"x": "1"})
    assert (tmp_path / "a" / "b" / "out" / "x").read_text() == "1"
