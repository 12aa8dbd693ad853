"""Runs under faults: signals at chosen moments, a run stopped while it is created, a full disk and a
read-only directory.  Every interrupted run resumes without repair and certifies; every file-system
error on the command line is one line, exit 2, with the previous checkpoint intact."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _tiny_runs import TINY, amal, final_state_digests, tiny

from amal_verified.record.checkpoint import load_checkpoint
from amal_verified.run.certify import certify_run
from amal_verified.run.stop_signals import RunInterrupted
from amal_verified.run.trainer import Trainer

# End to end: every test trains a run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    Trainer.create(tiny(), run_dir).run()
    return run_dir


def _status(run_dir: Path) -> dict[str, object]:
    return dict(json.loads((run_dir / "run.json").read_text()))


def _signal_at(step: int, *signals: signal.Signals) -> object:
    def after_step(trainer: Trainer) -> None:
        if trainer.step == step:
            for sig in signals:
                os.kill(os.getpid(), sig)

    return after_step


def _resumes_to_the_reference(run_dir: Path, reference: Path) -> None:
    Trainer.resume(run_dir).run()
    assert (run_dir / "ledger.jsonl").read_bytes() == (reference / "ledger.jsonl").read_bytes()
    assert final_state_digests(run_dir) == final_state_digests(reference)
    cert = certify_run(run_dir, write=False, fresh_process=True)
    assert cert.ok, cert.problems


# ---------------------------------------------------------------------------------------- signals


@pytest.fixture(autouse=True)
def default_signal_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM as an interactive interpreter has them, whatever the test runner inherited."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize(("sig", "step"), [(signal.SIGINT, 250), (signal.SIGTERM, 120), (signal.SIGINT, 399)])
def test_a_signal_stops_the_run_at_a_safe_point_and_it_resumes(
    reference: Path, tmp_path: Path, sig: signal.Signals, step: int
) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer.create(tiny(), run_dir)
    with pytest.raises(RunInterrupted) as stopped:
        trainer.run(after_step=_signal_at(step, sig))  # type: ignore[arg-type]
    assert (stopped.value.step, stopped.value.signal_name) == (step, sig.name)
    assert stopped.value.exit_code == 128 + int(sig)
    assert str(stopped.value) == (
        f"interrupted by {sig.name} at step {step} (checkpointed); "
        f"resume with: amal train --resume --out {run_dir}"
    )
    status = _status(run_dir)
    assert (status["status"], status["step"], status["checkpoint_step"]) == ("interrupted", step, step)
    assert load_checkpoint(run_dir / "checkpoint.pt", restore=False)["step"] == step
    seal = json.loads((run_dir / "checkpoints.jsonl").read_text().splitlines()[-1])
    assert (seal["status"], seal["step"]) == ("interrupted", step)  # the checkpoint is sealed as such
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    _resumes_to_the_reference(run_dir, reference)


def test_an_ignored_signal_stays_ignored(reference: Path, tmp_path: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job of a non-interactive shell
    run_dir = tmp_path / "run"
    Trainer.create(tiny(), run_dir).run(after_step=_signal_at(250, signal.SIGINT))  # type: ignore[arg-type]
    assert _status(run_dir)["status"] == "complete"
    assert (run_dir / "ledger.jsonl").read_bytes() == (reference / "ledger.jsonl").read_bytes()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_second_signal_stops_at_once_and_the_run_resumes_from_its_checkpoint(
    reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer.create(tiny(), run_dir)
    with pytest.raises(KeyboardInterrupt) as stopped:
        trainer.run(after_step=_signal_at(250, signal.SIGINT, signal.SIGINT))  # type: ignore[arg-type]
    assert not isinstance(stopped.value, RunInterrupted)
    status = _status(run_dir)
    assert (status["status"], status["step"], status["checkpoint_step"]) == ("interrupted", 250, 200)
    # The data flushed at the stop lie beyond the checkpoint; the resumed run writes them again.
    assert (run_dir / "data" / "primary-0000000200-0000000250.pt").exists()
    _resumes_to_the_reference(run_dir, reference)
    assert not (run_dir / "data" / "primary-0000000200-0000000250.pt").exists()


def test_the_command_line_reports_an_interrupt_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = [f"--set={k}={v}" for k, v in TINY.items() if k not in ("env_id", "total_steps")]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "amal_verified.cli",
            "train",
            "--steps",
            "3000",
            "--out",
            str(run_dir),
            *settings,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    metrics = run_dir / "metrics.csv"
    while time.monotonic() < deadline and not (
        metrics.exists() and len(metrics.read_text().splitlines()) > 2
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("amal train: interrupted by SIGINT at step ") and line.endswith(
        f"resume with: amal train --resume --out {run_dir}"
    )
    assert "Traceback" not in err
    assert _status(run_dir)["status"] == "interrupted"
    resumed = amal("train", "--resume", "--out", str(run_dir), "--steps", "600", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    certified = amal("certify", str(run_dir), "--quiet")
    assert certified.returncode == 0 and certified.stdout.startswith("CERTIFIED"), certified.stdout


# ---------------------------------------------------------------------------------------- creation


def test_a_run_stopped_while_it_is_created_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"

    def stopped(self: Trainer, **_: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "save_checkpoint", stopped)
        with pytest.raises(KeyboardInterrupt):
            Trainer.create(tiny(), run_dir)
    assert list(tmp_path.iterdir()) == []
    Trainer.create(tiny(total_steps=200), run_dir).run()  # the same directory is free for a new run


def test_a_run_stopped_right_after_it_was_created_resumes(reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer.create(tiny(), run_dir)
    trainer.logger.close()
    trainer.files.close()  # the process dies here: nothing after creation was written
    assert _status(run_dir)["status"] == "running" and _status(run_dir)["checkpoint_step"] == 0
    _resumes_to_the_reference(run_dir, reference)


# ---------------------------------------------------------------------------------------- file system


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(directory: Path, leave: int) -> Path:
    filler = directory / "filler"
    free = shutil.disk_usage(directory).free
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_is_one_error_and_the_previous_checkpoint_survives(
    reference: Path, tmp_path: Path
) -> None:
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        run_dir = disk / "run"
        trainer = Trainer.create(tiny(), run_dir)
        filler: list[Path] = []

        def fill_at_150(t: Trainer) -> None:
            if t.step == 150:
                filler.append(_fill(disk, leave=64 * 1024))

        with pytest.raises(OSError, match="No space left on device") as raised:
            trainer.run(after_step=fill_at_150)
        assert raised.value.errno == errno.ENOSPC
        assert load_checkpoint(run_dir / "checkpoint.pt", restore=False)["step"] == 0
        filler[0].unlink()
        _resumes_to_the_reference(run_dir, reference)


def test_the_command_line_on_a_full_disk_prints_one_line(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        run_dir = disk / "run"
        _fill(disk, leave=200 * 1024)
        settings = [f"--set={k}={v}" for k, v in TINY.items() if k not in ("env_id", "total_steps")]
        done = amal("train", "--steps", "400", "--out", str(run_dir), "--no-progress", *settings)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "No space left on device" in done.stderr, done.stderr
        assert done.stderr.startswith("amal train: error: ") and "Traceback" not in done.stderr


def test_a_read_only_run_is_refused_in_one_line_and_certifies_elsewhere(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "16m") as disk:
        run_dir = disk / "run"
        Trainer.create(tiny(total_steps=200), run_dir).run()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        resumed = amal("train", "--resume", "--out", str(run_dir), "--steps", "400", "--no-progress")
        assert resumed.returncode == 2 and resumed.stderr.count("\n") == 1, resumed.stderr
        assert "Read-only file system" in resumed.stderr and "Traceback" not in resumed.stderr
        certified = amal("certify", str(run_dir), "--quiet")
        assert certified.stdout.startswith("CERTIFIED"), certified.stdout
        assert certified.returncode == 2 and "--certificate FILE" in certified.stderr
        assert certified.stderr.count("\n") == 1 and "Read-only file system" in certified.stderr
        elsewhere = tmp_path / "certificate.json"
        written = amal("certify", str(run_dir), "--quiet", "--certificate", str(elsewhere))
        assert written.returncode == 0, written.stderr
        assert json.loads(elsewhere.read_text())["ok"] is True


def test_a_resumed_run_drops_the_temporary_files_of_unfinished_writes(
    reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    trainer = Trainer.create(tiny(), run_dir)
    trainer.logger.close()
    trainer.files.close()
    for leftover in (run_dir / ".checkpoint.pt.0123456789ab.tmp", run_dir / "data" / ".manifest.json.tmp"):
        leftover.write_bytes(b"cut short")  # what a process killed in the middle of a write leaves
    _resumes_to_the_reference(run_dir, reference)
    assert not list(run_dir.glob(".*.tmp")) and not list((run_dir / "data").glob(".*.tmp"))
