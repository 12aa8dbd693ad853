"""The 0/1 knapsack task (paper §6.1, ``amal/KP-1000-v0`` and ``amal/KP-50-v0``).

Instances (:func:`generate_instance`): ``n`` items with integer weights uniform in 1..100 and
capacity ``max(floor(sum(weights) / 4), min(weights))`` (a quarter of the total weight, raised
to the lightest item so that some item always fits).  Values: ``"uncorrelated"`` uniform
in 1..100 (standard); the shifted ``"correlated"``: ``value = weight + 10`` (Pisinger's
strongly correlated class).

Episodes (:class:`KnapsackEnv`): each step puts one item into the knapsack.  Action
``Discrete(n)``: the item.  Valid: an item not yet taken whose weight fits the remaining
capacity.  An invalid action is replaced by the **lowest-index valid item** and
``info["invalid_action"]`` is True.  Reward: the item's value, so the return is the packed
value.  The episode terminates when no remaining item fits, after at most ``n`` steps (the
attribute ``max_steps``, which :func:`amal_verified.envs.task_info` reports as
``max_episode_steps``).  Observation, 1-D float32 in [0,1] of length ``4n + 1``, with ``V`` =
the largest value and ``S = max(capacity, largest weight)`` (weights and capacity share the scale ``S``)::

    [value_i / V (n) | weight_i / S (n) | taken mask (n) | fits mask: not taken and
     weight_i <= remaining (n) | remaining capacity / S (1)]

At termination ``info["value"]`` is the packed value and ``info["selected"]`` the solution, a
bool (n,) mask of the taken items.  ``reset(options={"instance": inst})`` plays a given
:class:`KnapsackInstance`.

Solutions: :func:`reference_solution` (exact dynamic programming), :func:`heuristic_solution`
(greedy by value/weight), :func:`validate_solution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from amal_verified.common.runtime_checks import checked
from amal_verified.envs._constructive import (
    Solution,
    check_count,
    check_distribution,
    instance_option,
    lowest_valid,
    parse_action,
    read_only,
)

__all__ = [
    "DISTRIBUTIONS",
    "KnapsackEnv",
    "KnapsackInstance",
    "Solution",
    "generate_instance",
    "heuristic_solution",
    "reference_solution",
    "validate_solution",
]

DISTRIBUTIONS: Final[tuple[str, ...]] = ("uncorrelated", "correlated")
"""Instance distributions: the standard one first, then the shifted one."""

_MIN_ITEMS: Final = 2
_CORRELATION_OFFSET: Final = 10
# The DP's keep table has n × (capacity + 1) bytes; refuse beyond this many.
_MAX_DP_CELLS: Final = 500_000_000


@checked
@dataclass(frozen=True, eq=False)
class KnapsackInstance:
    """Integer ``weights`` (n,) >= 1, integer ``values`` (n,) >= 0, ``capacity`` >= 0; n >= 2.

    Arrays are stored as read-only int64 copies.
    """

    weights: npt.NDArray[np.integer[Any]]
    values: npt.NDArray[np.integer[Any]]
    capacity: int

    def __post_init__(self) -> None:
        if self.weights.ndim != 1 or self.weights.shape[0] < _MIN_ITEMS:
            raise ValueError(f"weights must have shape (n,) with n >= {_MIN_ITEMS}, got {self.weights.shape}")
        if self.values.shape != self.weights.shape:
            raise ValueError(
                f"values must have the shape of weights {self.weights.shape}, got {self.values.shape}"
            )
        if np.any(self.weights < 1):
            raise ValueError("weights must be >= 1")
        if np.any(self.values < 0):
            raise ValueError("values must be >= 0")
        if self.capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {self.capacity}")
        object.__setattr__(self, "weights", read_only(self.weights.astype(np.int64)))
        object.__setattr__(self, "values", read_only(self.values.astype(np.int64)))

    @property
    def num_items(self) -> int:
        """The number of items n."""
        return int(self.weights.shape[0])


@checked
def generate_instance(
    num_items: int, rng: np.random.Generator, distribution: str = "uncorrelated"
) -> KnapsackInstance:
    """A random instance with ``num_items`` (>= 2) items (see the module docstring)."""
    check_count("num_items", num_items, _MIN_ITEMS)
    check_distribution(distribution, DISTRIBUTIONS)
    weights = rng.integers(1, 101, size=num_items)
    if distribution == "uncorrelated":
        values = rng.integers(1, 101, size=num_items)
    else:
        values = weights + _CORRELATION_OFFSET
    capacity = max(int(weights.sum()) // 4, int(weights.min()))
    return KnapsackInstance(weights, values, capacity)


@checked
def validate_solution(instance: KnapsackInstance, solution: npt.NDArray[np.bool_]) -> float:
    """The value of the selection mask ``solution``; ``ValueError`` on a wrong shape or overweight."""
    if solution.shape != (instance.num_items,):
        raise ValueError(f"a selection must have shape ({instance.num_items},), got {solution.shape}")
    weight = int(instance.weights[solution].sum())
    if weight > instance.capacity:
        raise ValueError(f"the selection weighs {weight} > capacity {instance.capacity}")
    return float(instance.values[solution].sum())


@checked
def heuristic_solution(instance: KnapsackInstance) -> Solution:
    """Greedy: items by decreasing value/weight (ties: lowest index), each taken if it fits; the
    better of that and the single most valuable fitting item (a 1/2-approximation)."""
    order = np.lexsort((np.arange(instance.num_items), -instance.values / instance.weights))
    selected = np.zeros(instance.num_items, dtype=bool)
    remaining = instance.capacity
    for item in order.tolist():
        weight = int(instance.weights[item])
        if weight <= remaining:
            selected[item] = True
            remaining -= weight
    fitting = np.flatnonzero(instance.weights <= instance.capacity)
    if fitting.size:
        best = int(fitting[np.argmax(instance.values[fitting])])
        if instance.values[best] > instance.values[selected].sum():
            selected = np.zeros(instance.num_items, dtype=bool)
            selected[best] = True
    return Solution(validate_solution(instance, selected), read_only(selected), "greedy_ratio", False)


@checked
def reference_solution(instance: KnapsackInstance) -> Solution:
    """The optimum by dynamic programming over capacities 0..C, vectorised in numpy.

    ``O(n·C)`` time and ``n·(C + 1)`` bytes for the backtracking table (``ValueError`` beyond
    5·10⁸ bytes).  Ties between optimal selections resolve deterministically.
    """
    n, capacity = instance.num_items, instance.capacity
    if n * (capacity + 1) > _MAX_DP_CELLS:
        raise ValueError(f"the DP table n·(C+1) = {n * (capacity + 1)} exceeds {_MAX_DP_CELLS} bytes")
    best = np.zeros(capacity + 1, dtype=np.int64)  # best[c]: best value within capacity c so far
    keep = np.zeros((n, capacity + 1), dtype=bool)
    for item in range(n):
        weight, value = int(instance.weights[item]), int(instance.values[item])
        if weight > capacity:
            continue
        candidate = best[: capacity + 1 - weight] + value
        take = candidate > best[weight:]
        keep[item, weight:] = take
        best[weight:] = np.where(take, candidate, best[weight:])
    selected = np.zeros(n, dtype=bool)
    c = capacity
    for item in range(n - 1, -1, -1):
        if keep[item, c]:
            selected[item] = True
            c -= int(instance.weights[item])
    packed = validate_solution(instance, selected)
    if packed != float(best[capacity]):
        raise AssertionError(f"DP backtracking gave {packed}, the table {best[capacity]}")
    return Solution(packed, read_only(selected), "dynamic_programming", True)


class KnapsackEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """Constructive knapsack episodes (see the module docstring for the spaces, reward and rules)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  # gymnasium's class attribute

    @checked
    def __init__(self, num_items: int = 50, distribution: str = "uncorrelated") -> None:
        check_count("num_items", num_items, _MIN_ITEMS)
        check_distribution(distribution, DISTRIBUTIONS)
        self.num_items = num_items
        self.distribution = distribution
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(4 * num_items + 1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(num_items)
        # The episode-length bound; task_info reports it as max_episode_steps.
        self.max_steps = num_items
        self._instance: KnapsackInstance | None = None
        self._taken = np.zeros(num_items, dtype=bool)
        self._remaining = 0
        self._static = np.zeros(2 * num_items, dtype=np.float32)
        self._scale = 1.0

    @property
    def instance(self) -> KnapsackInstance:
        """The current episode's instance (``RuntimeError`` before the first reset)."""
        if self._instance is None:
            raise RuntimeError("call reset() before reading the instance")
        return self._instance

    def _fits(self) -> npt.NDArray[np.bool_]:
        return ~self._taken & (self.instance.weights <= self._remaining)

    def _obs(self) -> npt.NDArray[np.float32]:
        n = self.num_items
        obs = np.empty(4 * n + 1, dtype=np.float32)
        obs[: 2 * n] = self._static
        obs[2 * n : 3 * n] = self._taken
        obs[3 * n : 4 * n] = self._fits()
        obs[4 * n] = self._remaining / self._scale
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start with an empty knapsack for a fresh instance (or for ``options["instance"]``).

        A given instance must have ``n`` items and at least one item that fits (``ValueError``).
        """
        super().reset(seed=seed)
        instance = instance_option(options, KnapsackInstance)
        if instance is None:
            instance = generate_instance(self.num_items, self.np_random, self.distribution)
        elif instance.num_items != self.num_items:
            raise ValueError(f"the instance has {instance.num_items} items, this env {self.num_items}")
        if not np.any(instance.weights <= instance.capacity):
            raise ValueError("no item fits the capacity: the episode would be empty")
        self._instance = instance
        self._taken = np.zeros(self.num_items, dtype=bool)
        self._remaining = instance.capacity
        self._scale = float(max(instance.capacity, int(instance.weights.max())))
        max_value = max(1, int(instance.values.max()))
        self._static = np.concatenate([instance.values / max_value, instance.weights / self._scale]).astype(
            np.float32
        )
        return self._obs(), {}

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Take item ``action`` (see the module docstring for invalid actions and the reward)."""
        if self._instance is None or not self._fits().any():
            raise RuntimeError("step() called before reset() or after the episode terminated")
        item, invalid = lowest_valid(parse_action(action, self.num_items), self._fits())
        self._taken[item] = True
        self._remaining -= int(self._instance.weights[item])
        value = float(self._instance.values[item])
        fits = self._fits()
        terminated = not fits.any()
        info: dict[str, Any] = {"invalid_action": invalid}
        if terminated:
            info["value"] = validate_solution(self._instance, self._taken)
            info["selected"] = read_only(self._taken)
        return self._obs(), value, terminated, False, info
