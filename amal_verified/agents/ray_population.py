"""The auxiliary population with its environments on Ray actors (``aux_backend="ray"``).

:class:`RayAuxPopulation` is an :class:`~amal_verified.agents.aux_population.AuxPopulation` whose
environments are stepped by Ray actors: the driver keeps everything else (the CEM and its streams,
the agents' parameters, every :class:`~amal_verified.isolation.buffers.AuxBuffer`, the pending rows),
and a run with it is bit for bit the in-process run with the same configuration.

Chunks
    Actor ``j`` owns the environment runners of a fixed group of agents (``agents_per_actor``
    consecutive indices).  It runs *chunks*: ``L`` steps of its agents with the parameters the driver
    sent, returning plain numpy arrays.  A chunk starts after step ``k0`` and ends at the first step
    ``k1 > k0`` that is a flush of the pending rows into the buffers (every ``flush_every`` steps) or a
    *boundary* the caller declares (the trainer's: CEM generations, which change the parameters, and
    the steps at which it logs or checkpoints).  The driver launches the chunk at step ``k0 + 1`` and
    collects it at step ``k1``: in between, the primary side and the world model run while the actors
    step.  Between ``k0`` and ``k1`` nothing reads what the chunk produces (the buffers change only at
    flushes), so the buffers, the parameters and the counters equal the in-process ones at every
    step at which anything reads them.  A state requested inside a chunk (a checkpoint on a stop
    signal) is made by re-running the first ``k - k0`` steps of the chunk from its start state:
    chunks are deterministic functions of (start state, parameters, length).
Tagging by slot
    Labels do not survive a process boundary.  A returned row goes into the buffer of the agent index
    the driver assigned to that actor and position (slot) of its result, never anywhere the payload
    says; every payload is validated (keys, shapes, dtypes, finite values, one row or one dropped
    transition per step) and a malformed one stops the run with one line naming the actor.
What actors receive
    The environment specification (:class:`~amal_verified.agents.aux_population.AuxEnvSpec`), their
    agents' :class:`~amal_verified.agents.aux_population.AgentSeeds` (derived seeds, never the run
    seed), the policy architecture, their agents' parameters as numpy arrays, step counts and their
    runners' states.  Never the world-model learner, its optimizer or random streams, the primary
    buffer or the run directory; actors write nothing.
Determinism
    An actor computes its agents' actions in one batch of the whole population's size, its agents at
    their own rows and zeros elsewhere (see :func:`~amal_verified.agents.aux_population.step_runners`):
    the same kernels as the in-process batch, hence the same bits.  (torch picks its batched kernels
    by batch size, and which rows come out different from a smaller batch depends on their values:
    measured, 4 of 16 rows at Humanoid's sizes, so no probe can show a smaller batch safe.)  The
    price is a population-sized batch per actor and step.  Actors use the driver's torch thread
    count with deterministic algorithms.
State and faults
    Each chunk returns its runners' end states, so the driver always holds every actor's state at the
    last chunk boundary; :meth:`RayAuxPopulation.state_dict` is the in-process format (checkpoints are
    interchangeable between backends).  An actor that dies is replaced by a new one loaded with that
    state, which re-runs the chunk (at most ``restarts`` times per actor, then
    :class:`AuxBackendError`); every wait is bounded by ``timeout`` seconds.

Ray is imported only when a :class:`RayAuxPopulation` is built (the core install does not need it).
``ray.init`` attaches to the cluster in ``RAY_ADDRESS`` when it is set, else starts a local instance
with as many CPUs as actors (at least the machine's) and no dashboard; a connection made here is
closed when the last population using it is closed.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, final

import numpy as np
import torch
from torch import Tensor

from amal_verified.agents.aux_population import (
    AgentSeeds,
    AuxEnvSpec,
    AuxPopulation,
    Row,
    make_runner,
    step_runners,
)
from amal_verified.agents.cem import FlatMLPPolicy
from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.envs import TaskInfo
from amal_verified.isolation.buffers import PrimaryBuffer

__all__ = ["INSTALL_HINT", "AgentGroupWorker", "AuxBackendError", "RayAuxPopulation", "check_chunk"]

INSTALL_HINT: Final = "pip install 'amal_verified[distributed]'"
_ROW_KEYS: Final = frozenset({"obs", "action", "reward", "next_obs", "terminated", "dropped", "state"})
_STATE_KEYS: Final = frozenset({"episode_seed", "actions", "obs", "episode_return", "seeds"})


class AuxBackendError(RuntimeError):
    """The Ray backend cannot continue (an actor died too often, timed out, or sent a malformed
    chunk); the message is one line naming the actor and what to change."""


def _ray() -> ModuleType:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ImportError(f"aux_backend='ray' needs Ray, which is not installed: {INSTALL_HINT}") from None


# ---------------------------------------------------------------------------------------- the session


@final
class _Session:
    """The Ray connection of this process: made on first use (attached to ``RAY_ADDRESS``, or a local
    instance started), and shut down (disconnected from a cluster) when the last population using it
    closes; a connection the caller made before stays open."""

    users = 0
    started = False

    @classmethod
    def open(cls, cpus: int) -> ModuleType:
        ray = _ray()
        if not ray.is_initialized():
            if os.environ.get("RAY_ADDRESS"):
                ray.init(log_to_driver=False, logging_level="ERROR")
            else:
                # Quiet: Ray's start-up notices (e.g. token authentication enabled for the local
                # instance) are warnings of its "ray" logger, raised to errors for the start only.
                log = logging.getLogger("ray")
                level = log.level
                log.setLevel(logging.ERROR)
                try:
                    ray.init(
                        num_cpus=max(cpus, os.cpu_count() or 1),
                        include_dashboard=False,
                        log_to_driver=False,
                        logging_level="ERROR",
                        configure_logging=False,
                    )
                finally:
                    log.setLevel(level)
            cls.started = True
        cls.users += 1
        return ray

    @classmethod
    def close(cls) -> None:
        cls.users -= 1
        if cls.users == 0 and cls.started:
            cls.started = False
            _ray().shutdown()


# ---------------------------------------------------------------------------------------- the actor


class AgentGroupWorker:
    """The environments of a group of agents, in an actor's process (see the module docstring).

    Holds only what its agents' environments need; :meth:`run` steps them, :meth:`load` restores
    their runners, :meth:`states` reports them.
    """

    def __init__(
        self,
        environment: AuxEnvSpec,
        seeds: Sequence[AgentSeeds],
        slots: Sequence[int],
        population: int,
        policy: tuple[int, int, tuple[int, ...], bool, float],
        threads: int,
    ) -> None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        obs_dim, action_dim, hidden, discrete, scale = policy
        self.policy: Final = FlatMLPPolicy(obs_dim, action_dim, hidden, discrete, action_scale=scale)
        self.environment: Final = environment
        self.slots: Final = tuple(slots)
        self.population: Final = population
        self.runners: Final = [make_runner(environment, s) for s in seeds]

    def states(self) -> list[dict[str, Any]]:
        """The runners' states (:meth:`EnvRunner.state_dict`)."""
        return [r.state_dict() for r in self.runners]

    def load(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Restore the runners (replaying each current episode from its seed)."""
        for runner, state in zip(self.runners, states, strict=True):
            runner.load_state_dict(state)

    def run(self, params: np.ndarray[Any, Any], steps: int) -> list[dict[str, Any]]:
        """``steps`` steps of every agent with ``params`` (``(agents, num_params)``, this group's rows);
        per agent: its stacked transitions, how many it dropped, and its runner's end state."""
        full = torch.zeros((self.population, self.policy.num_params), dtype=torch.float32)
        full[list(self.slots)] = torch.from_numpy(np.asarray(params, dtype=np.float32))
        rows: list[list[Row]] = [[] for _ in self.runners]
        dropped = [0] * len(self.runners)
        for _ in range(steps):
            for k, row in enumerate(
                step_runners(self.policy, full, self.runners, self.environment, self.slots)
            ):
                if row is None:
                    dropped[k] += 1
                else:
                    rows[k].append(row)
        return [
            {**self._stack(agent_rows), "dropped": n, "state": runner.state_dict()}
            for agent_rows, n, runner in zip(rows, dropped, self.runners, strict=True)
        ]

    def _stack(self, rows: Sequence[Row]) -> dict[str, np.ndarray[Any, Any]]:
        action_shape: tuple[int, ...] = () if self.environment.discrete else (self.policy.action_dim,)
        if not rows:
            empty = np.zeros((0, self.policy.obs_dim), dtype=np.float32)
            return {
                "obs": empty,
                "action": np.zeros((0, *action_shape), np.int64 if self.environment.discrete else np.float32),
                "reward": np.zeros((0,), dtype=np.float64),
                "next_obs": empty.copy(),
                "terminated": np.zeros((0,), dtype=bool),
            }
        obs, action, reward, next_obs, terminated = zip(*rows, strict=True)
        return {
            "obs": np.stack(obs),
            "action": np.asarray(action, dtype=np.int64) if self.environment.discrete else np.stack(action),
            "reward": np.asarray(reward, dtype=np.float64),
            "next_obs": np.stack(next_obs),
            "terminated": np.asarray(terminated, dtype=bool),
        }


# The class the driver makes actors of (a test replaces it to play a misbehaving actor).
_WORKER_CLASS: type[AgentGroupWorker] = AgentGroupWorker


@dataclass(slots=True)
class _Chunk:
    start: int  # the step after which it starts
    length: int
    params: list[np.ndarray[Any, Any]]  # per actor
    refs: list[Any]  # per actor


# ---------------------------------------------------------------------------------------- the driver


@final
class RayAuxPopulation:
    """An :class:`AuxPopulation` whose environments run on Ray actors (see the module docstring).

    Same constructor arguments as :class:`AuxPopulation`, plus: ``clock()`` (the number of steps
    taken once the current :meth:`step` is counted: the trainer's primary step), ``boundary(k)``
    (whether anything besides this population reads its state after step ``k``: a chunk ends
    there), ``agents_per_actor``, ``timeout`` (seconds any wait for an actor may take), ``restarts``
    (replacements per actor before the run stops) and ``threads`` (the actors' torch threads, the
    driver's).  The public attributes and methods are :class:`AuxPopulation`'s (``runners`` is
    empty: the runners live in the actors) plus :meth:`close`.
    """

    @checked
    def __init__(
        self,
        task: TaskInfo,
        streams: RunStreams,
        *,
        num_agents: int,
        population: int,
        elite_fraction: float,
        std_floor: float,
        beta: float,
        hidden: int,
        buffer_size: int,
        obs_noise: float | None,
        clock: Callable[[], int],
        boundary: Callable[[int], bool],
        flush_every: int = 25,
        agents_per_actor: int = 1,
        timeout: float = 300.0,
        restarts: int = 2,
        threads: int = 1,
    ) -> None:
        if agents_per_actor < 1:
            raise ValueError(f"agents_per_actor must be a positive integer, got {agents_per_actor}")
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        self.core: Final = AuxPopulation(
            task,
            streams,
            num_agents=num_agents,
            population=population,
            elite_fraction=elite_fraction,
            std_floor=std_floor,
            beta=beta,
            hidden=hidden,
            buffer_size=buffer_size,
            obs_noise=obs_noise,
            flush_every=flush_every,
            environments="remote",
        )
        self.task: Final = task
        self.policy: Final = self.core.policy
        self.cem: Final = self.core.cem
        self.buffers: Final = self.core.buffers
        self.flush_every: Final = flush_every
        self.runners: Final = ()
        self.groups: Final = tuple(
            tuple(range(a, min(a + agents_per_actor, num_agents)))
            for a in range(0, num_agents, agents_per_actor)
        )
        self.timeout: Final = float(timeout)
        self.restarts: Final = restarts
        self._clock: Final = clock
        self._boundary: Final = boundary
        self._threads: Final = threads
        self._seeds: Final = self.core.agent_seeds
        self._restarted = [0] * len(self.groups)
        self._chunk: _Chunk | None = None
        self._closed = False
        self._ray: ModuleType = _Session.open(cpus=max(1, len(self.groups)))
        try:
            self._actors: list[Any] = [self._new_actor(j) for j in range(len(self.groups))]
            # Every agent's runner state at the last chunk boundary (here: as built).
            self._states: list[dict[str, Any]] = [{} for _ in range(num_agents)]
            for j, states in enumerate(self._wait([a.states.remote() for a in self._actors], "start")):
                for i, state in zip(self.groups[j], self._check_states(j, states), strict=True):
                    self._states[i] = state
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ AuxPopulation's surface

    def __len__(self) -> int:
        return self.core.num_agents

    @property
    def params(self) -> Tensor:
        """The agents' parameters ``(N, num_params)``."""
        return self.core.params

    @params.setter
    def params(self, value: Tensor) -> None:
        self.core.params = value

    @property
    def fitness(self) -> Tensor | None:
        """The last generation's fitness."""
        return self.core.fitness

    @property
    def dropped_nonfinite(self) -> int:
        """Transitions dropped as non-finite so far."""
        self._settle()
        return self.core.dropped_nonfinite

    def evolve(
        self, primary: PrimaryBuffer, probes: int, primary_behaviour: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """:meth:`AuxPopulation.evolve`, on the driver (call it at a boundary)."""
        self._settle()
        return self.core.evolve(primary, probes, primary_behaviour)

    def sample(self, batch_size: int, pick: torch.Generator) -> Any:
        """:meth:`AuxPopulation.sample`: the buffers hold exactly the in-process rows."""
        return self.core.sample(batch_size, pick)

    def step(self) -> None:
        """Count one step of every agent: launch a chunk at its first step, collect it at its last."""
        if self._closed:
            raise RuntimeError("this auxiliary population was closed (its run ended): its actors are gone")
        k = self._clock()
        chunk = self._chunk
        if chunk is None:
            chunk = self._launch(k - 1, self._chunk_length(k - 1))
        elif k <= chunk.start or k > chunk.start + chunk.length:
            raise RuntimeError(f"step {k} is outside the running chunk (steps {chunk.start + 1}..)")
        if k == chunk.start + chunk.length:
            self._collect(chunk, chunk.length)

    def state_dict(self) -> dict[str, Any]:
        """:meth:`AuxPopulation.state_dict` (the in-process format) at the current step."""
        self._settle()
        state = self.core.state_dict()
        state["runners"] = [dict(s) for s in self._states]
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`AuxPopulation.state_dict` (either backend's): the driver's part here, each
        actor's runners in the actor."""
        self._discard()
        self.core.load_state_dict(state)
        states = [dict(s) for s in state["runners"]]
        self._wait(
            [a.load.remote([states[i] for i in g]) for a, g in zip(self._actors, self.groups, strict=True)],
            "restore",
        )
        self._states = states

    def close(self) -> None:
        """Stop the actors (and the Ray instance, if this process started it and nothing else uses it)."""
        if self._closed:
            return
        self._closed = True
        for actor in getattr(self, "_actors", []):
            with contextlib.suppress(Exception):  # an actor already gone is what close wants
                self._ray.kill(actor)
        _Session.close()

    # ------------------------------------------------------------------ chunks

    def _chunk_length(self, start: int) -> int:
        limit = self.core.steps_to_flush
        for length in range(1, limit):
            if self._boundary(start + length):
                return length
        return limit

    def _launch(self, start: int, length: int, params: list[np.ndarray[Any, Any]] | None = None) -> _Chunk:
        if params is None:
            params = [self.core.params[list(g)].detach().numpy().copy() for g in self.groups]
        refs = [a.run.remote(p, length) for a, p in zip(self._actors, params, strict=True)]
        self._chunk = _Chunk(start, length, params, refs)
        return self._chunk

    def _collect(self, chunk: _Chunk, steps: int) -> None:
        results = self._gather(chunk)
        rows: list[list[Row]] = [[] for _ in range(len(self))]
        dropped = 0
        for j, result in enumerate(results):
            for i, agent in zip(self.groups[j], result, strict=True):  # the slot decides the agent
                rows[i] = self._rows(agent)
                dropped += int(agent["dropped"])
                self._states[i] = agent["state"]
        self._chunk = None
        self.core.add_steps(rows, steps, dropped)

    def _settle(self) -> None:
        """Make the driver's state the state at the current step (re-running a cut chunk's start)."""
        chunk = self._chunk
        if chunk is None:
            return
        taken = self._clock() - chunk.start
        self._discard()
        if taken > 0:
            self._collect(self._relaunch(chunk, taken), taken)

    def _discard(self) -> None:
        """Wait for the running chunk, if any, and forget it (the actors' runners are then reloaded)."""
        chunk = self._chunk
        if chunk is None:
            return
        self._gather(chunk)
        self._chunk = None

    def _relaunch(self, chunk: _Chunk, length: int) -> _Chunk:
        for j, actor in enumerate(self._actors):
            actor.load.remote([self._states[i] for i in self.groups[j]])
        return self._launch(chunk.start, length, chunk.params)

    def _gather(self, chunk: _Chunk) -> list[list[dict[str, Any]]]:
        """Every actor's validated result, in agent order; a dead actor is replaced and re-runs the
        chunk from its start state."""
        out: list[list[dict[str, Any]]] = []
        for j in range(len(self.groups)):
            while True:
                try:
                    result = self._get(chunk.refs[j], j, f"its {chunk.length}-step chunk")
                    break
                except _ActorLost:
                    self._replace(j)
                    chunk.refs[j] = self._actors[j].run.remote(chunk.params[j], chunk.length)
            out.append(self._check(j, result, chunk.length))
        return out

    def _wait(self, refs: Sequence[Any], what: str) -> list[Any]:
        """Results of one call per actor; a dead actor stops the run (nothing to re-run from)."""
        results = []
        for j, ref in enumerate(refs):
            try:
                results.append(self._get(ref, j, what))
            except _ActorLost as lost:
                raise AuxBackendError(f"{self._name(j)} died during {what}: {lost}") from None
        return results

    def _get(self, ref: Any, j: int, what: str) -> Any:
        ray = self._ray
        try:
            return ray.get(ref, timeout=self.timeout)
        except ray.exceptions.GetTimeoutError:
            raise AuxBackendError(
                f"{self._name(j)} returned nothing for {what} within ray_timeout={self.timeout:g} s; "
                "if its environments are that slow, raise it (--set ray_timeout=SECONDS)"
            ) from None
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            raise _ActorLost(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise AuxBackendError(f"{self._name(j)} failed during {what}: {cause!r}") from None

    def _replace(self, j: int) -> None:
        self._restarted[j] += 1
        if self._restarted[j] > self.restarts:
            raise AuxBackendError(
                f"{self._name(j)} died and has been replaced {self._restarted[j] - 1} times already "
                f"(ray_restarts={self.restarts}); the run stops here and resumes from its last checkpoint "
                "(amal train --resume)"
            )
        with contextlib.suppress(Exception):  # it is gone already
            self._ray.kill(self._actors[j])
        self._actors[j] = self._new_actor(j)
        self._wait([self._actors[j].load.remote([self._states[i] for i in self.groups[j]])], "restore")

    def _new_actor(self, j: int) -> Any:
        cls = self._ray.remote(num_cpus=1, max_restarts=0)(_WORKER_CLASS)
        policy = self.policy
        return cls.remote(
            self.core.environment,
            [self._seeds[i] for i in self.groups[j]],
            self.groups[j],
            len(self),
            (policy.obs_dim, policy.action_dim, policy.hidden, policy.discrete, policy.action_scale),
            self._threads,
        )

    def _name(self, j: int) -> str:
        g = self.groups[j]
        agents = f"agent {g[0]}" if len(g) == 1 else f"agents {g[0]}-{g[-1]}"
        return f"auxiliary actor {j} ({agents})"

    # ------------------------------------------------------------------ validation

    def _check(self, j: int, result: Any, steps: int) -> list[dict[str, Any]]:
        return check_chunk(
            result, task=self.task, agents=len(self.groups[j]), steps=steps, actor=self._name(j)
        )

    def _check_states(self, j: int, states: Any) -> list[dict[str, Any]]:
        if not isinstance(states, list) or not all(_is_runner_state(s) for s in states):
            raise AuxBackendError(f"{self._name(j)} returned malformed runner states")
        return states

    def _rows(self, agent: Mapping[str, Any]) -> list[Row]:
        """Pending rows exactly as :meth:`AuxPopulation.step` makes them."""
        discrete = self.task.discrete
        obs, action, reward, next_obs, terminated = (
            agent[k] for k in ("obs", "action", "reward", "next_obs", "terminated")
        )
        return [
            (
                obs[r].copy(),
                int(action[r]) if discrete else action[r].copy(),
                float(reward[r]),
                next_obs[r].copy(),
                bool(terminated[r]),
            )
            for r in range(obs.shape[0])
        ]


def _is_runner_state(state: Any) -> bool:
    return isinstance(state, dict) and set(state) == _STATE_KEYS


@checked
def check_chunk(result: Any, *, task: TaskInfo, agents: int, steps: int, actor: str) -> list[dict[str, Any]]:
    """``result`` if it is a well-formed chunk of ``steps`` steps of ``agents`` agents of ``task``,
    else :class:`AuxBackendError` (one line naming ``actor`` and the slot): a list of one dict per
    agent with exactly the keys ``obs``, ``next_obs`` (float ``(m, obs_dim)``), ``action`` (int64
    ``(m,)`` in range, or float ``(m, action_dim)``), ``reward`` (float ``(m,)``), ``terminated``
    (bool ``(m,)``), ``dropped`` (int ``d``, ``m + d == steps``) and ``state`` (a runner state);
    numpy arrays only, float values finite."""
    if not isinstance(result, list) or len(result) != agents:
        raise AuxBackendError(
            f"{actor} returned a malformed chunk: expected a list of {agents} agent results, "
            f"got {type(result).__name__}" + (f" of {len(result)}" if isinstance(result, list) else "")
        )
    action_shape: tuple[int, ...] = () if task.discrete else (task.action_dim,)
    for slot, agent in enumerate(result):
        where = f"{actor} returned a malformed chunk (slot {slot})"
        if not isinstance(agent, dict) or set(agent) != _ROW_KEYS:
            keys = sorted(agent) if isinstance(agent, dict) else type(agent).__name__
            raise AuxBackendError(f"{where}: expected the keys {sorted(_ROW_KEYS)}, got {keys}")
        dropped = agent["dropped"]
        if type(dropped) is not int or not 0 <= dropped <= steps:
            raise AuxBackendError(f"{where}: dropped must be an int in [0, {steps}], got {dropped!r}")
        m = steps - dropped
        expected = {
            "obs": ((m, task.obs_dim), "f"),
            "next_obs": ((m, task.obs_dim), "f"),
            "action": ((m, *action_shape), "i" if task.discrete else "f"),
            "reward": ((m,), "f"),
            "terminated": ((m,), "b"),
        }
        for name, (shape, kind) in expected.items():
            value = agent[name]
            if type(value) is not np.ndarray or value.shape != shape or value.dtype.kind != kind:
                got = (
                    f"{value.dtype} array of shape {value.shape}"
                    if isinstance(value, np.ndarray)
                    else type(value).__name__
                )
                raise AuxBackendError(
                    f"{where}: {name} must be a numpy array of shape {shape} (kind {kind!r}; one row per "
                    f"step not dropped), got {got}"
                )
            if kind == "f" and not bool(np.isfinite(value).all()):
                raise AuxBackendError(f"{where}: {name} has non-finite values")
        action = agent["action"]
        if task.discrete and m and not (int(action.min()) >= 0 and int(action.max()) < task.action_dim):
            raise AuxBackendError(f"{where}: actions outside [0, {task.action_dim})")
        if not _is_runner_state(agent["state"]):
            raise AuxBackendError(f"{where}: state is not a runner state")
    return result


class _ActorLost(Exception):
    """An actor's process died (internal: the driver replaces it)."""
