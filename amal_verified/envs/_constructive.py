"""Shared pieces of the combinatorial tasks (TSP, CVRP, job shop, knapsack).

- :class:`Solution` — what every ``reference_solution`` and ``heuristic_solution`` returns;
- argument checks (:func:`check_count`, :func:`check_distribution`, :func:`parse_action`,
  :func:`instance_option`) shared by the generators and the environments;
- the invalid-action rule (:func:`lowest_valid`): an action that is not valid in the current
  state is replaced by the *lowest-index valid action*.  The rule is deliberately neutral: it
  hands a random policy no heuristic (a nearest-city or best-ratio replacement would);
- point geometry (:func:`clustered_points`, :func:`distance_matrix`) and the OR-Tools routing
  solve shared by TSP and CVRP (:func:`solve_routing`), with the lazy OR-Tools imports.

Nothing here draws randomness except :func:`clustered_points`, from the generator it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from amal_verified.common.runtime_checks import checked

__all__ = [
    "TIME_LIMITED",
    "Solution",
    "check_count",
    "check_distribution",
    "clustered_points",
    "distance_matrix",
    "import_cp_model",
    "instance_option",
    "lowest_valid",
    "parse_action",
    "read_only",
    "solve_routing",
]

TIME_LIMITED: Final = "(time-limited)"
"""Suffix of :attr:`Solution.method` when a wall-clock limit stopped the solver: the result then
depends on the machine and its load."""

_T = TypeVar("_T")

_BENCH_HINT: Final = "install the repository's tooling (it brings OR-Tools): pip install -e tools"
# Routing costs are integers: distances in the unit square are multiplied by this and rounded.
ROUTING_SCALE: Final = 1_000_000
# Clustered points: 3..7 centres uniform in [0.1, 0.9]², Gaussian offsets with this std, clipped.
_CLUSTER_STD: Final = 0.05


@checked
@dataclass(frozen=True)
class Solution:
    """A solution of a combinatorial instance and how it was found.

    ``objective`` is the task's objective as :func:`validate_solution` of the task's module computes
    it (TSP tour length, CVRP total distance, JSS makespan: minimised; knapsack value: maximised);
    ``solution`` is the solution in the task's format (read-only); ``method`` names the solver
    (ending in :data:`TIME_LIMITED` when a wall-clock limit stopped it);
    ``optimal`` is True only when the solver proved optimality.
    """

    objective: float
    solution: npt.NDArray[Any]
    method: str
    optimal: bool


def read_only(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A read-only copy of ``array``."""
    out = np.array(array, copy=True)
    out.setflags(write=False)
    return out


def check_count(name: str, value: int, minimum: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an int (not bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_distribution(distribution: str, allowed: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the allowed distributions when ``distribution`` is not one."""
    if distribution not in allowed:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {', '.join(allowed)}")


def parse_action(action: Any, n: int) -> int:
    """``action`` as an int in ``[0, n)``; ``ValueError``/``TypeError`` outside the action space."""
    if isinstance(action, np.ndarray) and action.shape == ():
        action = action.item()
    if isinstance(action, bool | np.bool_) or not isinstance(action, int | np.integer):
        raise TypeError(f"action must be an integer, got {type(action).__name__}")
    value = int(action)
    if not 0 <= value < n:
        raise ValueError(f"action {value} is outside the action space Discrete({n})")
    return value


def lowest_valid(action: int, valid: npt.NDArray[np.bool_]) -> tuple[int, bool]:
    """``(action, False)`` if ``valid[action]``, else ``(lowest valid index, True)``.

    The caller guarantees that some action is valid (an episode ends before none is).
    """
    if valid[action]:
        return action, False
    return int(np.flatnonzero(valid)[0]), True


def instance_option(options: dict[str, Any] | None, instance_type: type[_T]) -> _T | None:
    """The instance in ``options["instance"]`` (type-checked), or None; other keys raise."""
    if options is None:
        return None
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    unknown = set(options) - {"instance"}
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}; the only option is 'instance'")
    if "instance" not in options:
        return None
    instance = options["instance"]
    if not isinstance(instance, instance_type):
        raise TypeError(
            f"options['instance'] must be a {instance_type.__name__}, got {type(instance).__name__}"
        )
    return instance


def clustered_points(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``n`` points in [0,1]²: 3..7 uniform centres, each point N(centre, 0.05²) clipped to the square."""
    num_centres = int(rng.integers(3, 8))
    centres = rng.uniform(0.1, 0.9, size=(num_centres, 2))
    which = rng.integers(0, num_centres, size=n)
    points = centres[which] + rng.normal(0.0, _CLUSTER_STD, size=(n, 2))
    return np.clip(points, 0.0, 1.0)


def distance_matrix(points: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Euclidean distances between the rows of ``points`` (N×2) as an N×N float64 array."""
    diff = points[:, None, :].astype(np.float64) - points[None, :, :]
    out: npt.NDArray[np.float64] = np.sqrt(np.sum(diff * diff, axis=-1))
    return out


def _import_routing() -> tuple[Any, Any]:
    try:
        from ortools.constraint_solver import (  # type: ignore[import-untyped,unused-ignore]
            pywrapcp,
            routing_enums_pb2,
        )
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"reference solutions need OR-Tools ({exc}); {_BENCH_HINT}") from None
    return pywrapcp, routing_enums_pb2


def import_cp_model() -> Any:
    """``ortools.sat.python.cp_model``, or ``ModuleNotFoundError`` naming the ``bench`` extra."""
    try:
        from ortools.sat.python import cp_model
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"reference solutions need OR-Tools ({exc}); {_BENCH_HINT}") from None
    return cp_model


def solve_routing(
    distances: npt.NDArray[np.float64],
    *,
    num_vehicles: int,
    demands: npt.NDArray[np.int64] | None,
    capacity: int,
    time_limit_s: float,
    solution_limit: int,
) -> tuple[list[list[int]] | None, bool]:
    """``(routes, time_limited)``: the routes of OR-Tools routing (node lists without the depot,
    node 0; None if none was found) and whether the wall-clock limit stopped the search.

    PATH_CHEAPEST_ARC first solution, GUIDED_LOCAL_SEARCH improvement, costs
    ``round(distance * 1e6)``.  The search stops after ``solution_limit`` solutions or
    ``time_limit_s`` seconds, whichever comes first.  The solver is single-threaded and
    deterministic, so the result is reproducible as long as the solution limit is reached first.
    ``demands`` (per node, depot 0) adds one capacity dimension with ``capacity`` per vehicle.
    """
    pywrapcp, routing_enums_pb2 = _import_routing()
    costs = np.rint(distances * ROUTING_SCALE).astype(np.int64).tolist()
    manager = pywrapcp.RoutingIndexManager(len(costs), num_vehicles, 0)
    routing = pywrapcp.RoutingModel(manager)

    # Matrix/vector callbacks stay in C++: a Python callback is ~100× slower for n = 200.
    transit = routing.RegisterTransitMatrix(costs)
    routing.SetArcCostEvaluatorOfAllVehicles(transit)
    if demands is not None:
        demand_index = routing.RegisterUnaryTransitVector([int(d) for d in demands])
        routing.AddDimensionWithVehicleCapacity(demand_index, 0, [capacity] * num_vehicles, True, "load")
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.solution_limit = solution_limit
    params.time_limit.FromMilliseconds(max(1, round(time_limit_s * 1000)))
    assignment = routing.SolveWithParameters(params)
    solver = routing.solver()
    time_limited = bool(
        solver.Solutions() < solution_limit and solver.WallTime() >= 0.9 * time_limit_s * 1000
    )
    if assignment is None:
        return None, time_limited
    routes: list[list[int]] = []
    for vehicle in range(num_vehicles):
        index = assignment.Value(routing.NextVar(routing.Start(vehicle)))
        route: list[int] = []
        while not routing.IsEnd(index):
            route.append(int(manager.IndexToNode(index)))
            index = assignment.Value(routing.NextVar(index))
        if route:
            routes.append(route)
    return routes, time_limited
