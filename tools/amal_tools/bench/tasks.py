"""The benchmark's tasks (paper §6.1) at workstation scale: ids, budgets, shifts, success rules.

Each :class:`TaskSpec` names a registered gymnasium id (made with :func:`amal_verified.envs.make_env`)
and says how the benchmark treats it:

- ``budgets``: primary environment steps per run in quick and in full mode (``None``: the task is
  not part of that mode's default suite; it can still be asked for by name);
- ``eval_episodes``: evaluation episodes per evaluation point in quick and in full mode;
- ``shift``: the perturbed environment of the robustness metric (:class:`Shift`), never seen in
  training;
- ``success``: how an evaluation episode counts as solved (see :mod:`amal_tools.bench.evaluation`);
- ``reference``: where the "optimal" level of the samples-to-90 % metric comes from —
  ``"solver"`` (the task's reference solution of each evaluation episode: exact dynamic programming,
  OR-Tools, or an oracle that sees the hidden state; see :mod:`amal_tools.bench.references`),
  ``"known"`` (the task's maximum return, ``known_optimum``, e.g. CartPole's 500) or
  ``"best-observed"`` (no optimum is known, e.g. MuJoCo: the best final mean return any method
  reached in the same benchmark run, reported as such).

Besides the paper's tasks the catalogue has CartPole-v1 and Pendulum-v1 (full mode): tasks that the
methods learn within a workstation budget, so that "samples to reach 90 % of optimal" — and with it
the paper's "40 % better exploration efficiency" — is measurable at all.

:data:`TASKS` is the catalogue; :func:`suite` selects a mode's default tasks and :data:`SEEDS` its
default run seeds.

The modes: **full** mode is the measurement (20k–50k steps per run, 5–10 evaluation episodes per
point, seeds 0, 1 and 2); **quick** mode is a smoke run of the whole framework — every method on
four tasks of different families, end to end (training, evaluation, shift, isolation, report), at
:data:`QUICK_BUDGET` steps, one evaluation episode per point and one seed, sized so that the grid
runs in minutes on two cores.  A quick run shows that the pipeline works; its numbers support no
comparison of methods, and its report says so (:mod:`amal_tools.bench.report`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, final

from amal_verified.common.runtime_checks import checked

__all__ = ["MODES", "QUICK_BUDGET", "SEEDS", "TASKS", "Mode", "Shift", "TaskSpec", "suite", "task_by_name"]

Mode = Literal["quick", "full"]
MODES: Final[tuple[Mode, ...]] = ("quick", "full")
SEEDS: Final[Mapping[Mode, tuple[int, ...]]] = MappingProxyType({"quick": (0,), "full": (0, 1, 2)})
"""The run seeds a mode uses unless others are asked for: one in quick mode (a smoke run), three in full."""
QUICK_BUDGET: Final = 500
"""Primary steps per run of the quick suite's tasks: two world-model rounds and one CEM generation of
the AMAL trainer (every 250 and 500 steps), a few updates of every baseline."""


@final
@dataclass(frozen=True)
class Shift:
    """A distribution shift: ``make_kwargs`` for ``make_env``, ``physics`` factors (an attribute of
    ``env.unwrapped`` or ``"model.<field>"`` of a MuJoCo model, see
    :class:`~amal_verified.agents.aux_env.PerturbedEnv`) and Gaussian observation noise ``obs_noise``."""

    description: str
    make_kwargs: Mapping[str, Any] = field(default_factory=dict)
    physics: Mapping[str, float] = field(default_factory=dict)
    obs_noise: float = 0.0


@final
@dataclass(frozen=True)
class TaskSpec:
    """One benchmark task (see the module docstring)."""

    name: str
    env_id: str
    family: Literal["classic control", "continuous control", "discrete optimisation", "partially observable"]
    continuous: bool
    budgets: Mapping[Mode, int | None]
    shift: Shift
    success: Literal["info", "positive_return"] | None = None
    reference: Literal["solver", "known", "best-observed"] = "best-observed"
    known_optimum: float | None = None
    evaluations: int = 8
    eval_episodes: Mapping[Mode, int] = field(default_factory=lambda: {"quick": 1, "full": 10})

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"task name must be non-empty without '/', got {self.name!r}")
        for mode in MODES:
            budget = self.budgets.get(mode)
            if budget is not None and budget < self.evaluations:
                raise ValueError(
                    f"{self.name}: {mode} budget {budget} is below {self.evaluations} evaluations"
                )
        if self.evaluations < 1:
            raise ValueError(f"{self.name}: evaluations must be >= 1")
        if (self.reference == "known") != (self.known_optimum is not None):
            raise ValueError(f"{self.name}: known_optimum is given exactly when reference == 'known'")

    def eval_steps(self, budget: int) -> tuple[int, ...]:
        """The primary-step counts at which a run of ``budget`` steps is evaluated (ends at ``budget``)."""
        if budget < self.evaluations:
            raise ValueError(f"{self.name}: budget {budget} is below {self.evaluations} evaluations")
        return tuple(sorted({round(budget * (i + 1) / self.evaluations) for i in range(self.evaluations)}))


def _mujoco(name: str, full: int, quick: int | None = None) -> TaskSpec:
    return TaskSpec(
        name=name,
        env_id=f"{name}-v5",
        family="continuous control",
        continuous=True,
        budgets={"quick": quick, "full": full},
        shift=Shift(
            "heavier bodies (mass ×1.25) on slipperier ground (friction ×0.75)",
            physics={"model.body_mass": 1.25, "model.geom_friction": 0.75},
        ),
    )


def _combinatorial(
    name: str, env_id: str, distribution: str, quick: int | None, full: int | None
) -> TaskSpec:
    return TaskSpec(
        name=name,
        env_id=env_id,
        family="discrete optimisation",
        continuous=False,
        budgets={"quick": quick, "full": full},
        shift=Shift(
            f"instances from the {distribution!r} distribution", make_kwargs={"distribution": distribution}
        ),
        reference="solver",
    )


def _key_corridor(name: str, env_id: str, quick: int | None, full: int | None) -> TaskSpec:
    return TaskSpec(
        name=name,
        env_id=env_id,
        family="partially observable",
        continuous=False,
        budgets={"quick": quick, "full": full},
        shift=Shift("observation noise σ = 0.05 on the egocentric view", obs_noise=0.05),
        success="positive_return",
    )


_ALL: Final[tuple[TaskSpec, ...]] = (
    TaskSpec(
        name="CartPole",
        env_id="CartPole-v1",
        family="classic control",
        continuous=False,
        budgets={"quick": None, "full": 20_000},
        shift=Shift("a pole 1.5× as long", physics={"length": 1.5}),
        reference="known",
        known_optimum=500.0,
        eval_episodes={"quick": 1, "full": 5},
    ),
    TaskSpec(
        name="Pendulum",
        env_id="Pendulum-v1",
        family="classic control",
        continuous=True,
        budgets={"quick": None, "full": 20_000},
        shift=Shift("a heavier pendulum (mass ×1.3)", physics={"m": 1.3}),
        eval_episodes={"quick": 1, "full": 5},
    ),
    _mujoco("HalfCheetah", full=50_000, quick=QUICK_BUDGET),
    _mujoco("Ant", full=50_000),
    _mujoco("Walker2d", full=50_000),
    _mujoco("Humanoid", full=50_000),
    _combinatorial("TSP-200", "amal/TSP-200-v0", "clustered", None, 50_000),
    _combinatorial("CVRP-100", "amal/CVRP-100-v0", "clustered", None, 50_000),
    _combinatorial("JSS-50", "amal/JSS-50-v0", "bimodal", None, 50_000),
    _combinatorial("KP-1000", "amal/KP-1000-v0", "correlated", None, 50_000),
    _combinatorial("TSP-20", "amal/TSP-20-v0", "clustered", QUICK_BUDGET, None),
    _combinatorial("KP-50", "amal/KP-50-v0", "correlated", None, None),
    _key_corridor("KeyCorridorS3R1", "MiniGrid-KeyCorridorS3R1-v0", QUICK_BUDGET, 50_000),
    _key_corridor("KeyCorridorS3R2", "MiniGrid-KeyCorridorS3R2-v0", None, 50_000),
    _key_corridor("KeyCorridorS3R3", "MiniGrid-KeyCorridorS3R3-v0", None, 50_000),
    _key_corridor("KeyCorridorS4R3", "MiniGrid-KeyCorridorS4R3-v0", None, 50_000),
    _key_corridor("KeyCorridorS5R3", "MiniGrid-KeyCorridorS5R3-v0", None, 50_000),
    _key_corridor("KeyCorridorS6R3", "MiniGrid-KeyCorridorS6R3-v0", None, 50_000),
    _key_corridor("KeyCorridorS8R4", "amal/KeyCorridorS8R4-v0", None, 50_000),
    TaskSpec(
        name="Trading",
        env_id="amal/Trading-v0",
        family="partially observable",
        continuous=False,
        budgets={"quick": QUICK_BUDGET, "full": 50_000},
        shift=Shift("a more volatile market (volatility ×1.5)", make_kwargs={"volatility_scale": 1.5}),
        reference="solver",
    ),
    TaskSpec(
        name="NewsFilter",
        env_id="amal/NewsFilter-v0",
        family="partially observable",
        continuous=False,
        budgets={"quick": None, "full": 50_000},
        shift=Shift("faster drift of the analyst's interests", make_kwargs={"drift_rate": 2.0}),
        success="info",
        reference="solver",
    ),
)

TASKS: Final[Mapping[str, TaskSpec]] = MappingProxyType({t.name: t for t in _ALL})
"""Every task by name."""


@checked
def task_by_name(name: str) -> TaskSpec:
    """The task called ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark task {name!r}; known: {', '.join(TASKS)}") from None


@checked
def suite(mode: Mode) -> tuple[TaskSpec, ...]:
    """The tasks a ``mode`` run covers by default (those with a budget for it), in catalogue order."""
    return tuple(t for t in _ALL if t.budgets.get(mode) is not None)
