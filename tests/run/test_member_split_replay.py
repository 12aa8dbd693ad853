"""Certify's replay split over processes by world-model member: the same verdict and updates as one
process, a split used only where it is exact, a disagreeing split never deciding, a dead worker named."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from _tiny_runs import amal, tiny

from amal_verified.record.primary_log import load_primary_stream
from amal_verified.run.certify import certify_run
from amal_verified.run.config import TrainConfig
from amal_verified.run.primary_replay import (
    MemberSplitReplay,
    PrimaryReplay,
    ReplayWorkerError,
    member_ranges,
    replay_processes,
    split_is_exact,
)
from amal_verified.run.trainer import Trainer
from amal_verified.world_model.learner import WorldModelSpec

# End to end: the fixtures train runs.
pytestmark = pytest.mark.slow


def _run(root: Path, **overrides: object) -> Path:
    run_dir = root / "run"
    Trainer.create(tiny(**overrides), run_dir).run()
    return run_dir


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete tiny run of 3 members (6 updates), whose first update splits exactly in 2 and 3."""
    return _run(tmp_path_factory.mktemp("finished"))


def _inputs(run_dir: Path) -> tuple[TrainConfig, WorldModelSpec, dict[str, object], int]:
    document = json.loads((run_dir / "config.json").read_text())
    stream = load_primary_stream(run_dir)
    return (
        TrainConfig.from_json(document["train"]),
        WorldModelSpec.from_json(document["world_model"]),
        dict(stream.tensors),
        stream.count,
    )


def test_a_split_replay_gives_every_update_of_the_single_process_replay(finished: Path) -> None:
    config, spec, data, available = _inputs(finished)
    ledger = [json.loads(line) for line in (finished / "ledger.jsonl").read_text().splitlines()[1:]]
    for processes in (2, 3):
        assert split_is_exact(config, spec, data, available, processes)  # type: ignore[arg-type]
        single = PrimaryReplay(config, spec, data, available)  # type: ignore[arg-type]
        with MemberSplitReplay(config, spec, data, available, len(ledger), processes) as split:  # type: ignore[arg-type]
            for record in ledger:
                got, want = split.update(), single.update()
                assert (got.batch_digest, got.param_digest, got.labels) == (
                    want.batch_digest,
                    want.param_digest,
                    want.labels,
                )
                assert got.param_digest == record["param_digest"]
            with pytest.raises(ValueError, match="all have been taken"):
                split.update()


def test_certify_with_processes_certifies_as_one_process_does_and_says_how(finished: Path) -> None:
    one = certify_run(finished, write=False, fresh_process=True, jobs=1)
    two = certify_run(finished, write=False, fresh_process=True, jobs=2)
    assert one.ok and two.ok, (one.problems, two.problems)
    assert (one.updates_checked, one.ledger_head, one.run_head) == (
        two.updates_checked,
        two.ledger_head,
        two.run_head,
    )
    assert (one.environment["replay_processes"], two.environment["replay_processes"]) == ("1", "2")
    assert "replay_split" not in two.environment
    done = amal("certify", "--jobs", "3", "--no-write", str(finished))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "by 3 processes" in done.stdout and "CERTIFIED" in done.stdout


def test_a_split_that_disagrees_with_the_ledger_never_decides(tmp_path: Path) -> None:
    """An --unsafe-mix run differs from any primary-only replay at its first update: the split finds
    the difference, the replay in one process decides, and the certificate says so."""
    run_dir = _run(tmp_path, unsafe_mix=True)
    two = certify_run(run_dir, write=False, fresh_process=True, jobs=2)
    one = certify_run(run_dir, write=False, fresh_process=True, jobs=1)
    assert not two.ok and two.problems == one.problems
    assert two.environment["replay_processes"] == "1"
    assert "differed from the ledger at update 1" in two.environment["replay_split"]


def test_a_split_that_is_not_exact_is_not_used(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, ensemble_size=4, batch_size=16)  # measured: not exact in 3 or 4 parts
    config, spec, data, available = _inputs(run_dir)
    assert not split_is_exact(config, spec, data, available, 3)  # type: ignore[arg-type]
    cert = certify_run(run_dir, write=False, fresh_process=True, jobs=3)
    assert cert.ok, cert.problems
    assert cert.environment["replay_processes"] == "1"
    assert "not exact" in cert.environment["replay_split"]


def test_a_dead_worker_is_named_and_stops_the_replay(finished: Path) -> None:
    config, spec, data, available = _inputs(finished)
    with MemberSplitReplay(config, spec, data, available, 6, 2) as split:  # type: ignore[arg-type]
        split.update()
        os.kill(split._workers[1].process.pid, signal.SIGKILL)

        def the_rest() -> None:
            for _ in range(5):  # the worker may have sent one more update before it died
                split.update()

        with pytest.raises(ReplayWorkerError, match=r"replay worker \(members 1-2\) ended with exit code -9"):
            the_rest()


def test_how_many_processes_replay() -> None:
    spec = WorldModelSpec(obs_dim=4, action_dim=2, discrete=True, members=4)
    assert replay_processes(spec, 10_000, jobs=1) == 1
    assert replay_processes(spec, 10_000, jobs=3) == 3
    assert replay_processes(spec, 10_000, jobs=10) == 4  # at most one process per member
    assert replay_processes(spec, 1, jobs=None) == 1  # too short to repay starting workers
    for unsplittable in (
        WorldModelSpec(obs_dim=4, action_dim=2, discrete=True, members=4, shared_trunk=True),
        WorldModelSpec(obs_dim=4, action_dim=2, discrete=True, members=1),
    ):
        assert replay_processes(unsplittable, 10_000, jobs=4) == 1
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        replay_processes(spec, 10, jobs=0)
    assert member_ranges(20, 3) == [(0, 6), (6, 13), (13, 20)]
    assert member_ranges(2, 2) == [(0, 1), (1, 2)]


def test_certify_refuses_a_bad_job_count_in_one_line(finished: Path) -> None:
    done = amal("certify", "--jobs", "0", str(finished))
    assert done.returncode == 2
    assert "--jobs must be at least 1" in done.stderr and "Traceback" not in done.stderr
