"""The job-shop scheduling task (paper §6.1, ``amal/JSS-50-v0`` = 50×10, ``amal/JSS-10-v0`` = 10×5).

Instances (:func:`generate_instance`): ``J`` jobs, each visiting every one of ``M`` machines
exactly once, in an order that is a uniformly random permutation per job (Taillard 1993).
Integer processing times: ``"taillard"`` uniform in 1..99; the shifted ``"bimodal"``: each
operation short (uniform 1..20) or long (uniform 80..99) with probability 1/2 each.

Episodes (:class:`JobShopEnv`): each step dispatches the next operation of one job; it starts at
``max(job ready time, machine free time)`` (appended to the machine's sequence, no insertion
into idle gaps), so every episode builds a feasible semi-active schedule.  Action
``Discrete(J)``: the job to dispatch.  An invalid action (a finished job) is replaced by the
**lowest-index unfinished job** and ``info["invalid_action"]`` is True.  Reward: minus the increase
of the current makespan (latest completion time so far), so the return is minus the final
makespan.  Exactly ``J·M`` steps per episode (the attribute ``max_steps``, which
:func:`amal_verified.envs.task_info` reports as ``max_episode_steps``).  Observation, 1-D float32
in [0,1] of length ``J·(M + 5) + M + 1``, with ``H`` = the sum of all processing times (an upper
bound on every time in an episode) and ``P`` = the longest processing time::

    per job j (M + 5 entries): [one-hot machine of the next operation (M; zeros when finished),
        next duration / P, job ready time / H, earliest start of the next operation / H,
        operations done / M, remaining work / H]
    per machine (M): time the machine becomes free / H
    current makespan / H (1)

At termination ``info["makespan"]`` is the makespan and ``info["start_times"]`` the schedule:
an ``int64`` (J, M) array, entry ``[j, k]`` the start of job j's k-th operation.
``reset(options={"instance": inst})`` plays a given :class:`JobShopInstance`.

Solutions: :func:`reference_solution` (OR-Tools CP-SAT), :func:`heuristic_solution`
(earliest start, then most work remaining, dispatching), :func:`validate_solution`.
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
    import_cp_model,
    instance_option,
    lowest_valid,
    parse_action,
    read_only,
)

__all__ = [
    "DISTRIBUTIONS",
    "JobShopEnv",
    "JobShopInstance",
    "Solution",
    "generate_instance",
    "heuristic_solution",
    "reference_solution",
    "validate_solution",
]

DISTRIBUTIONS: Final[tuple[str, ...]] = ("taillard", "bimodal")
"""Instance distributions: the standard one first, then the shifted one."""

_MIN_JOBS: Final = 2
_MIN_MACHINES: Final = 1


@checked
@dataclass(frozen=True, eq=False)
class JobShopInstance:
    """``machines[j, k]``: the machine of job j's k-th operation (each row a permutation of
    0..M-1); ``durations[j, k]``: its processing time (integer >= 1).  Both (J, M), J >= 2, stored
    as read-only int64 copies."""

    machines: npt.NDArray[np.integer[Any]]
    durations: npt.NDArray[np.integer[Any]]

    def __post_init__(self) -> None:
        if self.machines.ndim != 2:
            raise ValueError(f"machines must have shape (jobs, machines), got {self.machines.shape}")
        num_jobs, num_machines = self.machines.shape
        if num_jobs < _MIN_JOBS or num_machines < _MIN_MACHINES:
            raise ValueError(
                f"a job-shop instance needs >= {_MIN_JOBS} jobs and >= {_MIN_MACHINES} machine, "
                f"got {self.machines.shape}"
            )
        if self.durations.shape != self.machines.shape:
            raise ValueError(
                f"durations must have the shape of machines {self.machines.shape}, got {self.durations.shape}"
            )
        if not np.array_equal(
            np.sort(self.machines, axis=1), np.tile(np.arange(num_machines), (num_jobs, 1))
        ):
            raise ValueError("each row of machines must be a permutation of 0..M-1")
        if np.any(self.durations < 1):
            raise ValueError("durations must be >= 1")
        object.__setattr__(self, "machines", read_only(self.machines.astype(np.int64)))
        object.__setattr__(self, "durations", read_only(self.durations.astype(np.int64)))

    @property
    def num_jobs(self) -> int:
        """The number of jobs J."""
        return int(self.machines.shape[0])

    @property
    def num_machines(self) -> int:
        """The number of machines M."""
        return int(self.machines.shape[1])


@checked
def generate_instance(
    num_jobs: int, num_machines: int, rng: np.random.Generator, distribution: str = "taillard"
) -> JobShopInstance:
    """A random ``num_jobs`` (>= 2) × ``num_machines`` (>= 1) instance (see the module docstring)."""
    check_count("num_jobs", num_jobs, _MIN_JOBS)
    check_count("num_machines", num_machines, _MIN_MACHINES)
    check_distribution(distribution, DISTRIBUTIONS)
    shape = (num_jobs, num_machines)
    machines = rng.permuted(np.tile(np.arange(num_machines), (num_jobs, 1)), axis=1)
    if distribution == "taillard":
        durations = rng.integers(1, 100, size=shape)
    else:
        long = rng.random(shape) < 0.5
        durations = np.where(long, rng.integers(80, 100, size=shape), rng.integers(1, 21, size=shape))
    return JobShopInstance(machines, durations)


@checked
def validate_solution(instance: JobShopInstance, solution: npt.NDArray[np.integer[Any]]) -> float:
    """The makespan of the schedule ``solution`` (start times, (J, M)); ``ValueError`` on a
    negative start, an operation starting before its job's previous one ends, or two
    operations overlapping on a machine."""
    shape = instance.machines.shape
    if solution.shape != shape:
        raise ValueError(f"start times must have shape {shape}, got {solution.shape}")
    starts = solution.astype(np.int64)
    if np.any(starts < 0):
        raise ValueError("start times must be >= 0")
    ends = starts + instance.durations
    late = np.flatnonzero(np.any(starts[:, 1:] < ends[:, :-1], axis=1))
    if late.size:
        raise ValueError(f"job {late[0]} starts an operation before its previous operation ends")
    for machine in range(instance.num_machines):
        on_machine = instance.machines == machine
        order = np.argsort(starts[on_machine], kind="stable")
        s, e = starts[on_machine][order], ends[on_machine][order]
        if np.any(s[1:] < e[:-1]):
            raise ValueError(f"two operations overlap on machine {machine}")
    return float(ends.max())


class _Schedule:
    """The dispatching state shared by the environment and the heuristic."""

    def __init__(self, instance: JobShopInstance) -> None:
        self.instance = instance
        self.next_op = np.zeros(instance.num_jobs, dtype=np.int64)
        self.job_ready = np.zeros(instance.num_jobs, dtype=np.int64)
        self.machine_free = np.zeros(instance.num_machines, dtype=np.int64)
        self.remaining = instance.durations.sum(axis=1)
        self.starts = np.full(instance.machines.shape, -1, dtype=np.int64)
        self.makespan = 0

    def unfinished(self) -> npt.NDArray[np.bool_]:
        return self.next_op < self.instance.num_machines

    def earliest_starts(self) -> npt.NDArray[np.int64]:
        """Earliest start of each job's next operation (its ready time once finished)."""
        op = np.minimum(self.next_op, self.instance.num_machines - 1)
        machines = self.instance.machines[np.arange(self.instance.num_jobs), op]
        return np.where(
            self.unfinished(), np.maximum(self.job_ready, self.machine_free[machines]), self.job_ready
        )

    def dispatch(self, job: int) -> int:
        """Schedule ``job``'s next operation; returns the makespan increase."""
        op = int(self.next_op[job])
        machine = int(self.instance.machines[job, op])
        duration = int(self.instance.durations[job, op])
        start = max(int(self.job_ready[job]), int(self.machine_free[machine]))
        end = start + duration
        self.starts[job, op] = start
        self.job_ready[job] = end
        self.machine_free[machine] = end
        self.next_op[job] = op + 1
        self.remaining[job] -= duration
        increase = max(0, end - self.makespan)
        self.makespan += increase
        return increase


@checked
def heuristic_solution(instance: JobShopInstance) -> Solution:
    """Dispatch, at every step, the unfinished job whose next operation can start earliest; ties
    go to the most work remaining, then to the lowest index."""
    schedule = _Schedule(instance)
    for _ in range(instance.num_jobs * instance.num_machines):
        unfinished = schedule.unfinished()
        earliest = np.where(unfinished, schedule.earliest_starts(), np.iinfo(np.int64).max)
        # np.lexsort sorts by the last key first; a stable sort keeps the lowest index first.
        job = int(np.lexsort((-schedule.remaining, earliest))[0])
        schedule.dispatch(job)
    starts = schedule.starts
    return Solution(validate_solution(instance, starts), read_only(starts), "earliest_start_mwkr", False)


@checked
def reference_solution(
    instance: JobShopInstance,
    *,
    time_limit_s: float = 120.0,
    deterministic_time_limit: float = 10.0,
    random_seed: int = 0,
) -> Solution:
    """OR-Tools CP-SAT: interval variables, one no-overlap constraint per machine, minimise the
    makespan, warm-started from :func:`heuristic_solution`.

    One worker interleaving CP-SAT's search strategies, fixed ``random_seed``; stops at proved
    optimality, at ``deterministic_time_limit`` (CP-SAT's deterministic time, reproducible
    across machines) or at ``time_limit_s`` wall-clock seconds (machine-dependent; ``method``
    then ends in ``"(time-limited)"``), whichever comes first.  ``optimal`` is True when CP-SAT proved
    optimality.  Raises ``ModuleNotFoundError`` naming the ``bench`` extra without OR-Tools.
    """
    if not time_limit_s > 0.0:
        raise ValueError(f"time_limit_s must be > 0, got {time_limit_s}")
    if not deterministic_time_limit > 0.0:
        raise ValueError(f"deterministic_time_limit must be > 0, got {deterministic_time_limit}")
    cp_model = import_cp_model()
    hint = heuristic_solution(instance).solution
    horizon = int(instance.durations.sum())
    model = cp_model.CpModel()
    starts: list[list[Any]] = []
    ends: list[Any] = []
    per_machine: list[list[Any]] = [[] for _ in range(instance.num_machines)]
    for job in range(instance.num_jobs):
        row = []
        previous_end = None
        for op in range(instance.num_machines):
            duration = int(instance.durations[job, op])
            start = model.NewIntVar(0, horizon, f"s{job}_{op}")
            end = model.NewIntVar(0, horizon, f"e{job}_{op}")
            per_machine[int(instance.machines[job, op])].append(
                model.NewIntervalVar(start, duration, end, f"i{job}_{op}")
            )
            if previous_end is not None:
                model.Add(start >= previous_end)
            model.AddHint(start, int(hint[job, op]))
            row.append(start)
            previous_end = end
        starts.append(row)
        ends.append(previous_end)
    for intervals in per_machine:
        model.AddNoOverlap(intervals)
    makespan = model.NewIntVar(0, horizon, "makespan")
    model.AddMaxEquality(makespan, ends)
    model.Minimize(makespan)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    # Interleaves CP-SAT's portfolio (LNS included) on the one thread, deterministically: on
    # 50×10 Taillard instances it proves optimality where plain single-worker search stalls.
    solver.parameters.interleave_search = True
    solver.parameters.random_seed = random_seed
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.max_deterministic_time = deterministic_time_limit
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"CP-SAT found no schedule ({solver.StatusName(status)}); raise the time limits")
    solution = np.array([[solver.Value(s) for s in row] for row in starts], dtype=np.int64)
    optimal = status == cp_model.OPTIMAL
    time_limited = not optimal and solver.WallTime() >= 0.9 * time_limit_s
    method = "ortools_cpsat" + (TIME_LIMITED if time_limited else "")
    return Solution(validate_solution(instance, solution), read_only(solution), method, optimal)


class JobShopEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """Constructive job-shop episodes (see the module docstring for the spaces, reward and rules)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  # gymnasium's class attribute

    @checked
    def __init__(self, num_jobs: int = 10, num_machines: int = 5, distribution: str = "taillard") -> None:
        check_count("num_jobs", num_jobs, _MIN_JOBS)
        check_count("num_machines", num_machines, _MIN_MACHINES)
        check_distribution(distribution, DISTRIBUTIONS)
        self.num_jobs = num_jobs
        self.num_machines = num_machines
        self.distribution = distribution
        size = num_jobs * (num_machines + 5) + num_machines + 1
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(num_jobs)
        # The episode-length bound; task_info reports it as max_episode_steps.
        self.max_steps = num_jobs * num_machines
        self._schedule: _Schedule | None = None
        self._horizon = 1.0
        self._longest = 1.0

    @property
    def instance(self) -> JobShopInstance:
        """The current episode's instance (``RuntimeError`` before the first reset)."""
        if self._schedule is None:
            raise RuntimeError("call reset() before reading the instance")
        return self._schedule.instance

    def _obs(self) -> npt.NDArray[np.float32]:
        assert self._schedule is not None
        sched, inst = self._schedule, self._schedule.instance
        num_jobs, num_machines = self.num_jobs, self.num_machines
        unfinished = sched.unfinished()
        op = np.minimum(sched.next_op, num_machines - 1)
        jobs = np.arange(num_jobs)
        per_job = np.zeros((num_jobs, num_machines + 5), dtype=np.float64)
        per_job[jobs[unfinished], inst.machines[jobs, op][unfinished]] = 1.0
        per_job[:, num_machines] = np.where(unfinished, inst.durations[jobs, op], 0) / self._longest
        per_job[:, num_machines + 1] = sched.job_ready / self._horizon
        per_job[:, num_machines + 2] = sched.earliest_starts() / self._horizon
        per_job[:, num_machines + 3] = sched.next_op / num_machines
        per_job[:, num_machines + 4] = sched.remaining / self._horizon
        tail = np.concatenate([sched.machine_free / self._horizon, [sched.makespan / self._horizon]])
        return np.concatenate([per_job.reshape(-1), tail]).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start an empty schedule for a fresh instance (or for ``options["instance"]``)."""
        super().reset(seed=seed)
        instance = instance_option(options, JobShopInstance)
        if instance is None:
            instance = generate_instance(self.num_jobs, self.num_machines, self.np_random, self.distribution)
        elif instance.machines.shape != (self.num_jobs, self.num_machines):
            raise ValueError(
                f"the instance is {instance.num_jobs}×{instance.num_machines}, "
                f"this env {self.num_jobs}×{self.num_machines}"
            )
        self._schedule = _Schedule(instance)
        self._horizon = float(instance.durations.sum())
        self._longest = float(instance.durations.max())
        return self._obs(), {}

    def step(self, action: Any) -> tuple[npt.NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Dispatch job ``action`` (see the module docstring for invalid actions and the reward)."""
        sched = self._schedule
        if sched is None or not sched.unfinished().any():
            raise RuntimeError("step() called before reset() or after the episode terminated")
        job, invalid = lowest_valid(parse_action(action, self.num_jobs), sched.unfinished())
        increase = sched.dispatch(job)
        terminated = not sched.unfinished().any()
        info: dict[str, Any] = {"invalid_action": invalid}
        if terminated:
            info["makespan"] = validate_solution(sched.instance, sched.starts)
            info["start_times"] = read_only(sched.starts)
        return self._obs(), -float(increase), terminated, False, info
