"""The library's own gymnasium ids, registered under the ``amal/`` namespace.

=================================  ==============================================================
id                                 task
=================================  ==============================================================
``amal/TSP-200-v0``                travelling salesman, 200 cities in the unit square (paper §6.1)
``amal/CVRP-100-v0``               capacitated vehicle routing, 100 customers
``amal/JSS-50-v0``                 job-shop scheduling, 50 jobs × 10 machines
``amal/KP-1000-v0``                0/1 knapsack, 1000 items
``amal/KeyCorridorS8R4-v0``        minigrid's ``KeyCorridorEnv(room_size=8, num_rows=4)``
``amal/Trading-v0``                a single-asset market; auxiliary traders exist only in the aux env
``amal/NewsFilter-v0``             a news stream to filter (a stand-in for GDELT; no network here)
=================================  ==============================================================

Small instances of the combinatorial tasks (``amal/TSP-20-v0``, ``amal/CVRP-20-v0``,
``amal/JSS-10-v0`` = 10 jobs × 5 machines, ``amal/KP-50-v0``) are registered for quick benchmark runs
and tests.  Every id is made through :func:`amal_verified.envs.make_env` like any gymnasium id.
Registration is idempotent and imports none of the environment modules.
"""

from __future__ import annotations

from typing import Any, Final

import gymnasium as gym

__all__ = ["AMAL_ENV_IDS", "register_amal_envs"]

_ENTRY_POINTS: Final[dict[str, tuple[str, dict[str, Any], int | None]]] = {
    # id: (entry point, kwargs, max_episode_steps — None: the env ends its own episodes)
    "amal/TSP-200-v0": ("amal_verified.envs.tsp:TSPEnv", {"num_cities": 200}, None),
    "amal/TSP-20-v0": ("amal_verified.envs.tsp:TSPEnv", {"num_cities": 20}, None),
    "amal/CVRP-100-v0": ("amal_verified.envs.cvrp:CVRPEnv", {"num_customers": 100}, None),
    "amal/CVRP-20-v0": ("amal_verified.envs.cvrp:CVRPEnv", {"num_customers": 20}, None),
    "amal/JSS-50-v0": ("amal_verified.envs.jss:JobShopEnv", {"num_jobs": 50, "num_machines": 10}, None),
    "amal/JSS-10-v0": ("amal_verified.envs.jss:JobShopEnv", {"num_jobs": 10, "num_machines": 5}, None),
    "amal/KP-1000-v0": ("amal_verified.envs.knapsack:KnapsackEnv", {"num_items": 1000}, None),
    "amal/KP-50-v0": ("amal_verified.envs.knapsack:KnapsackEnv", {"num_items": 50}, None),
    "amal/KeyCorridorS8R4-v0": ("minigrid.envs:KeyCorridorEnv", {"room_size": 8, "num_rows": 4}, None),
    "amal/Trading-v0": ("amal_verified.envs.trading:MarketEnv", {}, None),
    "amal/NewsFilter-v0": ("amal_verified.envs.news_filter:NewsFilterEnv", {}, None),
}

AMAL_ENV_IDS: Final[tuple[str, ...]] = tuple(_ENTRY_POINTS)
"""Every id this module registers."""


def register_amal_envs() -> None:
    """Register every id in :data:`AMAL_ENV_IDS` with gymnasium (again-safe: known ids are skipped)."""
    for env_id, (entry_point, kwargs, max_steps) in _ENTRY_POINTS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs), max_episode_steps=max_steps)
