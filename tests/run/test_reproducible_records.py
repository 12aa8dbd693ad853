"""What a run leaves on disk: the same bytes for every run of a seed, no certificate that outlives the
run it describes, and on a full disk one line naming the file and what to do, with nothing half-written
left behind."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest
from _tiny_runs import TINY, tiny

from amal_verified.cli import main
from amal_verified.record.checkpoint import load_checkpoint
from amal_verified.record.signing import generate_key
from amal_verified.run.certify import certify_run
from amal_verified.run.logs import RunLogger
from amal_verified.run.trainer import Trainer

# End to end: most tests train a run.
pytestmark = pytest.mark.slow

# The smallest run that updates the world model (at step 200) and checkpoints twice.
SMALL: dict[str, Any] = {"total_steps": 200, "checkpoint_every": 100, "log_every": 100}


def _temporary_files(run_dir: Path) -> list[Path]:
    return sorted([*run_dir.glob(".*.tmp"), *(run_dir / "data").glob(".*.tmp")])


def test_two_runs_of_one_seed_write_the_same_checkpoint_and_seals(tmp_path: Path) -> None:
    # An auditor reproduces a published checkpoint's SHA-256 by training its seed again.
    first, second = tmp_path / "first", tmp_path / "second"
    Trainer.create(tiny(**SMALL), first).run()
    Trainer.create(tiny(**SMALL), second).run()
    for name in ("checkpoint.pt", "checkpoints.jsonl", "ledger.jsonl", "data/manifest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert "steps_per_s" not in load_checkpoint(first / "checkpoint.pt", restore=False)["metrics"]
    assert "steps_per_s" in (first / "metrics.csv").read_text().splitlines()[0]  # logged only


def test_a_resume_that_extends_a_certified_run_withdraws_its_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    Trainer.create(tiny(**SMALL), run_dir).run()
    key, _ = generate_key(tmp_path / "key")
    assert main(["certify", str(run_dir), "--quiet", "--sign", str(key)]) == 0
    certificate, envelope = run_dir / "certificate.json", run_dir / "certificate.dsse.json"
    assert certificate.is_file() and envelope.is_file()
    capsys.readouterr()

    # At its length a complete run changes nothing a certificate covers: it keeps it.
    Trainer.resume(run_dir).run()
    assert certificate.is_file() and envelope.is_file()
    assert "certificate" not in capsys.readouterr().err

    # A refused resume changes nothing either.
    with pytest.raises(ValueError, match="below the checkpoint"):
        Trainer.resume(run_dir, total_steps=100)
    assert certificate.is_file() and envelope.is_file()

    trainer = Trainer.resume(run_dir, total_steps=300)
    err = capsys.readouterr().err
    assert not certificate.exists() and not envelope.exists()
    assert err.count("\n") == 1, err
    assert "certificate.json" in err and "certificate.dsse.json" in err and str(run_dir) in err
    assert f"amal certify {run_dir}" in err
    trainer.run()
    cert = certify_run(run_dir)
    assert cert.ok, cert.problems
    assert cert.updates_checked == cert.updates_in_ledger > 0
    assert certificate.is_file()


def test_a_full_disk_while_checkpointing_is_one_line_naming_the_checkpoint_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The disk fills while the first checkpoint after step 0 is written: torch's writer fails, and
    # closing the file flushes what is buffered and fails again.
    real_fdopen = os.fdopen
    checkpoints = []

    class FullDisk(io.FileIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        if os.readlink(f"/proc/self/fd/{fd}").rpartition("/")[2].startswith(".checkpoint.pt."):
            checkpoints.append(fd)
            if len(checkpoints) > 1:
                return io.BufferedWriter(FullDisk(fd, "wb"))
        return real_fdopen(fd, *args, **kwargs)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell the checkpoint's file")
    monkeypatch.setattr(os, "fdopen", fdopen)
    run_dir = tmp_path / "run"
    settings = [f"--set={k}={v}" for k, v in {**TINY, **SMALL}.items() if k not in ("env_id", "total_steps")]
    code = main(["train", "--steps", "200", "--out", str(run_dir), "--no-progress", *settings])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("amal train: error: "), err
    assert f"{run_dir / 'checkpoint.pt'}: No space left on device" in err, err
    assert "free space" in err and f"amal train --resume --out {run_dir}" in err, err
    assert load_checkpoint(run_dir / "checkpoint.pt", restore=False)["step"] == 0
    assert _temporary_files(run_dir) == []


def test_a_failed_rewrite_of_the_metrics_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("step,wall_time\r\n100,1.0\r\n200,2.0\r\n")
    before = metrics.read_bytes()

    def full_disk(*_: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left on device") as raised:
        RunLogger(tmp_path, total_steps=200, unsafe_mix=False, progress=False, resume_step=100)
    monkeypatch.undo()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(metrics)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]
    assert metrics.read_bytes() == before
