"""``amal_tools.bench.isolation``: isolation distances, predictive KL and real-environment error.

Two tiny CartPole runs with the same settings (trained once per module): AMAL and the
``--unsafe-mix`` ablation.  AMAL's world model must equal its primary-only replay bit for bit
(distance and KL exactly 0.0, equal prediction errors); the ablation's must not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from amal_tools.bench.isolation import (
    ACTION_STREAM,
    EPISODE_STREAM,
    _kl,
    final_learner,
    isolation_metrics,
    measure_run,
    prediction_error,
    primary_only_learner,
    real_transitions,
)
from amal_tools.bench.naive_predictors import measure_naive_errors

import amal_verified as av
from amal_verified.agents.aux_env import make_aux_env
from amal_verified.common.rng_streams import RunStreams
from amal_verified.envs import make_env
from amal_verified.record.primary_log import load_primary_stream
from amal_verified.run.config import TrainConfig
from amal_verified.run.trainer import Trainer
from amal_verified.world_model.learner import WorldModelLearner

# End to end: the fixtures train runs and replay them.
pytestmark = pytest.mark.slow

TINY: dict[str, Any] = {
    "env_id": "CartPole-v1",
    "total_steps": 300,
    "learning_starts": 100,
    "random_steps": 100,
    "wm_train_every": 50,
    "wm_updates_per_round": 2,
    "ensemble_size": 2,
    "wm_hidden_scale": 0.05,
    "num_aux_agents": 2,
    "cem_population": 4,
    "cem_every": 100,
    "mi_outer_samples": 4,
    "policy_hidden": 16,
    "eval_every": 300,
    "eval_episodes": 1,
    "log_every": 100,
    "checkpoint_every": 300,
    "rollout_batch": 16,
    "batch_size": 32,
    "buffer_size": 2_000,
    "aux_buffer_size": 1_000,
    "probe_states": 8,
}
HELD_OUT_SEED = 777


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("isolation")
    out = {}
    for mode in ("amal", "unsafe_mix"):
        run_dir = root / mode
        Trainer.create(TrainConfig(**TINY, unsafe_mix=mode == "unsafe_mix"), run_dir).run()
        out[mode] = run_dir
    return out


@pytest.fixture(scope="module")
def held_out() -> dict[str, torch.Tensor]:
    return real_transitions("CartPole-v1", seed=HELD_OUT_SEED, count=400)


def test_amal_run_is_isolated_exactly(runs: dict[str, Path], held_out: dict[str, torch.Tensor]) -> None:
    result = measure_run(runs["amal"], transitions=held_out)
    iso = result["isolation"]
    assert result["unsafe_mix"] is False
    assert result["world_model_updates"] == 10  # rounds at 100, 150, ..., 300 primary transitions
    assert iso["identical"] is True
    assert iso["with_aux_digest"] == iso["primary_only_digest"]
    assert iso["param_l2"] == 0.0 and iso["param_max_abs"] == 0.0
    assert iso["kl_mean"] == 0.0 and iso["kl_max"] == 0.0
    errors = result["wm_real_error"]
    assert errors["with_aux"] == errors["primary_only"]
    assert errors["with_aux"]["transitions"] == 400
    fit = result["wm_primary_fit"]  # all 300 recorded primary transitions (fewer than the limit)
    assert fit["with_aux"] == fit["primary_only"] and fit["with_aux"]["transitions"] == 300
    stream = load_primary_stream(runs["amal"])
    own = {k: stream.tensors[k] for k in ("obs", "action", "reward", "next_obs")}
    assert fit["with_aux"] == prediction_error(final_learner(runs["amal"]), own).to_json()
    assert fit["naive"] == measure_naive_errors("CartPole-v1", own).to_json()
    json.dumps(result)  # JSON-ready
    print("AMAL", json.dumps(result))


def test_unsafe_mix_run_shows_aux_influence(runs: dict[str, Path], held_out: dict[str, torch.Tensor]) -> None:
    result = measure_run(runs["unsafe_mix"], transitions=held_out)
    iso = result["isolation"]
    assert result["unsafe_mix"] is True
    assert iso["identical"] is False
    assert iso["param_l2"] > 0.0 and iso["param_max_abs"] > 0.0
    assert iso["kl_mean"] > 0.0 and iso["kl_max"] >= iso["kl_mean"]
    errors = result["wm_real_error"]
    assert errors["with_aux"] != errors["primary_only"]
    assert result["wm_primary_fit"]["with_aux"] != result["wm_primary_fit"]["primary_only"]
    print("UNSAFE_MIX", json.dumps(result))


def test_learners_match_the_run(runs: dict[str, Path]) -> None:
    # The checkpoint's learner is the run's (same digest as its last ledger record); for the ablation
    # the checkpoint's learner is the unsafe one and the replay is gated.
    for mode, run_dir in runs.items():
        last = json.loads((run_dir / "ledger.jsonl").read_text().splitlines()[-1])
        final = final_learner(run_dir)
        assert final.param_digest() == last["param_digest"]
        assert final.unsafe_mix is (mode == "unsafe_mix")
        replay = primary_only_learner(run_dir)
        assert replay.unsafe_mix is False and replay.updates == final.updates == 10
        assert (replay.param_digest() == last["param_digest"]) is (mode == "amal")


def test_real_transitions_are_reproducible_and_real() -> None:
    a = real_transitions("CartPole-v1", seed=3, count=150)
    b = real_transitions("CartPole-v1", seed=3, count=150)
    c = real_transitions("CartPole-v1", seed=4, count=150)
    assert set(a) == {"obs", "action", "reward", "next_obs"}
    assert a["obs"].shape == (150, 4) and a["obs"].dtype == torch.float32
    assert a["action"].shape == (150,) and a["action"].dtype == torch.int64
    assert a["reward"].shape == (150,) and a["next_obs"].shape == (150, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["obs"], c["obs"])
    assert set(a["action"].tolist()) == {0, 1}

    # The documented procedure, stepped by hand in the real environment and in an auxiliary one.
    def collect(env: Any) -> tuple[np.ndarray, int]:
        streams = RunStreams(3)
        actions, episodes = streams.numpy_generator(ACTION_STREAM), streams.numpy_generator(EPISODE_STREAM)
        env.reset(seed=int(episodes.integers(2**31)))
        rows: list[np.ndarray] = []
        resets = 0
        while len(rows) < 150:
            next_obs, _, terminated, truncated, _ = env.step(int(actions.integers(2)))
            rows.append(np.asarray(next_obs, dtype=np.float32))
            if terminated or truncated:
                env.reset(seed=int(episodes.integers(2**31)))
                resets += 1
        return np.stack(rows), resets

    real, resets = collect(make_env("CartPole-v1"))
    assert resets >= 2  # several episodes, each reset from the episode stream
    assert np.array_equal(real, a["next_obs"].numpy())
    aux, _ = collect(make_aux_env("CartPole-v1", seed=0))
    assert not np.allclose(aux, a["next_obs"].numpy())


def test_real_transitions_continuous_actions() -> None:
    t = real_transitions("Pendulum-v1", seed=0, count=20)
    assert t["action"].shape == (20, 1) and t["action"].dtype == torch.float32
    assert bool((t["action"].abs() <= 2.0).all()) and t["action"].unique().numel() == 20


def test_kl_is_zero_for_itself_and_positive_for_a_perturbed_copy(
    runs: dict[str, Path], held_out: dict[str, torch.Tensor]
) -> None:
    model = final_learner(runs["amal"])
    same = isolation_metrics(model, model, held_out)
    assert same.identical and same.param_l2 == 0.0 and same.kl_mean == 0.0 and same.kl_max == 0.0
    copy = final_learner(runs["amal"])
    with torch.no_grad():
        next(copy.model.parameters()).view(-1)[0] += 1e-3
    moved = isolation_metrics(model, copy, held_out)
    assert not moved.identical
    assert moved.param_l2 == pytest.approx(1e-3, rel=1e-3) and moved.param_max_abs == moved.param_l2
    assert moved.kl_mean > 0.0 and moved.kl_max > 0.0
    # The closed form: exactly 0 for identical moments of any scale, and the textbook value otherwise.
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(50, 5, generator=g, dtype=torch.float64) * 1e3
    var = torch.rand(50, 5, generator=g, dtype=torch.float64) * 1e-6 + 1e-12
    assert bool((_kl(mean, var, mean.clone(), var.clone()) == 0.0).all())

    def f64(x: float) -> torch.Tensor:
        return torch.full((1, 1), x, dtype=torch.float64)

    kl = _kl(f64(1.0), f64(2.0), f64(0.0), f64(4.0))
    expected = 0.5 * (np.log(4.0 / 2.0) + (2.0 + 1.0) / 4.0 - 1.0)
    assert float(kl[0]) == pytest.approx(expected, rel=1e-12)


def test_prediction_error_matches_its_definition(
    runs: dict[str, Path], held_out: dict[str, torch.Tensor]
) -> None:
    learner = final_learner(runs["unsafe_mix"])  # trained on auxiliary data: so are its predictions
    err = prediction_error(learner, held_out)
    pred = learner.predict(held_out["obs"], held_out["action"])
    obs_mse = (pred.next_obs_mean.mean(0)[:, 0] - held_out["next_obs"]).pow(2).mean()
    nll = learner.model.nll(pred, held_out["next_obs"].unsqueeze(1), held_out["reward"].unsqueeze(1))
    with av.declassify(reason="the test compares the measurement with its definition"):
        assert err.next_obs_mse == pytest.approx(float(obs_mse), rel=1e-5)
        assert err.nll == pytest.approx(float(nll.mean()), rel=1e-5)
    assert err.reward_mse >= 0.0 and err.transitions == 400


def test_errors_name_the_file(
    runs: dict[str, Path], held_out: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="no such run directory"):
        measure_run(tmp_path / "missing", transitions=held_out)

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(runs["amal"], target)
        return target

    running = copy("running")
    status = json.loads((running / "run.json").read_text())
    (running / "run.json").write_text(json.dumps({**status, "status": "running"}))
    with pytest.raises(ValueError, match=r"run\.json: the run is not complete"):
        primary_only_learner(running)
    with pytest.raises(ValueError, match=r"run\.json: the run is not complete"):
        final_learner(running)

    no_checkpoint = copy("no-checkpoint")
    (no_checkpoint / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match=r"no checkpoint at .*checkpoint\.pt"):
        measure_run(no_checkpoint, transitions=held_out)

    corrupt = copy("corrupt")
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"checkpoint\.pt is corrupt"):
        final_learner(corrupt)

    bad_config = copy("bad-config")
    (bad_config / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        final_learner(bad_config)

    no_data = copy("no-data")
    chunk = sorted((no_data / "data").glob("primary-*.pt"))[0]
    chunk.unlink()
    with pytest.raises(ValueError, match=rf"{chunk.name}: file missing"):
        primary_only_learner(no_data)

    with pytest.raises(ValueError, match=r"obs has shape \(10, 3\)"):
        prediction_error(final_learner(runs["amal"]), real_transitions("Pendulum-v1", seed=0, count=10))


def test_non_finite_predictions_are_named(runs: dict[str, Path], held_out: dict[str, torch.Tensor]) -> None:
    learner = final_learner(runs["amal"])
    broken = WorldModelLearner(learner.spec, RunStreams(0))
    with torch.no_grad():
        for name, parameter in broken.model.named_parameters():
            if name == "head.bias":
                parameter.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"predicts non-finite values .* on 400 of the 400"):
        prediction_error(broken, held_out)
    with pytest.raises(ValueError, match="primary_only: the world model has non-finite parameters"):
        isolation_metrics(learner, broken, held_out)


def test_primary_sample_is_evenly_spaced_and_capped() -> None:
    from amal_tools.bench.isolation import _primary_sample

    from amal_verified.record.primary_log import PrimaryStream

    count = 10
    tensors = {
        "obs": torch.arange(count, dtype=torch.float32).unsqueeze(1),
        "action": torch.arange(count),
        "reward": torch.zeros(count),
        "next_obs": torch.zeros(count, 1),
        "terminated": torch.zeros(count, dtype=torch.bool),
    }
    stream = PrimaryStream(tensors, count, ())
    assert _primary_sample(stream, 4)["action"].tolist() == [0, 2, 5, 7]  # i * 10 // 4
    assert _primary_sample(stream, 100)["action"].tolist() == list(range(count))
    assert set(_primary_sample(stream, 4)) == {"obs", "action", "reward", "next_obs"}
