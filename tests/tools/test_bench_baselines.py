"""The benchmark baselines (PPO, SAC, TD3, CEM-RL, PBT) keep the common training contract.

Tiny budgets on Pendulum-v1 and CartPole-v1: these check the contract (curve at exactly the requested
counts, finite returns, valid actions, JSON extras, same seed → same curve, NotApplicable, argument
errors, global state left alone), never learning quality or speed.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from amal_tools.bench.baselines import (
    METHODS,
    NotApplicable,
    train_cem_rl,
    train_pbt,
    train_ppo,
    train_sac,
    train_sb3,
    train_td3,
)
from amal_tools.bench.baselines._common import torch_threads
from amal_tools.bench.evaluation import TrainedPolicy, evaluate_policy, make_task_env
from amal_tools.bench.tasks import Shift, TaskSpec

# End to end: each test trains a baseline.
pytestmark = pytest.mark.slow

pytest.importorskip("stable_baselines3")

PENDULUM = TaskSpec(
    name="Pendulum",
    env_id="Pendulum-v1",
    family="continuous control",
    continuous=True,
    budgets={"quick": 400, "full": None},
    shift=Shift("none"),
)
CARTPOLE = TaskSpec(
    name="CartPole",
    env_id="CartPole-v1",
    family="partially observable",
    continuous=False,
    budgets={"quick": 400, "full": None},
    shift=Shift("none"),
)

Train = Callable[..., TrainedPolicy]

# (method, task, budget, eval_steps): the smallest budgets that still exercise every phase
# (SB3 updates after learning_starts / one PPO rollout; CEM-RL's second generation with TD3 steps;
# PBT's exploit after round one).
CASES: dict[str, tuple[Train, TaskSpec, int, tuple[int, ...]]] = {
    "ppo-cartpole": (train_ppo, CARTPOLE, 160, (50, 64, 160)),
    "ppo-pendulum": (train_ppo, PENDULUM, 70, (70,)),
    "sac-pendulum": (train_sac, PENDULUM, 60, (30, 60)),
    "td3-pendulum": (train_td3, PENDULUM, 60, (30, 60)),
    "cem_rl-pendulum": (train_cem_rl, PENDULUM, 480, (100, 400, 470, 480)),
    "pbt-cartpole": (train_pbt, CARTPOLE, 300, (7, 150, 300)),
    "pbt-pendulum": (train_pbt, PENDULUM, 96, (48, 96)),
}


def _run(case: str, seed: int = 3) -> TrainedPolicy:
    train, task, budget, steps = CASES[case]
    return train(task, seed=seed, budget=budget, eval_steps=steps, eval_episodes=1)


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[TrainedPolicy, TrainedPolicy]]:
    """Every case trained twice with the same seed."""
    return {case: (_run(case), _run(case)) for case in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_curve_has_exactly_the_requested_counts_and_finite_returns(
    runs: dict[str, tuple[TrainedPolicy, TrainedPolicy]], case: str
) -> None:
    result, _ = runs[case]
    assert tuple(p.step for p in result.curve) == CASES[case][3]
    assert all(len(p.returns) == 1 and math.isfinite(p.returns[0]) for p in result.curve)
    assert all(p.success is None for p in result.curve)
    assert result.train_seconds >= 0.0
    json.dumps(result.extras, allow_nan=False)
    assert 0 < result.extras["env_steps"] <= CASES[case][2]


@pytest.mark.parametrize("case", list(CASES))
def test_same_seed_gives_the_same_curve(
    runs: dict[str, tuple[TrainedPolicy, TrainedPolicy]], case: str
) -> None:
    first, second = runs[case]
    assert first.curve == second.curve


@pytest.mark.parametrize("case", list(CASES))
def test_act_gives_valid_actions_and_is_the_policy_evaluated_last(
    runs: dict[str, tuple[TrainedPolicy, TrainedPolicy]], case: str
) -> None:
    result, _ = runs[case]
    task = CASES[case][1]
    env = make_task_env(task)
    try:
        obs, _ = env.reset(seed=11)
        for _ in range(5):
            action = result.act(np.asarray(obs, dtype=np.float32))
            assert env.action_space.contains(action), action
            obs, *_ = env.step(action)
    finally:
        env.close()
    with torch_threads(1):  # as in training (threads=1): CPU matmuls round by their thread count
        again = evaluate_policy(task, result.act, run_seed=3, episodes=1)
    assert again.returns == result.curve[-1].returns


@pytest.mark.parametrize("case", ["sac-pendulum", "cem_rl-pendulum", "pbt-cartpole"])
def test_evaluations_do_not_perturb_training(
    runs: dict[str, tuple[TrainedPolicy, TrainedPolicy]], case: str
) -> None:
    """Evaluating at fewer counts changes nothing in the training: the final point is the same."""
    train, task, budget, _ = CASES[case]
    final_only = train(task, seed=3, budget=budget, eval_steps=[budget], eval_episodes=1)
    assert final_only.curve == runs[case][0].curve[-1:]


def test_sb3_runs_are_complete_and_record_their_hyperparameters(
    runs: dict[str, tuple[TrainedPolicy, TrainedPolicy]],
) -> None:
    ppo = runs["ppo-cartpole"][0].extras
    assert ppo["env_steps"] == 160
    assert ppo["hyperparameters"]["n_steps"] == 64
    assert ppo["hyperparameters"]["batch_size"] == 64
    td3 = runs["td3-pendulum"][0].extras
    assert td3["hyperparameters"]["learning_starts"] == 6
    assert td3["hyperparameters"]["policy_delay"] == 2
    assert "NormalActionNoise" in td3["hyperparameters"]["action_noise"]


def test_cem_rl_runs_generations_with_gradient_actors(
    runs: dict[str, tuple[TrainedPolicy, TrainedPolicy]],
) -> None:
    extras = runs["cem_rl-pendulum"][0].extras
    assert extras["generations"] == 2  # 8 x 50 steps, then 8 x 10 steps
    assert extras["env_steps"] == 480
    assert extras["critic_steps"] == 400 and extras["actor_steps"] == 200


def test_pbt_exploits_after_every_round_but_the_last(
    runs: dict[str, tuple[TrainedPolicy, TrainedPolicy]],
) -> None:
    extras = runs["pbt-cartpole"][0].extras
    history = extras["history"]
    assert len(history) == extras["rounds"] == 2
    assert len(history[0]["exploit"]) == 1 and history[-1]["exploit"] == []
    event = history[0]["exploit"][0]
    assert event["member"] == history[0]["ranking"][-1] and event["copied_from"] == history[0]["ranking"][0]


def test_different_seeds_give_different_curves() -> None:
    a = _run("ppo-pendulum", seed=1)
    b = _run("ppo-pendulum", seed=2)
    assert a.curve != b.curve


@pytest.mark.parametrize("train", [train_sac, train_td3, train_cem_rl])
def test_continuous_only_methods_are_not_applicable_to_discrete_actions(train: Train) -> None:
    with pytest.raises(NotApplicable, match="continuous"):
        train(CARTPOLE, seed=0, budget=100, eval_steps=[100], eval_episodes=1)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(
    ("budget", "eval_steps", "eval_episodes", "message"),
    [
        (0, [0], 1, "budget must be >= 1"),
        (100, [], 1, "at least one count"),
        (100, [50, 50, 100], 1, "strictly increasing"),
        (100, [60, 40, 100], 1, "strictly increasing"),
        (100, [50, 90], 1, "must end at budget 100"),
        (100, [0, 100], 1, "must be >= 1"),
        (100, [100], 0, "eval_episodes"),
    ],
)
def test_bad_arguments_are_refused(
    method: str, budget: int, eval_steps: list[int], eval_episodes: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        METHODS[method](PENDULUM, seed=0, budget=budget, eval_steps=eval_steps, eval_episodes=eval_episodes)


@pytest.mark.parametrize("method", list(METHODS))
def test_negative_seed_and_threads_are_refused(method: str) -> None:
    with pytest.raises(ValueError, match="seed"):
        METHODS[method](PENDULUM, seed=-1, budget=100, eval_steps=[100], eval_episodes=1)
    with pytest.raises(ValueError, match="threads"):
        METHODS[method](PENDULUM, seed=0, budget=100, eval_steps=[100], eval_episodes=1, threads=0)


def test_pbt_refuses_a_budget_too_small_for_its_population() -> None:
    with pytest.raises(ValueError, match="PBT needs a budget"):
        train_pbt(PENDULUM, seed=0, budget=20, eval_steps=[20], eval_episodes=1)


def test_unknown_sb3_algorithm_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        train_sb3("dqn", PENDULUM, seed=0, budget=10, eval_steps=[10], eval_episodes=1)  # type: ignore[arg-type]


def test_global_rng_states_and_torch_threads_are_left_alone() -> None:
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    states: tuple[Any, ...] = (random.getstate(), np.random.get_state(legacy=False), torch.get_rng_state())
    train_ppo(PENDULUM, seed=5, budget=64, eval_steps=[64], eval_episodes=1, threads=1)
    train_cem_rl(PENDULUM, seed=5, budget=16, eval_steps=[16], eval_episodes=1, threads=1)
    assert random.getstate() == states[0]
    np_after = np.random.get_state(legacy=False)
    assert np.array_equal(np_after["state"]["key"], states[1]["state"]["key"])
    assert np_after["state"]["pos"] == states[1]["state"]["pos"]
    assert torch.equal(torch.get_rng_state(), states[2])
    assert torch.get_num_threads() == threads
