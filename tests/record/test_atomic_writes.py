"""The run record's writers under a full disk, at each step of a write: no temporary file is left
behind, the target keeps its previous content, and the error raised is the first one, keeps its errno
and names the target."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from amal_verified.record.checkpoint import load_checkpoint, save_checkpoint
from amal_verified.record.checkpoint_log import CheckpointLog
from amal_verified.record.files import write_json_atomic
from amal_verified.record.ledger import Ledger, RunHeader

FULL = os.strerror(errno.ENOSPC)


def _full_disk(*_: Any, **__: Any) -> Any:
    raise OSError(errno.ENOSPC, FULL)


class _FullDiskFile(io.FileIO):
    """A file on a full disk: it opens, but no byte can be written (nor flushed when it closes)."""

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, FULL)


def _writes_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file opened for writing from here on is on a full disk (``open`` and ``os.fdopen``)."""
    real_open = builtins.open

    def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return io.BufferedWriter(_FullDiskFile(fd, "wb"))

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode or "a" in mode:
            return io.BufferedWriter(_FullDiskFile(file, "wb"))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(builtins, "open", open_)


def _temporary_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _assert_names(exc: OSError, target: Path) -> None:
    assert exc.errno == errno.ENOSPC, exc
    assert exc.filename == str(target), exc
    assert FULL in str(exc) and str(target) in str(exc)


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_json_write_leaves_no_temporary_file_and_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "certificate.json"
    write_json_atomic(target, {"ok": True})
    before = target.read_bytes()
    if failing == "write":
        _writes_fail(monkeypatch)
    else:
        monkeypatch.setattr(os, failing, _full_disk)
    with pytest.raises(OSError, match="No space left on device") as raised:
        write_json_atomic(target, {"ok": False})
    monkeypatch.undo()
    _assert_names(raised.value, target)
    assert _temporary_files(tmp_path) == []
    assert target.read_bytes() == before


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_checkpoint_write_raises_the_first_error_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    # "write": torch's writer fails, then closing the file flushes what is buffered and fails again;
    # the error raised is still the first, naming the checkpoint.
    target = tmp_path / "checkpoint.pt"
    save_checkpoint(target, {"step": 0, "weights": torch.zeros(4)})
    before = target.read_bytes()
    if failing == "write":
        _writes_fail(monkeypatch)
    else:
        monkeypatch.setattr(os, failing, _full_disk)
    with pytest.raises(OSError, match="No space left on device") as raised:
        save_checkpoint(target, {"step": 1, "weights": torch.ones(50_000)})
    monkeypatch.undo()
    _assert_names(raised.value, target)
    assert _temporary_files(tmp_path) == []
    assert target.read_bytes() == before
    assert load_checkpoint(target, restore=False)["step"] == 0


def test_a_failed_seal_or_ledger_append_names_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = RunHeader("0" * 16, 0, "0" * 64, "test", str(torch.__version__))
    ledger = Ledger.create(tmp_path, header)
    seals = CheckpointLog.open(tmp_path, ledger.genesis)
    monkeypatch.setattr(os, "write", _full_disk)
    with pytest.raises(OSError, match="No space left on device") as sealing:
        seals.append(
            step=0,
            status="running",
            ledger_head=ledger.head,
            ledger_count=0,
            manifest=[],
            primary_transitions=0,
            checkpoint_digest="a" * 64,
        )
    with pytest.raises(OSError, match="No space left on device") as appending:
        ledger.append(1, "b" * 64, "c" * 64, ["primary:real-env"])
    monkeypatch.undo()
    ledger.close()
    _assert_names(sealing.value, seals.path)
    _assert_names(appending.value, tmp_path / "ledger.jsonl")
