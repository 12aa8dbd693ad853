"""The combinatorial tasks: generators, constructive environments, references and heuristics."""

from __future__ import annotations

import itertools
import random
import sys
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from amal_verified.envs import cvrp, jss, knapsack, make_env, task_info, tsp

COMBINATORIAL_IDS = (
    "amal/TSP-200-v0",
    "amal/TSP-20-v0",
    "amal/CVRP-100-v0",
    "amal/CVRP-20-v0",
    "amal/JSS-50-v0",
    "amal/JSS-10-v0",
    "amal/KP-1000-v0",
    "amal/KP-50-v0",
)

# Small environments of every task and both distributions: (factory, solution info key, sign of
# the objective in the return, module).
SMALL_ENVS: dict[str, tuple[Callable[[], gym.Env[Any, Any]], str, str, float, Any]] = {
    "tsp": (lambda: tsp.TSPEnv(num_cities=8), "tour", "tour_length", -1.0, tsp),
    "tsp-clustered": (
        lambda: tsp.TSPEnv(num_cities=8, distribution="clustered"),
        "tour",
        "tour_length",
        -1.0,
        tsp,
    ),
    "cvrp": (lambda: cvrp.CVRPEnv(num_customers=8), "routes", "total_distance", -1.0, cvrp),
    "cvrp-clustered": (
        lambda: cvrp.CVRPEnv(num_customers=8, distribution="clustered"),
        "routes",
        "total_distance",
        -1.0,
        cvrp,
    ),
    "jss": (lambda: jss.JobShopEnv(num_jobs=4, num_machines=3), "start_times", "makespan", -1.0, jss),
    "jss-bimodal": (
        lambda: jss.JobShopEnv(num_jobs=4, num_machines=3, distribution="bimodal"),
        "start_times",
        "makespan",
        -1.0,
        jss,
    ),
    "kp": (lambda: knapsack.KnapsackEnv(num_items=10), "selected", "value", 1.0, knapsack),
    "kp-correlated": (
        lambda: knapsack.KnapsackEnv(num_items=10, distribution="correlated"),
        "selected",
        "value",
        1.0,
        knapsack,
    ),
}


def _run_episode(
    env: gym.Env[Any, Any], seed: int, action_seed: int, options: dict[str, Any] | None = None
) -> tuple[list[Any], list[float], list[tuple[bool, bool]], dict[str, Any]]:
    """Random actions (from their own generator) until the episode ends."""
    actions = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed, options=options)
    observations, rewards, flags = [obs], [], []
    assert isinstance(env.action_space, gym.spaces.Discrete)
    n = int(env.action_space.n)
    for _ in range(10_000):
        obs, reward, terminated, truncated, info = env.step(int(actions.integers(n)))
        assert env.observation_space.contains(obs)
        observations.append(obs)
        rewards.append(float(reward))
        flags.append((terminated, truncated))
        if terminated or truncated:
            return observations, rewards, flags, info
    raise AssertionError("episode did not end")


@pytest.mark.parametrize("name", sorted(SMALL_ENVS))
def test_check_env_passes(name: str) -> None:
    env = SMALL_ENVS[name][0]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns that a directly built env has no spec
        check_env(env, skip_render_check=True)


@pytest.mark.parametrize("env_id", COMBINATORIAL_IDS)
def test_make_env_and_task_info_for_every_id(env_id: str) -> None:
    info = task_info(env_id)
    assert info.discrete
    env = make_env(env_id)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.dtype == np.float32
        assert obs.shape == (info.obs_dim,)
        assert isinstance(env.action_space, gym.spaces.Discrete)
        assert int(env.action_space.n) == info.action_dim
        for action in range(3):
            obs, reward, _, truncated, step_info = env.step(action)
            assert obs.shape == (info.obs_dim,)
            assert np.isfinite(float(reward))
            assert not truncated
            assert "invalid_action" in step_info
            assert np.all((obs >= 0.0) & (obs <= 1.0))
    finally:
        env.close()


def test_registered_sizes() -> None:
    sizes = {
        "amal/TSP-200-v0": 4 * 200,
        "amal/CVRP-100-v0": 5 * 100 + 4,
        "amal/JSS-50-v0": 50 * (10 + 5) + 10 + 1,
        "amal/KP-1000-v0": 4 * 1000 + 1,
    }
    for env_id, obs_dim in sizes.items():
        assert task_info(env_id).obs_dim == obs_dim
    assert task_info("amal/CVRP-20-v0").action_dim == 21
    assert task_info("amal/JSS-10-v0").action_dim == 10
    bounds = {"amal/TSP-20-v0": 19, "amal/CVRP-20-v0": 39, "amal/JSS-10-v0": 50, "amal/KP-50-v0": 50}
    for env_id, bound in bounds.items():
        assert task_info(env_id).max_episode_steps == bound


@pytest.mark.parametrize("name", sorted(SMALL_ENVS))
def test_same_seed_gives_bit_identical_trajectory(name: str) -> None:
    factory = SMALL_ENVS[name][0]
    first = _run_episode(factory(), seed=7, action_seed=1)
    second = _run_episode(factory(), seed=7, action_seed=1)
    assert len(first[0]) == len(second[0])
    for a, b in zip(first[0], second[0], strict=True):
        assert a.dtype == b.dtype == np.float32
        assert a.tobytes() == b.tobytes()
    assert first[1] == second[1]
    assert first[2] == second[2]


@pytest.mark.parametrize("env_id", ["amal/TSP-20-v0", "amal/CVRP-20-v0", "amal/JSS-10-v0", "amal/KP-50-v0"])
def test_make_env_episodes_are_reproducible(env_id: str) -> None:
    first = _run_episode(make_env(env_id), seed=11, action_seed=5)
    second = _run_episode(make_env(env_id), seed=11, action_seed=5)
    assert [o.tobytes() for o in first[0]] == [o.tobytes() for o in second[0]]
    assert first[1:3] == second[1:3]
    bound = task_info(env_id).max_episode_steps
    assert bound is not None
    assert len(first[1]) <= bound


@pytest.mark.parametrize("name", sorted(SMALL_ENVS))
def test_different_seeds_give_different_instances(name: str) -> None:
    env = SMALL_ENVS[name][0]()
    obs_a, _ = env.reset(seed=1)
    obs_b, _ = env.reset(seed=2)
    obs_c, _ = env.reset(seed=1)
    assert obs_a.tobytes() != obs_b.tobytes()
    assert obs_a.tobytes() == obs_c.tobytes()


@pytest.mark.parametrize("name", sorted(SMALL_ENVS))
def test_global_rngs_are_untouched(name: str) -> None:
    env = SMALL_ENVS[name][0]()
    np_state = np.random.get_state()
    py_state = random.getstate()
    _run_episode(env, seed=3, action_seed=3)
    after = np.random.get_state()
    assert all(np.array_equal(a, b) for a, b in zip(np_state, after, strict=True))
    assert random.getstate() == py_state


@pytest.mark.parametrize("name", sorted(SMALL_ENVS))
def test_return_equals_objective_of_the_episode_solution(name: str) -> None:
    factory, solution_key, objective_key, sign, module = SMALL_ENVS[name]
    env = factory()
    for seed in range(5):
        _, rewards, flags, info = _run_episode(env, seed=seed, action_seed=100 + seed)
        assert flags[-1] == (True, False)
        objective = module.validate_solution(env.unwrapped.instance, info[solution_key])  # type: ignore[attr-defined]
        assert info[objective_key] == objective
        assert sum(rewards) == pytest.approx(sign * objective, rel=1e-12, abs=1e-12)


def test_episode_lengths_are_bounded() -> None:
    for seed in range(5):
        env_t = tsp.TSPEnv(num_cities=8)
        assert len(_run_episode(env_t, seed, seed)[1]) == 7
        env_c = cvrp.CVRPEnv(num_customers=8)
        assert len(_run_episode(env_c, seed, seed)[1]) <= 2 * 8 - 1
        env_j = jss.JobShopEnv(num_jobs=4, num_machines=3)
        assert len(_run_episode(env_j, seed, seed)[1]) == 12
        env_k = knapsack.KnapsackEnv(num_items=10)
        assert len(_run_episode(env_k, seed, seed)[1]) <= 10


def test_tsp_invalid_action_takes_lowest_unvisited_city() -> None:
    env = tsp.TSPEnv(num_cities=5)
    env.reset(seed=0)
    obs, _, _, _, info = env.step(3)
    assert not info["invalid_action"]
    obs, _, _, _, info = env.step(0)  # city 0 is the start, visited
    assert info["invalid_action"]
    assert obs[3 * 5 + 1] == 1.0  # now at city 1
    obs, _, _, _, info = env.step(3)
    assert info["invalid_action"]
    assert obs[3 * 5 + 2] == 1.0
    _, _, terminated, _, info = env.step(2)
    assert info["invalid_action"]
    assert terminated
    assert info["tour"].tolist() == [0, 3, 1, 2, 4]


def test_cvrp_invalid_action_takes_lowest_valid_node() -> None:
    instance = cvrp.CVRPInstance(
        depot=np.array([0.5, 0.5]),
        customers=np.array([[0.1, 0.1], [0.9, 0.9], [0.1, 0.9]]),
        demands=np.array([6, 5, 4]),
        capacity=10,
    )
    env = cvrp.CVRPEnv(num_customers=3)
    env.reset(seed=0, options={"instance": instance})
    _, _, _, _, info = env.step(0)  # depot while at the depot: lowest valid is customer 1
    assert info["invalid_action"]
    _, _, _, _, info = env.step(2)  # customer 2 (demand 5) does not fit the remaining 4
    assert info["invalid_action"]  # -> the depot
    _, _, _, _, info = env.step(1)  # already served -> lowest valid: customer 2
    assert info["invalid_action"]
    _, _, terminated, _, info = env.step(3)  # remaining 5 - 4 fits; all served: done
    assert not info["invalid_action"]
    assert terminated
    assert info["routes"].tolist() == [0, 1, 0, 2, 3, 0]
    assert info["total_distance"] == cvrp.validate_solution(instance, info["routes"])


def test_jss_invalid_action_takes_lowest_unfinished_job() -> None:
    instance = jss.JobShopInstance(machines=np.array([[0], [0], [0]]), durations=np.array([[3], [4], [5]]))
    env = jss.JobShopEnv(num_jobs=3, num_machines=1)
    env.reset(seed=0, options={"instance": instance})
    _, reward, _, _, info = env.step(1)
    assert (reward, info["invalid_action"]) == (-4.0, False)
    _, reward, _, _, info = env.step(1)  # job 1 finished -> job 0
    assert (reward, info["invalid_action"]) == (-3.0, True)
    _, reward, terminated, _, info = env.step(0)
    assert (reward, info["invalid_action"], terminated) == (-5.0, True, True)
    assert info["start_times"].tolist() == [[4], [0], [7]]
    assert info["makespan"] == 12.0


def test_knapsack_invalid_action_takes_lowest_fitting_item() -> None:
    instance = knapsack.KnapsackInstance(
        weights=np.array([50, 10, 10, 5]), values=np.array([100, 1, 2, 3]), capacity=20
    )
    env = knapsack.KnapsackEnv(num_items=4)
    obs, _ = env.reset(seed=0, options={"instance": instance})
    assert obs[12:16].tolist() == [0.0, 1.0, 1.0, 1.0]  # fits mask
    _, reward, _, _, info = env.step(0)  # too heavy -> item 1
    assert (reward, info["invalid_action"]) == (1.0, True)
    _, reward, terminated, _, info = env.step(1)  # taken -> item 2
    assert (reward, info["invalid_action"]) == (2.0, True)
    assert terminated  # remaining capacity 0: nothing fits
    assert info["value"] == 3.0
    assert info["selected"].tolist() == [False, True, True, False]
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(3)


def test_knapsack_episode_ends_when_nothing_fits() -> None:
    instance = knapsack.KnapsackInstance(
        weights=np.array([15, 10, 6]), values=np.array([5, 4, 3]), capacity=20
    )
    env = knapsack.KnapsackEnv(num_items=3)
    env.reset(seed=0, options={"instance": instance})
    _, _, terminated, _, _ = env.step(0)  # remaining 5: nothing fits
    assert terminated


def test_step_errors() -> None:
    env = tsp.TSPEnv(num_cities=3)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(3)
    with pytest.raises(TypeError, match="integer"):
        env.step(1.0)
    env.step(np.int64(1))
    env.step(np.array(2))
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(0)


def _brute_force_knapsack(instance: knapsack.KnapsackInstance) -> float:
    best = 0
    for mask in itertools.product([False, True], repeat=instance.num_items):
        chosen = np.array(mask)
        if instance.weights[chosen].sum() <= instance.capacity:
            best = max(best, int(instance.values[chosen].sum()))
    return float(best)


def test_knapsack_dp_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(2, 13))
        distribution = knapsack.DISTRIBUTIONS[trial % 2]
        instance = knapsack.generate_instance(n, rng, distribution)
        reference = knapsack.reference_solution(instance)
        assert reference.optimal
        assert reference.objective == _brute_force_knapsack(instance)
        assert knapsack.validate_solution(instance, reference.solution) == reference.objective
        assert knapsack.heuristic_solution(instance).objective <= reference.objective


def test_knapsack_dp_with_heavy_items_and_zero_capacity() -> None:
    instance = knapsack.KnapsackInstance(weights=np.array([5, 30, 7]), values=np.array([1, 9, 2]), capacity=0)
    assert knapsack.reference_solution(instance).objective == 0.0
    instance = knapsack.KnapsackInstance(
        weights=np.array([5, 30, 7]), values=np.array([1, 90, 2]), capacity=12
    )
    assert knapsack.reference_solution(instance).solution.tolist() == [True, False, True]


def test_tsp_reference_is_optimal_on_a_tiny_instance() -> None:
    instance = tsp.generate_instance(7, np.random.default_rng(3))
    best = min(
        tsp.tour_length(instance.coords, np.array([0, *perm])) for perm in itertools.permutations(range(1, 7))
    )
    reference = tsp.reference_solution(instance, solution_limit=100)
    assert reference.objective == pytest.approx(best, rel=1e-6)
    assert tsp.heuristic_solution(instance).objective >= best - 1e-12


def test_tsp_reference_no_worse_than_two_opt() -> None:
    rng = np.random.default_rng(1)
    for distribution in tsp.DISTRIBUTIONS:
        instance = tsp.generate_instance(20, rng, distribution)
        heuristic = tsp.heuristic_solution(instance)
        reference = tsp.reference_solution(instance, solution_limit=100)
        assert tsp.validate_solution(instance, reference.solution) == reference.objective
        assert reference.objective <= heuristic.objective * (1 + 1e-9)
        assert not reference.optimal


def test_cvrp_reference_no_worse_than_nearest_neighbour() -> None:
    rng = np.random.default_rng(2)
    for distribution in cvrp.DISTRIBUTIONS:
        instance = cvrp.generate_instance(20, rng, distribution)
        heuristic = cvrp.heuristic_solution(instance)
        reference = cvrp.reference_solution(instance, solution_limit=100)
        assert cvrp.validate_solution(instance, reference.solution) == reference.objective
        assert reference.objective <= heuristic.objective * (1 + 1e-9)


def test_jss_reference_is_proved_optimal_on_small_instances() -> None:
    rng = np.random.default_rng(3)
    for distribution in jss.DISTRIBUTIONS:
        instance = jss.generate_instance(10, 5, rng, distribution)
        heuristic = jss.heuristic_solution(instance)
        reference = jss.reference_solution(instance, time_limit_s=30.0)
        assert jss.validate_solution(instance, reference.solution) == reference.objective
        assert reference.optimal
        assert reference.objective <= heuristic.objective
        # No schedule beats the longest job or the busiest machine.
        lower = max(
            instance.durations.sum(axis=1).max(),
            np.bincount(instance.machines.ravel(), weights=instance.durations.ravel()).max(),
        )
        assert reference.objective >= lower


def test_reference_solutions_are_deterministic() -> None:
    rng = np.random.default_rng(4)
    instance_t = tsp.generate_instance(15, rng)
    first = tsp.reference_solution(instance_t, solution_limit=50)
    assert np.array_equal(first.solution, tsp.reference_solution(instance_t, solution_limit=50).solution)
    instance_j = jss.generate_instance(6, 4, rng)
    first_j = jss.reference_solution(instance_j)
    assert np.array_equal(first_j.solution, jss.reference_solution(instance_j).solution)


def test_generators_are_seeded_and_in_range() -> None:
    a = cvrp.generate_instance(50, np.random.default_rng(5))
    b = cvrp.generate_instance(50, np.random.default_rng(5))
    assert np.array_equal(a.customers, b.customers)
    assert np.array_equal(a.demands, b.demands)
    assert a.capacity == 40
    assert a.demands.min() >= 1
    assert a.demands.max() <= 9
    assert [cvrp.default_capacity(n) for n in (10, 20, 21, 50, 100, 500)] == [30, 30, 40, 40, 50, 50]
    j = jss.generate_instance(20, 6, np.random.default_rng(6))
    assert j.durations.min() >= 1
    assert j.durations.max() <= 99
    bimodal = jss.generate_instance(20, 6, np.random.default_rng(6), "bimodal")
    durations = bimodal.durations
    assert np.all((durations <= 20) | (durations >= 80))
    k = knapsack.generate_instance(200, np.random.default_rng(7))
    assert k.capacity == int(k.weights.sum()) // 4
    assert k.values.min() >= 1
    assert k.values.max() <= 100
    corr = knapsack.generate_instance(200, np.random.default_rng(7), "correlated")
    assert np.array_equal(corr.values, corr.weights + 10)
    clustered = tsp.generate_instance(100, np.random.default_rng(8), "clustered")
    assert clustered.coords.min() >= 0.0
    assert clustered.coords.max() <= 1.0
    assert not clustered.coords.flags.writeable


def test_env_uses_the_given_distribution() -> None:
    env = knapsack.KnapsackEnv(num_items=20, distribution="correlated")
    env.reset(seed=0)
    instance = env.instance
    assert np.array_equal(instance.values, instance.weights + 10)
    made = make_env("amal/KP-50-v0", distribution="correlated")  # the benchmark's shift
    made.reset(seed=0)
    shifted = made.unwrapped.instance  # type: ignore[attr-defined]
    assert np.array_equal(shifted.values, shifted.weights + 10)


def test_validate_solution_rejects_infeasible_solutions() -> None:
    t = tsp.generate_instance(5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="exactly once"):
        tsp.validate_solution(t, np.array([0, 1, 1, 2, 3]))
    with pytest.raises(ValueError, match="start at city 0"):
        tsp.validate_solution(t, np.array([1, 0, 2, 3, 4]))
    with pytest.raises(ValueError, match="shape"):
        tsp.validate_solution(t, np.array([0, 1, 2, 3]))
    c = cvrp.CVRPInstance(np.array([0.5, 0.5]), np.array([[0.1, 0.1], [0.9, 0.9]]), np.array([6, 5]), 10)
    with pytest.raises(ValueError, match="capacity"):
        cvrp.validate_solution(c, np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="exactly once"):
        cvrp.validate_solution(c, np.array([0, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match="empty route"):
        cvrp.validate_solution(c, np.array([0, 1, 0, 0, 2, 0]))
    with pytest.raises(ValueError, match="depot"):
        cvrp.validate_solution(c, np.array([1, 0, 2, 0]))
    assert cvrp.validate_solution(c, np.array([0, 1, 0, 2, 0])) > 0.0
    j = jss.JobShopInstance(np.array([[0, 1], [1, 0]]), np.array([[2, 3], [4, 1]]))
    with pytest.raises(ValueError, match="overlap"):
        jss.validate_solution(j, np.array([[0, 2], [0, 5]]))
    with pytest.raises(ValueError, match="previous operation"):
        jss.validate_solution(j, np.array([[0, 1], [0, 6]]))
    with pytest.raises(ValueError, match=">= 0"):
        jss.validate_solution(j, np.array([[-1, 4], [0, 6]]))
    assert jss.validate_solution(j, np.array([[0, 4], [0, 4]])) == 7.0
    k = knapsack.KnapsackInstance(np.array([5, 6]), np.array([1, 2]), 10)
    with pytest.raises(ValueError, match="capacity"):
        knapsack.validate_solution(k, np.array([True, True]))


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: tsp.TSPEnv(num_cities=1), ValueError, "num_cities must be >= 2"),
        (lambda: tsp.TSPEnv(num_cities=True), TypeError, "num_cities must be an int"),
        (lambda: tsp.TSPEnv(num_cities=5, distribution="gaussian"), ValueError, "uniform, clustered"),
        (lambda: cvrp.CVRPEnv(num_customers=0), ValueError, "num_customers must be >= 2"),
        (lambda: jss.JobShopEnv(num_jobs=1, num_machines=3), ValueError, "num_jobs must be >= 2"),
        (lambda: jss.JobShopEnv(num_jobs=3, num_machines=0), ValueError, "num_machines must be >= 1"),
        (lambda: knapsack.KnapsackEnv(num_items=1), ValueError, "num_items must be >= 2"),
        (lambda: knapsack.KnapsackEnv(num_items=5, distribution="x"), ValueError, "correlated"),
        (lambda: tsp.generate_instance(1, np.random.default_rng(0)), ValueError, ">= 2"),
        (lambda: jss.generate_instance(3, 3, np.random.default_rng(0), "uniform"), ValueError, "taillard"),
        (
            lambda: tsp.reference_solution(
                tsp.generate_instance(3, np.random.default_rng(0)), time_limit_s=0.0
            ),
            ValueError,
            "time_limit_s",
        ),
    ],
)
def test_bad_arguments_raise_clearly(
    factory: Callable[[], object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        factory()


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: tsp.TSPInstance(np.zeros((5, 3))), "shape"),
        (lambda: tsp.TSPInstance(np.full((5, 2), np.nan)), "NaN"),
        (lambda: tsp.TSPInstance(np.full((5, 2), 2.0)), "unit square"),
        (lambda: cvrp.CVRPInstance(np.zeros(2), np.zeros((3, 2)), np.array([1, 2, 11]), 10), "1..capacity"),
        (lambda: cvrp.CVRPInstance(np.zeros(2), np.zeros((3, 2)), np.array([1, 2]), 10), "demands must"),
        (lambda: jss.JobShopInstance(np.array([[0, 0], [0, 1]]), np.ones((2, 2), int)), "permutation"),
        (lambda: jss.JobShopInstance(np.array([[0, 1], [1, 0]]), np.zeros((2, 2), int)), ">= 1"),
        (lambda: knapsack.KnapsackInstance(np.array([1, 0]), np.array([1, 1]), 3), "weights must be >= 1"),
        (lambda: knapsack.KnapsackInstance(np.array([1, 2]), np.array([1]), 3), "values must have"),
    ],
)
def test_malformed_instances_raise(factory: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_instance_option_is_validated() -> None:
    env = tsp.TSPEnv(num_cities=5)
    with pytest.raises(TypeError, match="TSPInstance"):
        env.reset(seed=0, options={"instance": np.zeros((5, 2))})
    with pytest.raises(ValueError, match="3 cities, this env 5"):
        env.reset(seed=0, options={"instance": tsp.generate_instance(3, np.random.default_rng(0))})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(seed=0, options={"instanc": None})
    with pytest.raises(TypeError, match="TSPInstance"):
        env.reset(seed=0, options={"instance": cvrp.generate_instance(5, np.random.default_rng(0))})
    with pytest.raises(ValueError, match="4×3, this env 4×2"):
        jss.JobShopEnv(num_jobs=4, num_machines=2).reset(
            options={"instance": jss.generate_instance(4, 3, np.random.default_rng(0))}
        )
    empty = knapsack.KnapsackInstance(np.array([5, 6]), np.array([1, 2]), 4)
    with pytest.raises(ValueError, match="no item fits"):
        knapsack.KnapsackEnv(num_items=2).reset(options={"instance": empty})


def test_given_instance_is_played_as_is() -> None:
    instance = cvrp.generate_instance(8, np.random.default_rng(9))
    env = cvrp.CVRPEnv(num_customers=8)
    obs, _ = env.reset(seed=123, options={"instance": instance})
    assert env.instance is instance
    assert np.allclose(obs[2:18], instance.customers.reshape(-1).astype(np.float32))
    heuristic = cvrp.heuristic_solution(instance)
    # Replaying the heuristic's node sequence reproduces its distance as the return.
    total = 0.0
    for node in heuristic.solution[1:-1].tolist():
        _, reward, terminated, _, info = env.step(node)
        assert not info["invalid_action"]
        total += reward
    assert terminated
    assert total == pytest.approx(-heuristic.objective, rel=1e-12)


def test_missing_ortools_names_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ortools.constraint_solver", None)
    monkeypatch.setitem(sys.modules, "ortools.sat.python", None)
    with pytest.raises(ModuleNotFoundError, match="pip install -e tools"):
        tsp.reference_solution(tsp.generate_instance(4, np.random.default_rng(0)))
    with pytest.raises(ModuleNotFoundError, match="pip install -e tools"):
        jss.reference_solution(jss.generate_instance(3, 2, np.random.default_rng(0)))


def test_knapsack_dp_is_fast_at_full_size() -> None:
    instance = knapsack.generate_instance(1000, np.random.default_rng(10))
    reference = knapsack.reference_solution(instance)
    assert reference.objective >= knapsack.heuristic_solution(instance).objective
    assert knapsack.validate_solution(instance, reference.solution) == reference.objective


def test_reference_reports_a_wall_clock_stop() -> None:
    instance = tsp.generate_instance(30, np.random.default_rng(11))
    assert tsp.reference_solution(instance, solution_limit=20).method == "ortools_gls"
    limited = tsp.reference_solution(instance, time_limit_s=0.2, solution_limit=10**9)
    assert limited.method == "ortools_gls(time-limited)"
    assert tsp.validate_solution(instance, limited.solution) == limited.objective


@pytest.mark.slow
def test_references_at_full_size() -> None:
    rng = np.random.default_rng(12)
    instance_c = cvrp.generate_instance(100, rng)
    reference_c = cvrp.reference_solution(instance_c, solution_limit=200)
    assert cvrp.validate_solution(instance_c, reference_c.solution) == reference_c.objective
    assert reference_c.objective <= cvrp.heuristic_solution(instance_c).objective
    instance_j = jss.generate_instance(50, 10, rng)
    reference_j = jss.reference_solution(instance_j, deterministic_time_limit=2.0)
    assert jss.validate_solution(instance_j, reference_j.solution) == reference_j.objective
    assert reference_j.objective <= jss.heuristic_solution(instance_j).objective
    instance_t = tsp.generate_instance(200, rng)
    reference_t = tsp.reference_solution(instance_t, solution_limit=100)
    assert tsp.validate_solution(instance_t, reference_t.solution) == reference_t.objective
    # 100 GLS solutions need not beat 2-opt yet; they are close to it.
    assert reference_t.objective <= 1.05 * tsp.heuristic_solution(instance_t).objective
