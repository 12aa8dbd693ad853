"""The capacitated vehicle-routing task (paper §6.1, ``amal/CVRP-100-v0`` and ``amal/CVRP-20-v0``).

Instances (:func:`generate_instance`, after Kool et al. 2019): a depot and ``n`` customers in
the unit square, integer demands uniform in 1..9, vehicle capacity :func:`default_capacity`
(30 for n <= 20, 40 for 20 < n <= 50, 50 for n > 50: Kool's 20/50/100 values, extended as a
step rule).  ``"uniform"``: depot and customers uniform in [0,1]²; the shifted
``"clustered"``: depot uniform, customers clustered (3..7 centres uniform in [0.1,0.9]², std
0.05, clipped).  Nodes are numbered 0 = depot, 1..n = customers.

Episodes (:class:`CVRPEnv`): one vehicle starts at the depot with full capacity; each step moves
it to a node.  Action ``Discrete(n + 1)``: 0 = return to the depot (refill), ``i`` = serve
customer ``i``.  Valid: an unserved customer whose demand fits the remaining load, or the
depot when the vehicle is not at the depot.  An invalid action is replaced by the
**lowest-index valid action** (the depot when away from it, else the lowest-index unserved
customer) and ``info["invalid_action"]`` is True.  Reward: minus the distance travelled; the
step serving the last customer also adds the return to the depot, so the return is minus the
total distance.  The episode terminates when every customer is served, after at most
``2n - 1`` steps (the attribute ``max_steps``, which :func:`amal_verified.envs.task_info`
reports as ``max_episode_steps``).  Observation, 1-D float32 in [0,1] of length ``5n + 4``::

    [depot x, y, customer x_1, y_1, ..., x_n, y_n (2n + 2) | demand_i / capacity (n)
     | served mask (n) | one-hot current node (n + 1) | remaining load / capacity (1)]

At termination ``info["total_distance"]`` is the total distance and ``info["routes"]`` the
solution: an ``int64`` node sequence starting and ending at the depot with a 0 between routes
(no two consecutive 0s).  ``reset(options={"instance": inst})`` plays a given :class:`CVRPInstance`.

Solutions: :func:`reference_solution` (OR-Tools routing), :func:`heuristic_solution`
(nearest feasible neighbour), :func:`validate_solution`.
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
    "CVRPEnv",
    "CVRPInstance",
    "Solution",
    "default_capacity",
    "generate_instance",
    "heuristic_solution",
    "reference_solution",
    "validate_solution",
]

DISTRIBUTIONS: Final[tuple[str, ...]] = ("uniform", "clustered")
"""Instance distributions: the standard one first, then the shifted one."""

_MIN_CUSTOMERS: Final = 2
_MAX_DEMAND: Final = 9


@checked
def default_capacity(num_customers: int) -> int:
    """Vehicle capacity for ``num_customers``: 30 (n <= 20), 40 (n <= 50), 50 (larger n)."""
    check_count("num_customers", num_customers, 1)
    if num_customers <= 20:
        return 30
    if num_customers <= 50:
        return 40
    return 50


@checked
@dataclass(frozen=True, eq=False)
class CVRPInstance:
    """``depot`` (2,), ``customers`` (n, 2) in [0,1]², integer ``demands`` (n,) in 1..capacity.

    Arrays are stored as read-only float64/int64 copies.  :attr:`points` stacks depot and customers.
    """

    depot: npt.NDArray[np.floating[Any]]
    customers: npt.NDArray[np.floating[Any]]
    demands: npt.NDArray[np.integer[Any]]
    capacity: int

    def __post_init__(self) -> None:
        if self.depot.shape != (2,):
            raise ValueError(f"depot must have shape (2,), got {self.depot.shape}")
        customers = self.customers
        if customers.ndim != 2 or customers.shape[1] != 2:
            raise ValueError(f"customers must have shape (n, 2), got {customers.shape}")
        n = customers.shape[0]
        if n < _MIN_CUSTOMERS:
            raise ValueError(f"a CVRP instance needs >= {_MIN_CUSTOMERS} customers, got {n}")
        for name, points in (("depot", self.depot), ("customers", customers)):
            if not np.all(np.isfinite(points)):
                raise ValueError(f"{name} contains NaN or infinite values")
            if np.any(points < 0.0) or np.any(points > 1.0):
                raise ValueError(f"{name} must lie in the unit square [0, 1]²")
        if self.demands.shape != (n,):
            raise ValueError(f"demands must have shape ({n},), got {self.demands.shape}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        if np.any(self.demands < 1) or np.any(self.demands > self.capacity):
            raise ValueError(f"demands must lie in 1..capacity (= {self.capacity})")
        object.__setattr__(self, "depot", read_only(self.depot.astype(np.float64)))
        object.__setattr__(self, "customers", read_only(customers.astype(np.float64)))
        object.__setattr__(self, "demands", read_only(self.demands.astype(np.int64)))

    @property
    def num_customers(self) -> int:
        """The number of customers n."""
        return int(self.customers.shape[0])

    @property
    def points(self) -> npt.NDArray[np.float64]:
        """(n + 1, 2) node coordinates: the depot, then the customers."""
        return np.vstack([self.depot[None, :], self.customers])


@checked
def generate_instance(
    num_customers: int, rng: np.random.Generator, distribution: str = "uniform"
) -> CVRPInstance:
    """A random instance with ``num_customers`` (>= 2) customers (see the module docstring)."""
    check_count("num_customers", num_customers, _MIN_CUSTOMERS)
    check_distribution(distribution, DISTRIBUTIONS)
    depot = rng.uniform(0.0, 1.0, size=2)
    if distribution == "uniform":
        customers = rng.uniform(0.0, 1.0, size=(num_customers, 2))
    else:
        customers = clustered_points(num_customers, rng)
    demands = rng.integers(1, _MAX_DEMAND + 1, size=num_customers)
    return CVRPInstance(depot, customers, demands, default_capacity(num_customers))


def _route_distance(points: npt.NDArray[np.float64], sequence: npt.NDArray[np.int64]) -> float:
    pts = points[sequence]
    edges = np.sqrt(np.sum((pts[1:] - pts[:-1]) ** 2, axis=1))
    return float(sum(edges.tolist()))


@checked
def validate_solution(instance: CVRPInstance, solution: npt.NDArray[np.integer[Any]]) -> float:
    """Total distance of ``solution`` (node sequence, see the module docstring); ``ValueError``
    unless it starts and ends at the depot, serves every customer once, has no empty route and
    no route whose demand exceeds the capacity."""
    n = instance.num_customers
    if solution.ndim != 1 or solution.size < 3:
        raise ValueError(f"a solution must be a 1-D node sequence, got shape {solution.shape}")
    if solution[0] != 0 or solution[-1] != 0:
        raise ValueError("a solution must start and end at the depot (node 0)")
    depot_visits = solution == 0
    if np.any(depot_visits[1:] & depot_visits[:-1]):
        raise ValueError("a solution must not contain an empty route (two consecutive depot visits)")
    served = solution[~depot_visits]
    if not np.array_equal(np.sort(served), np.arange(1, n + 1)):
        raise ValueError("a solution must serve every customer exactly once")
    load = 0
    for node in solution[1:].tolist():
        if node == 0:
            load = 0
            continue
        load += int(instance.demands[node - 1])
        if load > instance.capacity:
            raise ValueError(f"a route exceeds the capacity {instance.capacity} at customer {node}")
    return _route_distance(instance.points, solution.astype(np.int64))


@checked
def heuristic_solution(instance: CVRPInstance) -> Solution:
    """Nearest neighbour with capacity: go to the nearest unserved customer that fits (ties:
    lowest index), back to the depot when none fits."""
    dist = distance_matrix(instance.points)
    n = instance.num_customers
    served = np.zeros(n + 1, dtype=bool)
    served[0] = True
    demands = np.concatenate([[0], instance.demands])
    sequence, current, load = [0], 0, instance.capacity
    while not served.all():
        row = np.where(served | (demands > load), np.inf, dist[current])
        nxt = int(np.argmin(row))
        if not np.isfinite(row[nxt]):
            sequence.append(0)
            current, load = 0, instance.capacity
            continue
        sequence.append(nxt)
        served[nxt] = True
        current, load = nxt, load - int(demands[nxt])
    sequence.append(0)
    solution = np.array(sequence, dtype=np.int64)
    return Solution(validate_solution(instance, solution), read_only(solution), "nearest_neighbour", False)


@checked
def reference_solution(
    instance: CVRPInstance, *, time_limit_s: float = 120.0, solution_limit: int = 1000
) -> Solution:
    """OR-Tools routing: PATH_CHEAPEST_ARC, then GUIDED_LOCAL_SEARCH, distances scaled by 1e6.

    The fleet has as many vehicles as :func:`heuristic_solution` uses routes, plus one.  Stops
    after ``solution_limit`` solutions (deterministic: the same routes on every machine) or
    ``time_limit_s`` seconds (machine-dependent; ``method`` then ends in ``"(time-limited)"``),
    whichever comes first (the time each takes: ``benchmarks/README.md``, "Design measurements
    quoted by the code").  ``optimal`` is always False.  Raises ``ModuleNotFoundError`` saying how
    to install OR-Tools without it.
    """
    if not time_limit_s > 0.0:
        raise ValueError(f"time_limit_s must be > 0, got {time_limit_s}")
    check_count("solution_limit", solution_limit, 1)
    heuristic = heuristic_solution(instance)
    # The heuristic's sequence has one depot visit more than routes: routes + 1 vehicles.
    num_vehicles = int(np.count_nonzero(heuristic.solution == 0))
    routes, time_limited = solve_routing(
        distance_matrix(instance.points),
        num_vehicles=num_vehicles,
        demands=np.concatenate([[0], instance.demands]).astype(np.int64),
        capacity=instance.capacity,
        time_limit_s=time_limit_s,
        solution_limit=solution_limit,
    )
    if routes is None:
        raise RuntimeError("OR-Tools found no solution within its limits; raise time_limit_s")
    sequence = [0]
    for route in routes:
        sequence += [*route, 0]
    solution = np.array(sequence, dtype=np.int64)
    method = "ortools_gls" + (TIME_LIMITED if time_limited else "")
    return Solution(validate_solution(instance, solution), read_only(solution), method, False)


class CVRPEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """Constructive CVRP episodes (see the module docstring for the spaces, reward and rules)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  # gymnasium's class attribute

    @checked
    def __init__(self, num_customers: int = 20, distribution: str = "uniform") -> None:
        check_count("num_customers", num_customers, _MIN_CUSTOMERS)
        check_distribution(distribution, DISTRIBUTIONS)
        self.num_customers = num_customers
        self.distribution = distribution
        n = num_customers
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(5 * n + 4,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(n + 1)
        # The episode-length bound; task_info reports it as max_episode_steps.
        self.max_steps = 2 * n - 1
        self._instance: CVRPInstance | None = None
        self._dist = np.zeros((n + 1, n + 1))
        self._demands = np.zeros(n + 1, dtype=np.int64)
        self._served = np.zeros(n + 1, dtype=bool)
        self._sequence: list[int] = []
        self._load = 0

    @property
    def instance(self) -> CVRPInstance:
        """The current episode's instance (``RuntimeError`` before the first reset)."""
        if self._instance is None:
            raise RuntimeError("call reset() before reading the instance")
        return self._instance

    def _obs(self) -> npt.NDArray[np.float32]:
        n, inst = self.num_customers, self.instance
        obs = np.zeros(5 * n + 4, dtype=np.float32)
        obs[: 2 * n + 2] = inst.points.reshape(-1)
        obs[2 * n + 2 : 3 * n + 2] = inst.demands / inst.capacity
        obs[3 * n + 2 : 4 * n + 2] = self._served[1:]
        obs[4 * n + 2 + self._sequence[-1]] = 1.0
        obs[5 * n + 3] = self._load / inst.capacity
        return obs

    def _finished(self) -> bool:
        return bool(self._served.all())

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Put the vehicle at the depot of a fresh instance (or of ``options["instance"]``)."""
        super().reset(seed=seed)
        instance = instance_option(options, CVRPInstance)
        if instance is None:
            instance = generate_instance(self.num_customers, self.np_random, self.distribution)
        elif instance.num_customers != self.num_customers:
            raise ValueError(
                f"the instance has {instance.num_customers} customers, this env {self.num_customers}"
            )
        self._instance = instance
        self._dist = distance_matrix(instance.points)
        self._demands = np.concatenate([[0], instance.demands]).astype(np.int64)
        self._served = np.zeros(self.num_customers + 1, dtype=bool)
        self._served[0] = True  # the depot is never "unserved"
        self._sequence = [0]
        self._load = instance.capacity
        return self._obs(), {}

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Move to node ``action`` (see the module docstring for invalid actions and the reward)."""
        if self._instance is None or self._finished():
            raise RuntimeError("step() called before reset() or after the episode terminated")
        current = self._sequence[-1]
        valid = ~self._served & (self._demands <= self._load)
        valid[0] = current != 0
        node, invalid = lowest_valid(parse_action(action, self.num_customers + 1), valid)
        cost = float(self._dist[current, node])
        self._sequence.append(node)
        if node == 0:
            self._load = self._instance.capacity
        else:
            self._served[node] = True
            self._load -= int(self._demands[node])
        terminated = self._finished()
        if terminated:
            cost += float(self._dist[node, 0])
            self._sequence.append(0)
        info: dict[str, Any] = {"invalid_action": invalid}
        if terminated:
            solution = np.array(self._sequence, dtype=np.int64)
            info["total_distance"] = validate_solution(self._instance, solution)
            info["routes"] = read_only(solution)
        return self._obs(), -cost, terminated, False, info
