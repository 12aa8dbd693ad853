"""The world-model learner in a process of its own (``wm_learner_process``), end to end: the ledger it
writes, the one-round delay of the model the policy's bonus reads, resuming, certifying, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_runs import final_state_digests, ledger_updates, tiny, train

from amal_verified.common.rng_streams import RunStreams
from amal_verified.envs import task_info
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.record.checkpoint import load_checkpoint
from amal_verified.record.ledger import state_digest
from amal_verified.run.certify import certify_run
from amal_verified.run.learner_process import LearnerProcess, LearnerProcessError
from amal_verified.run.trainer import Trainer, world_model_spec
from amal_verified.world_model.learner import WorldModelLearner

pytestmark = pytest.mark.slow

# The policy reads nothing of the world model (no bonus, no imagined rollouts): the primary data, and
# so every world-model update, are the same whichever process trains it.
BLIND: dict[str, Any] = {"info_weight": 0.0, "real_ratio": 1.0, "checkpoint_every": 50}
IN_PROCESS: dict[str, Any] = {"wm_learner_process": True}
Blind = tuple[Path, Path, dict[int, str], Trainer]


@pytest.fixture(scope="module")
def blind_runs(tmp_path_factory: pytest.TempPathFactory) -> Blind:
    """The same blind run trained in the loop and in the learner's process; the in-loop run's
    world-model digest after each round (the rounds are due at steps 200, 300 and 400)."""
    base = tmp_path_factory.mktemp("learner-process")
    after_round: dict[int, str] = {}

    def record(trainer: Trainer) -> None:
        if trainer.step in (200, 300, 400):
            after_round[trainer.step] = state_digest(trainer.learner.model.state_dict())

    in_loop = Trainer.create(tiny(**BLIND), base / "in-loop")
    in_loop.run(after_step=record)
    trainer = train(base / "process", **BLIND, **IN_PROCESS)
    return base / "in-loop", base / "process", after_round, trainer


def test_the_learners_process_writes_the_in_loop_ledger(
    blind_runs: Blind,
) -> None:
    in_loop, process, _, _ = blind_runs
    assert ledger_updates(process) == ledger_updates(in_loop)
    assert len(ledger_updates(process)) == 3 * 2
    assert final_state_digests(process) == final_state_digests(in_loop)


def test_the_bonus_reads_the_previous_rounds_model(blind_runs: Blind) -> None:
    """At the end, the model in use is the one after the round at step 300; the checkpoint's learner
    holds the one after the last round (step 400), which the next round would put in use."""
    _, process, after_round, trainer = blind_runs
    state = load_checkpoint(process / "checkpoint.pt", restore=False)
    assert state_digest(state["learner"]["model"]) == after_round[400]
    assert state_digest(state["model_in_use"]) == after_round[300]
    assert after_round[300] != after_round[400]
    # after the run the trainer reports the learner as its process left it, and keeps the model in use
    assert state_digest(trainer.state_dict()["learner"]["model"]) == after_round[400]
    assert state_digest(trainer.learner.model.state_dict()) == after_round[300]


@pytest.mark.parametrize("stop", [300, 250], ids=["at-a-round", "between-rounds"])
def test_a_run_resumes_bit_for_bit_and_certifies(blind_runs: Blind, tmp_path: Path, stop: int) -> None:
    """Stopped where a round is due (its records are appended at the checkpoint) or between rounds,
    then resumed: the same ledger, model in use and final state as the uninterrupted run."""
    _, process, _, _ = blind_runs
    resumed = tmp_path / "resumed"
    train(resumed, **BLIND, **IN_PROCESS, total_steps=stop)
    Trainer.resume(resumed, total_steps=400).run()
    assert (resumed / "ledger.jsonl").read_bytes() == (process / "ledger.jsonl").read_bytes()
    assert final_state_digests(resumed) == final_state_digests(process)
    in_use = [load_checkpoint(d / "checkpoint.pt", restore=False)["model_in_use"] for d in (resumed, process)]
    assert state_digest(in_use[0]) == state_digest(in_use[1])
    cert = certify_run(resumed, write=False, fresh_process=True)
    assert cert.ok, cert.problems


def test_a_run_with_bonus_and_imagination_is_reproducible_and_certifies(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    train(first, **IN_PROCESS)
    train(second, **IN_PROCESS)
    assert (first / "ledger.jsonl").read_bytes() == (second / "ledger.jsonl").read_bytes()
    assert final_state_digests(first) == final_state_digests(second)
    cert = certify_run(first, write=False, fresh_process=True)
    assert cert.ok, cert.problems


def test_the_ablation_cannot_use_the_learners_process() -> None:
    with pytest.raises(ValueError, match="wm_learner_process=true needs unsafe_mix=false"):
        tiny(**IN_PROCESS, unsafe_mix=True)


def _process(config: Any) -> LearnerProcess:
    spec = world_model_spec(config, task_info(config.env_id))
    learner = WorldModelLearner(spec, RunStreams(config.seed))
    buffer = PrimaryBuffer(64, obs_shape=(4,), action_shape=(), seed=1, action_dtype=torch.int64)
    zeros = torch.zeros(8, dtype=torch.int64)
    buffer.add(torch.randn(8, 4), zeros, torch.ones(8), torch.randn(8, 4), zeros.bool())
    state = learner.state_dict()
    return LearnerProcess(spec, seed=config.seed, threads=1, learner_state=state, primary=buffer)


def _round(process: LearnerProcess, updates: int) -> int:
    process.start_round(None, updates)
    return len(process.finish_round().updates)


def test_a_process_that_dies_is_reported_with_its_exit_code() -> None:
    process = _process(tiny())
    try:
        assert _round(process, 2) == 2
        process._process.kill()
        process._process.wait()
        with pytest.raises(LearnerProcessError, match=r"stopped \(exit code -9\).*from its last checkpoint"):
            _round(process, 2)
    finally:
        process.close()


def test_an_error_in_the_process_is_raised_in_the_trainer_as_it_was() -> None:
    process = _process(tiny())
    try:
        with pytest.raises(ValueError, match="updates must be a positive integer"):
            _round(process, 0)
        assert _round(process, 1) == 1  # the process still serves rounds
    finally:
        process.close()
