"""The Python API of a run: train, load the policy and act, evaluate and certify from one process."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _tiny_runs import TINY as TINY_RUN

import amal_verified as av
from amal_verified.run import certify as certify_module
from amal_verified.run import trained_policy

# The smallest configuration that trains, checkpoints and certifies, over 300 steps.
TINY: dict[str, Any] = {k: v for k, v in TINY_RUN.items() if k != "env_id"} | {
    "total_steps": 300,
    "eval_every": 300,
    "checkpoint_every": 300,
}


def _train(run_dir: Path, env_id: str) -> av.Trainer:
    trainer = av.Trainer.create(av.TrainConfig(env_id=env_id, **TINY), run_dir)
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def cartpole(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, av.Trainer]:
    run_dir = tmp_path_factory.mktemp("cartpole") / "run"
    return run_dir, _train(run_dir, "CartPole-v1")


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, av.Trainer]:
    run_dir = tmp_path_factory.mktemp("pendulum") / "run"
    return run_dir, _train(run_dir, "Pendulum-v1")


def _greedy(trainer: av.Trainer, obs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    batch = torch.as_tensor(obs, dtype=torch.float32).reshape(-1, trainer.task.obs_dim)
    return trainer.policy.act(batch, deterministic=True).numpy()


# ---------------------------------------------------------------------------------------- exports


def test_the_python_api_is_exported_at_top_level() -> None:
    for name in ("Trainer", "TrainConfig", "certify_run", "evaluate_run", "load_policy", "TrainedPolicy"):
        assert name in av.__all__ and name in dir(av)
    assert av.load_policy is trained_policy.load_policy
    assert av.certify_run is certify_module.certify_run


# ---------------------------------------------------------------------------------------- load_policy


def test_discrete_policy_acts_greedily_on_numpy_and_tensor_observations(
    cartpole: tuple[Path, av.Trainer],
) -> None:
    run_dir, trainer = cartpole
    policy = av.load_policy(run_dir)
    assert (policy.env_id, policy.step, policy.discrete, policy.obs_dim) == ("CartPole-v1", 300, True, 4)
    assert policy.action_low is None and "Discrete(2)" in repr(policy)
    observations = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    expected = _greedy(trainer, observations)
    for obs in observations:
        action = policy.act(obs)
        assert type(action) is int and action == _greedy(trainer, obs)[0]
        assert policy.act(torch.from_numpy(obs)) == action  # a tensor observation
        assert policy.act(obs.astype(np.float64).tolist()) == action  # plain numbers
    batch = policy.act(observations)
    assert isinstance(batch, np.ndarray) and batch.dtype == np.int64 and batch.shape == (16,)
    assert (batch == expected).all()


def test_continuous_policy_returns_float32_actions_within_the_bounds(
    pendulum: tuple[Path, av.Trainer],
) -> None:
    run_dir, trainer = pendulum
    policy = av.load_policy(run_dir)
    assert (policy.discrete, policy.obs_dim, policy.action_dim) == (False, 3, 1)
    assert policy.action_low is not None and policy.action_high is not None
    assert policy.action_low.tolist() == [-2.0] and policy.action_high.tolist() == [2.0]
    observations = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    expected = _greedy(trainer, observations)
    for obs in observations:
        action = policy.act(obs)
        assert isinstance(action, np.ndarray) and action.dtype == np.float32 and action.shape == (1,)
        assert np.array_equal(action, _greedy(trainer, obs)[0])  # one row: the same kernels as a batch of 1
        assert np.array_equal(policy.act(torch.from_numpy(obs).double()), action)
    batch = policy.act(torch.from_numpy(observations))
    assert isinstance(batch, np.ndarray) and batch.shape == (8, 1) and batch.dtype == np.float32
    assert np.array_equal(batch, expected)
    sampled = policy.act(observations, deterministic=False)
    assert isinstance(sampled, np.ndarray)
    assert ((sampled >= -2.0) & (sampled <= 2.0)).all() and not np.array_equal(sampled, expected)


def test_sampled_actions_come_from_the_policys_own_seeded_stream(cartpole: tuple[Path, av.Trainer]) -> None:
    run_dir, _ = cartpole
    observations = np.zeros((64, 4), dtype=np.float32)
    first = av.load_policy(run_dir, seed=3).act(observations, deterministic=False)
    again = av.load_policy(run_dir, seed=3).act(observations, deterministic=False)
    assert np.array_equal(first, again)
    state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state()
    given = av.load_policy(run_dir).act(
        observations, deterministic=False, generator=torch.Generator().manual_seed(5)
    )
    assert np.array_equal(
        given,
        av.load_policy(run_dir).act(
            observations, deterministic=False, generator=torch.Generator().manual_seed(5)
        ),
    )
    assert (np.random.get_state()[1] == state).all() and torch.equal(
        torch.random.get_rng_state(), torch_state
    )


@pytest.mark.slow
def test_load_policy_builds_no_environment_and_no_auxiliary_agent(cartpole: tuple[Path, av.Trainer]) -> None:
    run_dir, _ = cartpole
    code = (
        "import sys, amal_verified as av\n"
        f"p = av.load_policy({str(run_dir)!r})\n"
        "print(p.act([0.0, 0.0, 0.0, 0.0]))\n"
        "print(sorted(m for m in ('amal_verified.envs', 'amal_verified.agents.aux_population', "
        "'amal_verified.agents.aux_env', 'amal_verified.run.trainer', 'amal_verified.world_model.learner') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    action, loaded = result.stdout.splitlines()
    assert action in ("0", "1") and loaded == "[]"


def _one_line_error(run_dir: Path, *fragments: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragments[0])) as info:
        av.load_policy(run_dir)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_load_policy_refuses_a_missing_or_broken_run_directory(
    cartpole: tuple[Path, av.Trainer], tmp_path: Path
) -> None:
    run_dir, _ = cartpole
    _one_line_error(tmp_path / "nowhere", "nowhere", "does not exist", "amal train")
    (tmp_path / "file").write_text("")
    _one_line_error(tmp_path / "file", "is not a directory")
    (tmp_path / "empty").mkdir()
    _one_line_error(tmp_path / "empty", "config.json", "does not exist")
    no_checkpoint = tmp_path / "no-checkpoint"
    shutil.copytree(run_dir, no_checkpoint)
    (no_checkpoint / "checkpoint.pt").unlink()
    _one_line_error(no_checkpoint, "checkpoint.pt does not exist", "--resume")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir, corrupt)
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    _one_line_error(corrupt, "checkpoint.pt is not a readable checkpoint")
    bad_config = tmp_path / "bad-config"
    shutil.copytree(run_dir, bad_config)
    (bad_config / "config.json").write_text("{")
    _one_line_error(bad_config, "config.json is not valid JSON")


def test_act_refuses_bad_observations_with_one_line(cartpole: tuple[Path, av.Trainer]) -> None:
    policy = av.load_policy(cartpole[0])
    for obs, fragment in (
        (np.zeros(3, dtype=np.float32), "obs must have shape (4,) or (B, 4) for CartPole-v1, got (3,)"),
        (np.zeros((2, 2, 4)), "got (2, 2, 4)"),
        (np.array([0.0, np.nan, 0.0, 0.0]), "NaN or infinite"),
        (np.array(["a", "b", "c", "d"]), "obs must be numeric"),
    ):
        with pytest.raises(ValueError, match=re.escape(fragment)) as info:
            policy.act(obs)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------- evaluate


def test_evaluate_run_at_top_level_matches_the_loaded_policy(cartpole: tuple[Path, av.Trainer]) -> None:
    run_dir, _ = cartpole
    report = av.evaluate_run(run_dir, episodes=2, seed=7)
    assert report["step"] == 300 and len(report["returns"]) == 2 and report["world_model"]["finite"]
    assert report == av.evaluate_run(run_dir, episodes=2, seed=7)
    with pytest.raises(ValueError, match="does not exist"):
        av.evaluate_run(run_dir.parent / "nowhere")
    with pytest.raises(ValueError, match="episodes must be positive"):
        av.evaluate_run(run_dir, episodes=0)


# ---------------------------------------------------------------------------------------- certify


@pytest.mark.slow
def test_certify_in_the_training_process_replays_in_a_fresh_process(
    cartpole: tuple[Path, av.Trainer],
) -> None:
    run_dir, _ = cartpole
    assert certify_module.process_has_run_state()  # this process trained: the trainer is loaded
    seen: list[tuple[int, int]] = []
    cert = av.certify_run(run_dir, progress=lambda done, total: seen.append((done, total)))
    assert cert.ok, cert.problems
    assert (cert.updates_checked, cert.updates_in_ledger, cert.forbidden_modules_loaded) == (4, 4, ())
    assert seen == [(i, 4) for i in range(1, 5)]
    written = json.loads((run_dir / "certificate.json").read_text())
    assert written["verdict"] == "CERTIFIED" and written["updates_checked"] == 4


@pytest.mark.slow
def test_a_replay_in_a_process_that_trained_never_overwrites_the_certificate(
    cartpole: tuple[Path, av.Trainer],
) -> None:
    run_dir, _ = cartpole
    assert av.certify_run(run_dir).ok
    good = (run_dir / "certificate.json").read_bytes()
    here = av.certify_run(run_dir, fresh_process=False)
    assert not here.ok and "amal_verified.run.trainer" in here.forbidden_modules_loaded
    assert here.updates_checked == 4  # the replay itself agrees: only the process is not fresh
    assert (run_dir / "certificate.json").read_bytes() == good


@pytest.mark.slow
def test_certify_in_a_clean_process_runs_there_and_restores_torch_settings(
    cartpole: tuple[Path, av.Trainer],
) -> None:
    run_dir, _ = cartpole
    code = (
        "import torch\n"
        "from amal_verified.run import certify\n"
        "torch.set_num_threads(3)\n"
        "assert not certify.process_has_run_state()\n"
        "def no_child(*a, **k): raise AssertionError('spawned a child')\n"
        "certify._certify_in_child = no_child\n"
        f"c = certify.certify_run({str(run_dir)!r}, write=False)\n"
        "print(c.ok, torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False", "3"]


@pytest.mark.slow
def test_a_failed_child_process_raises_one_line(
    cartpole: tuple[Path, av.Trainer], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, _ = cartpole
    monkeypatch.setattr(certify_module, "_CHILD_CODE", "import sys; sys.exit('replay broke')")
    before = (run_dir / "certificate.json").read_bytes() if (run_dir / "certificate.json").exists() else None
    with pytest.raises(RuntimeError) as info:
        av.certify_run(run_dir, fresh_process=True)
    message = str(info.value)
    assert "exited with code 1" in message and "replay broke" in message and "\n" not in message
    after = (run_dir / "certificate.json").read_bytes() if (run_dir / "certificate.json").exists() else None
    assert after == before


@pytest.mark.slow
def test_certify_with_progress_true_reports_plain_lines_off_a_terminal(
    cartpole: tuple[Path, av.Trainer], capsys: pytest.CaptureFixture[str]
) -> None:
    cert = av.certify_run(cartpole[0], progress=True, write=False)
    assert cert.ok
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("amal certify ") for line in lines)
    assert "updates 4/4 (100%)" in lines[-1] and "updates/s" in lines[-1] and "ETA" in lines[-1]
