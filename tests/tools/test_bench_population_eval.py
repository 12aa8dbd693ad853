"""``amal_tools.bench.population_eval.evaluate_population``: bit-identity across modes, seeding, errors."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from amal_tools.bench.population_eval import evaluate_population

from amal_verified.agents.cem import FlatMLPPolicy
from amal_verified.envs import make_env


def _pendulum() -> tuple[FlatMLPPolicy, torch.Tensor]:
    policy = FlatMLPPolicy(3, 1, (16,), action_scale=2.0)
    return policy, policy.init_params(3, generator=torch.Generator().manual_seed(0))


def _cartpole() -> tuple[FlatMLPPolicy, torch.Tensor]:
    policy = FlatMLPPolicy(4, 2, (16,), discrete=True)
    # Episodes of different lengths per candidate: exercises resets and idle stepping.
    return policy, policy.init_params(4, generator=torch.Generator().manual_seed(1), scale=3.0)


@pytest.mark.parametrize(("env_id", "make"), [("Pendulum-v1", _pendulum), ("CartPole-v1", _cartpole)])
def test_all_modes_bit_identical(env_id: str, make: object) -> None:
    policy, params = make()  # type: ignore[operator]
    results = {
        mode: evaluate_population(policy, params, env_id, episodes=2, seed=7, vector=mode)
        for mode in ("sequential", "sync", "async")
    }
    reference = results["sequential"]
    assert reference.dtype == torch.float64
    assert reference.shape == (params.shape[0],)
    assert torch.isfinite(reference).all()
    for mode, result in results.items():
        assert torch.equal(result, reference), mode
    if env_id == "CartPole-v1":
        assert len(set(reference.tolist())) > 1  # episodes really had different lengths


def test_episode_j_is_seeded_seed_plus_j_for_every_candidate() -> None:
    policy, params = _cartpole()
    seed = 11
    full = evaluate_population(policy, params, "CartPole-v1", episodes=2, seed=seed, vector="sync")
    for i in range(params.shape[0]):
        # By hand: candidate i, its own env, episodes seeded seed + j.
        env = make_env("CartPole-v1")
        returns = []
        for j in range(2):
            obs, _ = env.reset(seed=seed + j)
            total, done = 0.0, False
            while not done:
                action = policy.act(params[i : i + 1], torch.from_numpy(obs).reshape(1, 1, -1))
                obs, reward, terminated, truncated, _ = env.step(int(action[0, 0]))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        env.close()
        assert full[i].item() == np.mean(returns)
        # Independent of the candidate's index and of P.
        alone = evaluate_population(
            policy, params[i : i + 1], "CartPole-v1", episodes=2, seed=seed, vector="sequential"
        )
        assert torch.equal(alone, full[i : i + 1])


def test_seed_changes_result_and_repeats_exactly() -> None:
    policy, params = _pendulum()
    a = evaluate_population(policy, params, "Pendulum-v1", episodes=1, seed=0, vector="sync")
    b = evaluate_population(policy, params, "Pendulum-v1", episodes=1, seed=0, vector="sync")
    c = evaluate_population(policy, params, "Pendulum-v1", episodes=1, seed=1, vector="sync")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_generators_untouched() -> None:
    policy, params = _pendulum()

    def seed_all() -> None:
        random.seed(123)
        np.random.seed(123)
        torch.manual_seed(123)

    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_all()
    expected = draw()
    seed_all()
    for mode in ("sequential", "sync", "async"):
        evaluate_population(policy, params, "Pendulum-v1", episodes=1, seed=0, vector=mode)
    assert draw() == expected


def test_float64_params_and_input_not_modified() -> None:
    policy, params = _pendulum()
    params64 = params.double()
    copy = params64.clone()
    out = evaluate_population(policy, params64, "Pendulum-v1", episodes=1, seed=0, vector="sequential")
    assert torch.equal(params64, copy)
    assert out.shape == (3,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p[:, :-1], r"params must have shape \(P, "),
        (lambda p: p[:0], r"P >= 1"),
        (lambda p: p[0], r"params must have shape"),
        (lambda p: p.to(torch.int64), "floating point"),
        (
            lambda p: p.index_put((torch.tensor([1]), torch.tensor([0])), torch.tensor(float("nan"))),
            r"candidates \[1\]",
        ),
        (lambda p: p.index_put((torch.tensor([2]), torch.tensor([3])), torch.tensor(float("inf"))), "finite"),
    ],
)
def test_bad_params(change: object, message: str) -> None:
    policy, params = _pendulum()
    with pytest.raises(ValueError, match=message):
        evaluate_population(policy, change(params), "Pendulum-v1", episodes=1, seed=0, vector="sequential")  # type: ignore[operator]


def test_bad_arguments() -> None:
    policy, params = _pendulum()
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate_population(policy, params, "Pendulum-v1", episodes=0, seed=0, vector="sync")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        evaluate_population(policy, params, "Pendulum-v1", episodes=1, seed=-1, vector="sync")
    with pytest.raises(ValueError, match="obs_dim 4"):
        evaluate_population(policy, params, "CartPole-v1", episodes=1, seed=0, vector="sync")
    wrong_actions = FlatMLPPolicy(3, 1, (16,), discrete=True)
    with pytest.raises(ValueError, match="discrete"):
        evaluate_population(
            wrong_actions,
            torch.zeros(2, wrong_actions.num_params),
            "Pendulum-v1",
            episodes=1,
            seed=0,
            vector="sync",
        )
    with pytest.raises(ValueError, match="unknown environment id"):
        evaluate_population(policy, params, "NoSuchEnv-v0", episodes=1, seed=0, vector="sync")
    with pytest.raises(TypeError):
        evaluate_population(policy, params, "Pendulum-v1", episodes=1, seed=0, vector="parallel")  # type: ignore[arg-type]
