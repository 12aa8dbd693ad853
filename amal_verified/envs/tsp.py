"""The travelling salesman task (paper §6.1, ``amal/TSP-200-v0`` and ``amal/TSP-20-v0``).

Instances (:func:`generate_instance`): ``n`` cities in the unit square, either ``"uniform"``
(i.i.d. uniform in [0,1]², as Kool et al. 2019) or the shifted ``"clustered"`` distribution
(3..7 centres uniform in [0.1,0.9]², each city Gaussian around a uniformly chosen centre with
std 0.05, clipped to the square).

Episodes (:class:`TSPEnv`): the tour starts at city 0, which is visited at reset; each step
appends one city.  Action ``Discrete(n)``: the next city.  An invalid action (an already visited
city) is replaced by the **lowest-index unvisited city** and the step's
``info["invalid_action"]`` is True.  Reward: minus the length of the edge just added; the last
step (the ``n``-th city) also adds the edge back to city 0, so the episode return is minus the
closed tour length.  Exactly ``n - 1`` steps per episode (the attribute ``max_steps``, which
:func:`amal_verified.envs.task_info` reports as ``max_episode_steps``).  Observation, 1-D float32 in [0,1] of
length ``4n``::

    [x_0, y_0, ..., x_{n-1}, y_{n-1} | visited mask (n) | one-hot current city (n)]

At termination ``info["tour_length"]`` is the tour length (:func:`tour_length`) and
``info["tour"]`` the tour (``int64``, a permutation of ``0..n-1`` starting at 0, without the
return to the start).  ``reset(options={"instance": inst})`` plays a given :class:`TSPInstance`
with ``n`` cities instead of drawing one.

Solutions: :func:`reference_solution` (OR-Tools routing, guided local search),
:func:`heuristic_solution` (nearest neighbour + 2-opt), :func:`validate_solution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from amal_verified.common.runtime_checks import checked
from amal_verified.envs._constructive import (
    TIME_LIMITED,
    Solution,
    check_count,
    check_distribution,
    clustered_points,
    distance_matrix,
    instance_option,
    lowest_valid,
    parse_action,
    read_only,
    solve_routing,
)

__all__ = [
    "DISTRIBUTIONS",
    "Solution",
    "TSPEnv",
    "TSPInstance",
    "generate_instance",
    "heuristic_solution",
    "reference_solution",
    "tour_length",
    "validate_solution",
]

DISTRIBUTIONS: Final[tuple[str, ...]] = ("uniform", "clustered")
"""Instance distributions: the standard one first, then the shifted one."""

_MIN_CITIES: Final = 2
_TWO_OPT_EPS: Final = 1e-12


@checked
@dataclass(frozen=True, eq=False)
class TSPInstance:
    """``coords``: (n, 2) city coordinates in [0,1]², n >= 2 (stored as a read-only float64 copy)."""

    coords: npt.NDArray[np.floating[Any]]

    def __post_init__(self) -> None:
        coords = self.coords
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"coords must have shape (n, 2), got {coords.shape}")
        if coords.shape[0] < _MIN_CITIES:
            raise ValueError(f"a TSP instance needs >= {_MIN_CITIES} cities, got {coords.shape[0]}")
        if not np.all(np.isfinite(coords)):
            raise ValueError("coords contain NaN or infinite values")
        if np.any(coords < 0.0) or np.any(coords > 1.0):
            raise ValueError("coords must lie in the unit square [0, 1]²")
        object.__setattr__(self, "coords", read_only(coords.astype(np.float64)))

    @property
    def num_cities(self) -> int:
        """The number of cities n."""
        return int(self.coords.shape[0])


@checked
def generate_instance(
    num_cities: int, rng: np.random.Generator, distribution: str = "uniform"
) -> TSPInstance:
    """A random instance with ``num_cities`` (>= 2) cities from ``distribution`` (see the module doc)."""
    check_count("num_cities", num_cities, _MIN_CITIES)
    check_distribution(distribution, DISTRIBUTIONS)
    if distribution == "uniform":
        return TSPInstance(rng.uniform(0.0, 1.0, size=(num_cities, 2)))
    return TSPInstance(clustered_points(num_cities, rng))


def tour_length(coords: npt.NDArray[np.floating[Any]], tour: npt.NDArray[np.int64]) -> float:
    """Length of the closed tour ``tour`` (returning to its first city), summed edge by edge."""
    pts = coords[tour]
    edges = np.sqrt(np.sum((np.roll(pts, -1, axis=0) - pts) ** 2, axis=1))
    return float(sum(edges.tolist()))


@checked
def validate_solution(instance: TSPInstance, solution: npt.NDArray[np.integer[Any]]) -> float:
    """The tour length of ``solution``; ``ValueError`` unless it is a permutation of the cities
    starting at city 0."""
    n = instance.num_cities
    if solution.shape != (n,):
        raise ValueError(f"a tour must have shape ({n},), got {solution.shape}")
    if not np.array_equal(np.sort(solution), np.arange(n)):
        raise ValueError("a tour must visit every city exactly once")
    if solution[0] != 0:
        raise ValueError(f"a tour must start at city 0, got {solution[0]}")
    return tour_length(instance.coords, solution.astype(np.int64))


def _two_opt(dist: npt.NDArray[np.float64], tour: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    n = len(tour)
    tour = tour.copy()
    improved = True
    while improved:
        improved = False
        for i in range(n - 2):
            a, b = tour[i], tour[i + 1]
            # Replace edges (a,b) and (c,d) by (a,c) and (b,d) for every later edge (c,d) at once.
            c = tour[i + 2 :]
            d = np.roll(tour, -1)[i + 2 :]
            if i == 0:  # the edge (tour[-1], tour[0]) shares city a
                c, d = c[:-1], d[:-1]
            delta = dist[a, c] + dist[b, d] - dist[a, b] - dist[c, d]
            if delta.size == 0:
                continue
            k = int(np.argmin(delta))
            if delta[k] < -_TWO_OPT_EPS:
                j = i + 2 + k
                tour[i + 1 : j + 1] = tour[i + 1 : j + 1][::-1]
                improved = True
    return tour


@checked
def heuristic_solution(instance: TSPInstance) -> Solution:
    """Nearest neighbour from city 0 (ties: lowest index), then 2-opt to a local optimum."""
    dist = distance_matrix(instance.coords)
    n = instance.num_cities
    visited = np.zeros(n, dtype=bool)
    tour = np.zeros(n, dtype=np.int64)
    visited[0] = True
    for step in range(1, n):
        row = np.where(visited, np.inf, dist[tour[step - 1]])
        tour[step] = int(np.argmin(row))
        visited[tour[step]] = True
    tour = _two_opt(dist, tour)
    return Solution(validate_solution(instance, tour), read_only(tour), "nearest_neighbour+2opt", False)


@checked
def reference_solution(
    instance: TSPInstance, *, time_limit_s: float = 120.0, solution_limit: int = 500
) -> Solution:
    """OR-Tools routing: PATH_CHEAPEST_ARC, then GUIDED_LOCAL_SEARCH on distances scaled by 1e6.

    Stops after ``solution_limit`` solutions (deterministic: the same tour on every machine) or
    ``time_limit_s`` seconds (machine-dependent; ``method`` then ends in ``"(time-limited)"``),
    whichever comes first (the time each takes: ``benchmarks/README.md``, "Design measurements
    quoted by the code").  ``optimal`` is always False (no proof).  Raises ``ModuleNotFoundError``
    saying how to install OR-Tools without it.
    """
    if not time_limit_s > 0.0:
        raise ValueError(f"time_limit_s must be > 0, got {time_limit_s}")
    check_count("solution_limit", solution_limit, 1)
    routes, time_limited = solve_routing(
        distance_matrix(instance.coords),
        num_vehicles=1,
        demands=None,
        capacity=0,
        time_limit_s=time_limit_s,
        solution_limit=solution_limit,
    )
    if routes is None:
        raise RuntimeError("OR-Tools found no tour within its limits; raise time_limit_s")
    tour = np.array([0, *routes[0]], dtype=np.int64)
    method = "ortools_gls" + (TIME_LIMITED if time_limited else "")
    return Solution(validate_solution(instance, tour), read_only(tour), method, False)


class TSPEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """Constructive TSP episodes (see the module docstring for the spaces, reward and rules)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  # gymnasium's class attribute

    @checked
    def __init__(self, num_cities: int = 20, distribution: str = "uniform") -> None:
        check_count("num_cities", num_cities, _MIN_CITIES)
        check_distribution(distribution, DISTRIBUTIONS)
        self.num_cities = num_cities
        self.distribution = distribution
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(4 * num_cities,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(num_cities)
        # The episode-length bound; task_info reports it as max_episode_steps.
        self.max_steps = num_cities - 1
        self._instance: TSPInstance | None = None
        self._dist = np.zeros((num_cities, num_cities))
        self._visited = np.zeros(num_cities, dtype=bool)
        self._tour: list[int] = []

    @property
    def instance(self) -> TSPInstance:
        """The current episode's instance (``RuntimeError`` before the first reset)."""
        if self._instance is None:
            raise RuntimeError("call reset() before reading the instance")
        return self._instance

    def _obs(self) -> npt.NDArray[np.float32]:
        n = self.num_cities
        obs = np.zeros(4 * n, dtype=np.float32)
        obs[: 2 * n] = self.instance.coords.reshape(-1)
        obs[2 * n : 3 * n] = self._visited
        obs[3 * n + self._tour[-1]] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start a tour at city 0 of a fresh instance (or of ``options["instance"]``)."""
        super().reset(seed=seed)
        instance = instance_option(options, TSPInstance)
        if instance is None:
            instance = generate_instance(self.num_cities, self.np_random, self.distribution)
        elif instance.num_cities != self.num_cities:
            raise ValueError(f"the instance has {instance.num_cities} cities, this env {self.num_cities}")
        self._instance = instance
        self._dist = distance_matrix(instance.coords)
        self._visited = np.zeros(self.num_cities, dtype=bool)
        self._visited[0] = True
        self._tour = [0]
        return self._obs(), {}

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Visit city ``action`` (see the module docstring for invalid actions and the reward)."""
        if self._instance is None or len(self._tour) == self.num_cities:
            raise RuntimeError("step() called before reset() or after the episode terminated")
        city, invalid = lowest_valid(parse_action(action, self.num_cities), ~self._visited)
        cost = float(self._dist[self._tour[-1], city])
        self._tour.append(city)
        self._visited[city] = True
        terminated = len(self._tour) == self.num_cities
        if terminated:
            cost += float(self._dist[city, 0])
        info: dict[str, Any] = {"invalid_action": invalid}
        if terminated:
            tour = np.array(self._tour, dtype=np.int64)
            info["tour_length"] = validate_solution(self.instance, tour)
            info["tour"] = read_only(tour)
        return self._obs(), -cost, terminated, False, info
