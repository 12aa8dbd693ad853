"""The N auxiliary agents of a run: CEM-evolved policies, each with its own environment and buffer.

Algorithm 1 made concrete:

- The search distribution is a diagonal Gaussian over the flat parameters of a small deterministic
  MLP (:class:`~amal_verified.agents.cem.FlatMLPPolicy`, one hidden layer of ``aux_hidden`` units, tanh).
- Every ``cem_every`` primary steps one generation runs: ``cem_population`` candidates are drawn,
  scored by ``F(ψ) = Diversity(ψ) − β·Distance(ψ, π_φ)`` in behaviour space on a shared probe set of
  primary states (:func:`~amal_verified.agents.cem.fitness`: diversity to the rest of the population,
  distance to the primary policy's behaviour on the same states), the elite fraction refits the
  Gaussian (MLE with a variance floor), and the ``N`` best candidates become the auxiliary agents.
  Before the first generation the agents are ``N`` independent draws of the initial distribution.
- Agent ``i`` acts (deterministically) in its own auxiliary environment — the primary task behind a
  perturbation wrapper (:func:`~amal_verified.agents.aux_env.make_aux_env`) — and writes only to its own
  :class:`~amal_verified.isolation.buffers.AuxBuffer` (source ``aux-<i>``).  Transitions are added in batches
  of ``flush_every`` steps (one validated ``add`` per agent instead of one per step: a buffer's
  checks have a fixed cost per call, which batching shares among the rows; measurements:
  ``benchmarks/README.md``, "Design measurements quoted by the code"); the pending rows are part of
  the checkpointed state.

The environments are stepped in this process (``environments="local"``), or elsewhere
(``environments="remote"``: no runners here; :attr:`AuxPopulation.agent_seeds` says what each agent's
runner is built from, and the backend reports the steps with :meth:`AuxPopulation.add_steps`; see
:mod:`amal_verified.agents.ray_population`).  Both give the same transitions bit for bit
(:func:`step_runners` is the one step function).

Random streams, each with one owner: ``cem`` (the search distribution and the initial agents),
``cem/probes`` (which primary states form a generation's probe set), ``aux/<i>/env`` and
``aux/<i>/episodes`` (agent ``i``'s environment and its episode seeds), ``aux/<i>/buffer`` (agent
``i``'s buffer, which draws the rows the policy reads from it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, final

import numpy as np
import torch
from torch import Tensor

from amal_verified.agents.aux_env import DEFAULT_PHYSICS, make_aux_env
from amal_verified.agents.cem import CEM, FlatMLPPolicy, behaviour, fitness
from amal_verified.agents.env_runner import EnvRunner
from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.envs import TaskInfo
from amal_verified.isolation.buffers import AuxBuffer, PrimaryBuffer

__all__ = ["AgentSeeds", "AuxEnvSpec", "AuxPopulation", "Row", "make_runner", "step_runners"]

Row: TypeAlias = tuple[Any, Any, float, Any, bool]
"""One auxiliary transition as stepped: ``(obs, action, reward, next_obs, terminated)``."""


@final
@dataclass(frozen=True, slots=True)
class AuxEnvSpec:
    """What every auxiliary environment of a run is built from (plain, picklable values only).

    ``physics`` and ``noise`` are :func:`~amal_verified.agents.aux_env.make_aux_env`'s perturbation
    arguments; ``low``/``high`` the action bounds actions are clipped to (``None`` for discrete tasks).
    """

    env_id: str
    physics: dict[str, float]
    noise: dict[str, Any]
    discrete: bool
    low: tuple[float, ...] | None
    high: tuple[float, ...] | None


@final
@dataclass(frozen=True, slots=True)
class AgentSeeds:
    """Agent ``i``'s environment seed (stream ``aux/<i>/env``) and the initial state of its episode-seed
    generator (stream ``aux/<i>/episodes``, a PCG64 state): derived values, never the run seed, so
    whoever holds them can rebuild agent ``i``'s environment and nothing else."""

    env_seed: int
    episodes: Mapping[str, Any]


@checked
def make_runner(environment: AuxEnvSpec, seeds: AgentSeeds) -> EnvRunner:
    """Agent's environment runner: its perturbed environment, reset for its first episode."""
    generator = np.random.Generator(np.random.PCG64())
    generator.bit_generator.state = dict(seeds.episodes)
    env = make_aux_env(
        environment.env_id, seed=seeds.env_seed, physics=environment.physics, **environment.noise
    )
    return EnvRunner(env, generator)


def step_runners(
    policy: FlatMLPPolicy,
    params: Tensor,
    runners: Sequence[EnvRunner],
    environment: AuxEnvSpec,
    slots: Sequence[int] | None = None,
) -> list[Row | None]:
    """Every runner takes one step with its agent's deterministic action; returns its transition, or
    ``None`` where the transition was dropped as non-finite (the runner then restarts its episode).

    ``params`` is ``(P, num_params)`` and runner ``k`` acts with row ``slots[k]`` (default: row ``k``,
    ``P == len(runners)``).  The actions are computed in one batched call over all ``P`` rows, rows
    without a runner observing zeros: a runner's action is then bit for bit the same whichever other
    runners are stepped in the same call, because the batched kernels torch selects depend on ``P``
    (measured: an agent's action computed in a batch of 1 can differ in the last bit from the same
    action computed in a batch of 16), never on the other rows' values.
    """
    slots = range(len(runners)) if slots is None else slots
    rows = [np.asarray(r.obs, dtype=np.float32) for r in runners]
    usable = [bool(np.isfinite(o).all()) for o in rows]
    if len(slots) == params.shape[0]:
        batch = np.stack([o if ok else np.zeros_like(o) for o, ok in zip(rows, usable, strict=True)])
    else:
        batch = np.zeros((params.shape[0], policy.obs_dim), dtype=np.float32)
        for slot, o, ok in zip(slots, rows, usable, strict=True):
            if ok:
                batch[slot] = o
    actions = policy.act(params, torch.as_tensor(batch).unsqueeze(1)).squeeze(1).numpy()
    low = None if environment.low is None else np.asarray(environment.low, dtype=np.float32)
    high = None if environment.high is None else np.asarray(environment.high, dtype=np.float32)
    out: list[Row | None] = []
    for runner, slot, ok in zip(runners, slots, usable, strict=True):
        if not ok:
            runner.restart()
            out.append(None)
            continue
        action = actions[slot]
        env_action: Any = (
            int(action) if environment.discrete else np.clip(action, low, high).astype(np.float32)
        )
        result = runner.step(env_action)
        finite = bool(np.isfinite(np.asarray(result.next_obs, dtype=np.float32)).all()) and bool(
            np.isfinite(np.float32(result.reward))
        )
        if not finite:
            if result.episode_length is None:  # the runner did not start a new episode itself
                runner.restart()
            out.append(None)
            continue
        out.append((result.obs, env_action, result.reward, result.next_obs, result.terminated))
    return out


@final
class AuxPopulation:
    """``num_agents`` auxiliary agents evolved by CEM (see the module docstring)."""

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
        flush_every: int = 25,
        environments: Literal["local", "remote"] = "local",
    ) -> None:
        self.task: Final = task
        self.beta: Final = beta
        scale = 1.0 if task.discrete else max(abs(v) for v in (*task.action_low, *task.action_high))
        self.policy: Final = FlatMLPPolicy(
            task.obs_dim, task.action_dim, (hidden,), task.discrete, action_scale=scale
        )
        cem_generator = streams.torch_generator("cem")
        self._probes: Final = streams.torch_generator("cem/probes")
        init_mean = self.policy.init_params(1, generator=cem_generator)[0]
        self.cem: Final = CEM(
            self.policy.num_params,
            population=population,
            elite_fraction=elite_fraction,
            init_mean=init_mean,
            init_std=max(0.5, std_floor),  # the search may not start narrower than its floor
            std_floor=std_floor,
            generator=cem_generator,
        )
        self.params: Tensor = self.policy.init_params(num_agents, generator=cem_generator)
        self.fitness: Tensor | None = None
        noise: dict[str, Any] = {} if obs_noise is None else {"obs_noise": obs_noise}
        # A task with no default physics perturbation (a user's own environment) gets observation
        # noise only: its auxiliary data still differ from the primary stream, and stay labelled aux.
        physics = DEFAULT_PHYSICS.get(task.env_id, {})
        self.environment: Final = AuxEnvSpec(
            task.env_id,
            dict(physics),
            noise,
            task.discrete,
            None if task.discrete else tuple(float(v) for v in task.action_low),
            None if task.discrete else tuple(float(v) for v in task.action_high),
        )
        # The streams aux/<i>/env and aux/<i>/episodes: their owner is agent i's runner, built here
        # (in-process) or by the actor the seeds are handed to (environments="remote").
        seeds = tuple(
            AgentSeeds(
                streams.int_seed(f"aux/{i}/env"),
                streams.numpy_generator(f"aux/{i}/episodes").bit_generator.state,
            )
            for i in range(num_agents)
        )
        self.num_agents: Final = num_agents
        self.runners: Final = (
            tuple(make_runner(self.environment, s) for s in seeds) if environments == "local" else ()
        )
        self.agent_seeds: Final = () if environments == "local" else seeds
        self.environments: Final = environments
        action_shape = () if task.discrete else (task.action_dim,)
        self.buffers: Final = tuple(
            AuxBuffer(
                buffer_size,
                source=f"aux-{i}",
                obs_shape=(task.obs_dim,),
                action_shape=action_shape,
                seed=streams.int_seed(f"aux/{i}/buffer"),
                action_dtype=torch.int64 if task.discrete else torch.float32,
            )
            for i in range(num_agents)
        )
        self.flush_every: Final = flush_every
        self._pending: list[list[tuple[Any, ...]]] = [[] for _ in range(num_agents)]
        self._steps_since_flush = 0
        self.dropped_nonfinite = 0

    def __len__(self) -> int:
        return self.num_agents

    def step(self) -> None:
        """Every agent takes one step in its own environment; every ``flush_every`` steps the
        transitions go to the agents' buffers.

        An auxiliary environment that produces a non-finite observation or reward (a perturbed
        simulator blowing up, observation noise overflowing float32) loses that transition and
        restarts its episode; :attr:`dropped_nonfinite` counts them and the trainer logs the count.
        An auxiliary agent's data can therefore never stop the run, and never reaches a buffer
        (which would refuse it).
        """
        if self.environments != "local":
            raise RuntimeError("this population's environments are remote: its backend steps them")
        rows = step_runners(self.policy, self.params, self.runners, self.environment)
        for pending, row in zip(self._pending, rows, strict=True):
            if row is None:
                self.dropped_nonfinite += 1
            else:
                pending.append(row)
        self._steps_since_flush += 1
        if self._steps_since_flush >= self.flush_every:
            self._flush()

    def _flush(self) -> None:
        self._steps_since_flush = 0
        for buffer, pending in zip(self.buffers, self._pending, strict=True):
            if pending:
                obs, action, reward, next_obs, terminated = (np.stack(c) for c in zip(*pending, strict=True))
                buffer.add(obs, action, reward.astype(np.float32), next_obs, terminated)
                pending.clear()

    def add_steps(self, rows: Sequence[Sequence[Row]], steps: int, dropped: int) -> None:
        """Record ``steps`` steps of every agent taken by a remote backend (``environments="remote"``):
        ``rows[i]`` are agent ``i``'s transitions, in order, ``dropped`` the transitions dropped as
        non-finite.  The caller ends its chunks at flush points: the buffers receive the rows when
        ``flush_every`` steps have accumulated, exactly as :meth:`step` would have added them."""
        if len(rows) != self.num_agents:
            raise ValueError(f"rows of {len(rows)} agents for a population of {self.num_agents}")
        if self._steps_since_flush + steps > self.flush_every:
            raise ValueError(
                f"{steps} steps would cross a flush ({self._steps_since_flush} of {self.flush_every} taken)"
            )
        for pending, new in zip(self._pending, rows, strict=True):
            pending.extend(new)
        self.dropped_nonfinite += dropped
        self._steps_since_flush += steps
        if self._steps_since_flush >= self.flush_every:
            self._flush()

    @property
    def steps_to_flush(self) -> int:
        """Steps until the pending transitions go to the buffers (1 to ``flush_every``)."""
        return self.flush_every - self._steps_since_flush

    def close(self) -> None:
        """Release what the population holds outside this process (nothing, for in-process agents)."""

    def evolve(
        self, primary: PrimaryBuffer, probes: int, primary_behaviour: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """One CEM generation (Algorithm 1, lines 3-6); the best ``N`` candidates become the agents.

        The probe set is ``probes`` states drawn from ``primary`` (with the ``cem/probes`` stream);
        ``primary_behaviour`` maps them to the primary policy's action probabilities or mean actions,
        ``(B, A)``.  Returns the population's fitness.
        """
        probe_states = primary.sample(probes, generator=self._probes).obs
        candidates = self.cem.ask()
        behaviours = behaviour(self.policy, candidates, probe_states)
        scores = fitness(behaviours, primary_behaviour(probe_states), self.beta, discrete=self.task.discrete)
        self.cem.tell(candidates, scores)
        best = torch.sort(scores, descending=True, stable=True).indices[: len(self)]
        self.params = candidates.index_select(0, best)
        self.fitness = scores
        return scores

    def sample(self, batch_size: int, pick: torch.Generator) -> Any:
        """A batch from one agent's buffer: the agent drawn uniformly (with ``pick``) from those with
        data, the rows with that buffer's own generator."""
        filled = [b for b in self.buffers if len(b) > 0]
        if not filled:
            raise ValueError("no auxiliary agent has stored a transition yet")
        index = int(torch.randint(0, len(filled), (1,), generator=pick))
        return filled[index].sample(batch_size)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """CEM state, current agents, every environment runner and buffer."""
        return {
            "cem": self.cem.state_dict(),
            "params": self.params.clone(),
            "probes": self._probes.get_state(),
            "fitness": None if self.fitness is None else self.fitness.clone(),
            # remote environments: their backend fills in the runners' states
            "runners": [r.state_dict() for r in self.runners],
            "buffers": [b.state_dict() for b in self.buffers],
            "pending": [[[np.asarray(v) for v in row] for row in pending] for pending in self._pending],
            "steps_since_flush": self._steps_since_flush,
            "dropped_nonfinite": self.dropped_nonfinite,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (environments by replaying their recorded episodes)."""
        runners: Sequence[Mapping[str, Any]] = state["runners"]
        if len(runners) != self.num_agents:
            raise ValueError(f"checkpoint has {len(runners)} auxiliary agents, the run has {self.num_agents}")
        self.cem.load_state_dict(state["cem"])
        self.params = state["params"].clone()
        self._probes.set_state(state["probes"])
        self.fitness = None if state["fitness"] is None else state["fitness"].clone()
        if self.environments == "local":
            for runner, s in zip(self.runners, runners, strict=True):
                runner.load_state_dict(s)
        for buffer, s in zip(self.buffers, state["buffers"], strict=True):
            buffer.load_state_dict(s)
        self._pending = [
            [(r[0], r[1].item() if self.task.discrete else r[1], float(r[2]), r[3], bool(r[4])) for r in rows]
            for rows in state["pending"]
        ]
        # checkpoints written before these counters existed: every agent then kept every transition
        self._steps_since_flush = int(state.get("steps_since_flush", len(self._pending[0])))
        self.dropped_nonfinite = int(state.get("dropped_nonfinite", 0))
