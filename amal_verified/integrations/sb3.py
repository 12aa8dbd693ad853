"""A Stable-Baselines3 callback that trains a gated world model beside an off-policy agent.

Needs the ``sb3`` extra (``pip install 'amal_verified[sb3]'``); without Stable-Baselines3 importing
this module raises an ``ImportError`` naming that command.

:class:`GatedWorldModelCallback` works with any off-policy SB3 agent with a ``ReplayBuffer`` and Box
observation and action spaces (SAC, TD3, DDPG), on ``n_envs >= 1`` vectorised environments:

- every environment step it copies the real transitions of all ``n_envs`` environments from
  ``self.locals`` into an :class:`~amal_verified.PrimaryBuffer` (the observation each action was taken
  in is the agent's ``_last_obs``; where an episode ended the successor is
  ``infos[i]["terminal_observation"]``; under ``VecNormalize`` the unnormalised values, as SB3 stores
  them); the primary buffer has its own generator and returns ``PrimaryData`` batches;
- it asks :meth:`~GatedWorldModelCallback.auxiliary_transitions` for auxiliary transitions (the hook;
  by default each of ``aux_envs`` is stepped once with the agent's stochastic policy) and adds them to
  the agent's replay buffer, ``n_envs`` rows per ``add`` as SB3's buffer takes them (rows that do not
  yet fill an ``add`` wait for the next step): the *agent* learns from real and auxiliary data;
- every ``train_freq`` environment steps, once ``batch_size`` real transitions are stored, it takes
  ``gradient_steps`` Adam steps of the world model's mean squared error on primary batches through an
  :class:`~amal_verified.GatedOptimizer`, which refuses any update that auxiliary data reached.

The world model is :class:`WorldModel` (an MLP ``(obs, action) ↦ next_obs − obs``) unless
``world_model=`` names a factory ``(obs_dim, action_dim, generator) -> nn.Module`` whose module maps
``(obs, action)`` batches of shapes ``(b, obs_dim)``, ``(b, action_dim)`` to ``(b, obs_dim)``
predictions of ``next_obs − obs`` and draws its initial parameters from ``generator`` only.

Random streams, each owned by the callback and derived from ``seed`` alone
(:class:`~amal_verified.RunStreams`): the world model's initialisation, the primary buffer's
sampling, the agent's action sampling for the auxiliary environments (drawn under a saved and
restored global torch state, so the agent's own stream is the same with or without auxiliary
environments) and the auxiliary environments' reset seeds.  Same seed, same agent seed, same world
model, bit for bit.

Saving and loading
==================
SB3's ``agent.save(path)`` writes the agent only (``save_replay_buffer`` its buffer); the world model
is the callback's.  :meth:`GatedWorldModelCallback.save` writes the callback's state next to it
(an :func:`amal_verified.record.checkpoint.save_checkpoint` file, loadable with
``torch.load(weights_only=True)``): its settings, the world model's parameters, the optimizer's
state, the primary buffer, its counters and its own random streams.
:meth:`GatedWorldModelCallback.load` rebuilds a callback from that file: a world model wrapped in a
fresh ``GatedOptimizer`` that protects it, its optimizer state loaded *through the gate* (state that
carries an auxiliary label is refused), the primary buffer restored bit for bit.  Continue with
``agent.learn(n, callback=loaded, reset_num_timesteps=False)``.  The auxiliary environments and a
recording (``record=True``) are not saved: pass the environments to ``load``; they are reset when
the first ``learn()`` after loading starts.  A callback without a world model given an agent that
has already taken steps (``num_timesteps > 0``, i.e. ``reset_num_timesteps=False``) refuses to
start rather than silently start an untrained world model beside a resumed agent.

Auditing
========
SB3's replay buffer holds untagged NumPy arrays, so the gate cannot see a world model trained from it
(the example's ``LeakyWorldModelCallback`` does that).  The differential audit can:
``record=True`` keeps every real and auxiliary transition, :meth:`~GatedWorldModelCallback.recording`
returns them, and :func:`replay_world_model` replays them through the callback's own update path
(:meth:`~GatedWorldModelCallback.step`); that replay reproduces the live world model bit for bit and
must not depend on the auxiliary streams (``amal_verified.audit.check_noninterference``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.isolation.errors import TaggingError, TrackingError
from amal_verified.isolation.gate import GatedOptimizer
from amal_verified.record.checkpoint import load_checkpoint, save_checkpoint

_EXTRA_HINT: Final = (
    "amal_verified.integrations.sb3 needs Stable-Baselines3, which is not installed: "
    "pip install 'amal_verified[sb3]'"
)

try:
    import gymnasium as gym
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.callbacks import BaseCallback
except ModuleNotFoundError as _exc:
    if (_exc.name or "").split(".")[0] not in {"stable_baselines3", "gymnasium"}:
        raise
    raise ImportError(_EXTRA_HINT) from None

__all__ = [
    "GatedWorldModelCallback",
    "Transitions",
    "WorldModel",
    "WorldModelFactory",
    "replay_world_model",
]

WorldModelFactory: TypeAlias = Callable[[int, int, torch.Generator], nn.Module]
"""``(obs_dim, action_dim, generator) -> world model``; see the module docstring."""

_FIELDS: Final = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")
_STATE_FORMAT: Final = 1
_STATE_KEYS: Final = frozenset(
    {
        "format",
        "kind",
        "world_model_factory",
        "config",
        "obs_shape",
        "action_low",
        "action_high",
        "world_model",
        "optimizer",
        "primary_buffer",
        "real_steps",
        "aux_added",
        "world_model_loss",
        "aux_policy_rng",
        "pending_aux",
    }
)


@checked
@dataclass(frozen=True)
class Transitions:
    """``n`` transitions as NumPy arrays: ``obs``, ``next_obs`` ``(n, obs_dim)``, ``actions``
    ``(n, action_dim)`` in the environment's units, ``rewards`` ``(n,)``, ``terminated`` and
    ``truncated`` ``(n,)`` bool.  Construction checks the ranks and that every field has ``n`` rows
    (``ValueError`` otherwise)."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __post_init__(self) -> None:
        ranks = {"obs": 2, "actions": 2, "rewards": 1, "next_obs": 2, "terminated": 1, "truncated": 1}
        for name, rank in ranks.items():
            value = getattr(self, name)
            if value.ndim != rank:
                raise ValueError(
                    f"Transitions.{name} must have {rank} dimension(s) (rows first), got shape {value.shape}"
                )
        counts = {name: len(getattr(self, name)) for name in _FIELDS}
        if len(set(counts.values())) != 1:
            raise ValueError(f"Transitions fields must have the same number of rows, got {counts}")
        if self.obs.shape != self.next_obs.shape:
            raise ValueError(
                f"Transitions.obs and next_obs must have the same shape, got {self.obs.shape} "
                f"and {self.next_obs.shape}"
            )

    def __len__(self) -> int:
        return len(self.obs)

    def rows(self, start: int, stop: int) -> Transitions:
        """Rows ``[start, stop)`` of every field."""
        return Transitions(*(getattr(self, f)[start:stop] for f in _FIELDS))

    @staticmethod
    def concatenate(parts: Sequence[Transitions]) -> Transitions:
        """The rows of ``parts`` in order (at least one part)."""
        return Transitions(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    @staticmethod
    def from_dict(arrays: dict[str, Any]) -> Transitions:
        """From a dict holding the six fields as arrays (extra keys are ignored)."""
        missing = [f for f in _FIELDS if f not in arrays]
        if missing:
            raise ValueError(f"transitions need the fields {list(_FIELDS)}; missing {missing}")
        return Transitions(*(np.asarray(arrays[f]) for f in _FIELDS))

    def as_dict(self) -> dict[str, np.ndarray]:
        """The six fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@checked
class WorldModel(nn.Module):
    """``next_obs − obs ≈ f(obs, action)``: a two-hidden-layer tanh MLP initialised from ``generator``
    alone (uniform in ``±1/sqrt(fan_in)``, as ``nn.Linear``'s default)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        if min(obs_dim, action_dim, hidden) < 1:
            raise ValueError(
                f"WorldModel needs positive sizes, got obs_dim={obs_dim}, action_dim={action_dim}, "
                f"hidden={hidden}"
            )
        self.net = nn.Sequential(
            nn.Linear(obs_dim + action_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, obs_dim),
        )
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    bound = 1 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(torch.cat([obs, action], dim=-1))
        return out


def _factory_name(factory: WorldModelFactory | None) -> str:
    if factory is None:
        return f"{__name__}.WorldModel"
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def _flat_dim(space: gym.Space[Any], what: str) -> int:
    if not isinstance(space, gym.spaces.Box):
        if what == "action":
            fix = (
                "the callback serves continuous-action off-policy agents (SAC, TD3, DDPG) on environments "
                "with Box actions; discrete-action agents such as DQN are not supported"
            )
        else:
            fix = (
                "wrap the environment so that its observations are one Box "
                "(e.g. gymnasium.wrappers.FlattenObservation)"
            )
        raise TypeError(f"GatedWorldModelCallback needs a Box {what} space, got {space}; {fix}")
    return int(np.prod(space.shape))


def _env_name(env: object) -> str:
    """``env``'s registered id, or its class name if it has none."""
    env_id = getattr(getattr(env, "spec", None), "id", None)
    return repr(env_id) if isinstance(env_id, str) and env_id else type(env).__name__


def _same_box(a: gym.Space[Any], b: gym.Space[Any], *, bounds: bool) -> bool:
    """Both are Boxes of one shape (and, with ``bounds``, the same float32 bounds)."""
    if not (isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box)) or a.shape != b.shape:
        return False
    return not bounds or all(
        np.array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))
        for x, y in ((a.low, b.low), (a.high, b.high))
    )


@checked
class GatedWorldModelCallback(BaseCallback):
    """Trains a gated world model on the real transitions of an off-policy SB3 agent and feeds the
    agent auxiliary transitions (see the module docstring for the contract).

    ``aux_envs``: auxiliary environments with the agent's spaces (its observation shape and its
    action space; checked when ``learn`` starts, ``ValueError`` naming the environment and both
    spaces otherwise), stepped by the default :meth:`auxiliary_transitions`.  ``world_model``: a
    :data:`WorldModelFactory`, or ``None`` for :class:`WorldModel` with ``hidden`` units.
    ``train_freq``: environment steps between world-model rounds; ``gradient_steps``: updates per
    round; ``batch_size``, ``learning_rate`` (Adam), ``buffer_size`` (the primary buffer's capacity,
    in transitions); ``seed``: the callback's random streams; ``record``: keep every transition for
    :meth:`recording`.

    Attributes once built (when ``learn`` starts, or by :meth:`load`): ``world_model``,
    ``wm_optimizer`` (the ``GatedOptimizer``), ``primary_buffer``, ``agent_buffer`` (the agent's
    replay buffer), ``real_steps`` (environment steps seen, each ``n_envs`` transitions),
    ``aux_added`` (auxiliary rows added to the agent's buffer), ``world_model_loss`` (of the last
    update, NaN before the first).
    """

    def __init__(
        self,
        aux_envs: Sequence[gym.Env[Any, Any]] = (),
        *,
        world_model: WorldModelFactory | None = None,
        train_freq: int = 100,
        gradient_steps: int = 20,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        hidden: int = 64,
        buffer_size: int = 100_000,
        seed: int = 0,
        record: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        for name, value in (
            ("train_freq", train_freq),
            ("gradient_steps", gradient_steps),
            ("hidden", hidden),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")
        if batch_size < 1 or buffer_size < batch_size:
            raise ValueError(
                f"need 1 <= batch_size <= buffer_size, got batch_size={batch_size}, buffer_size={buffer_size}"
            )
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate}")
        self.aux_envs = list(aux_envs)
        self.world_model_factory = world_model
        self.config: dict[str, Any] = {
            "train_freq": train_freq,
            "gradient_steps": gradient_steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "hidden": hidden,
            "buffer_size": buffer_size,
            "seed": seed,
        }
        self.record = record
        self.recorded_primary: list[Transitions] = []
        self.recorded_aux: list[list[Transitions]] = [[] for _ in self.aux_envs]
        self.world_model_loss = float("nan")
        self.real_steps = 0
        self.aux_added = 0
        self.n_envs = 0  # known once real transitions arrive (or once an agent buffer is attached)
        self._pending_aux: Transitions | None = None
        # auxiliary transitions dropped for NaN/Inf since this object was made (not saved)
        self.dropped_aux_rows = 0
        self._warned_sources: set[int] = set()
        self._aux_obs: list[Any] | None = None
        streams = RunStreams(seed)
        self._init_generator = streams.torch_generator("sb3-world-model-init")
        self._buffer_seed = streams.int_seed("sb3-primary-buffer")
        self._aux_policy_rng = streams.torch_generator("sb3-aux-policy").get_state()
        self._aux_env_seeds = [streams.int_seed(f"sb3-aux-env-{i}") for i in range(len(self.aux_envs))]

    # ------------------------------------------------------------------------------- construction

    @property
    def built(self) -> bool:
        """Whether the world model, its optimizer and the primary buffer exist."""
        return hasattr(self, "world_model")

    def build(self, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        """Create the world model (from the callback's initialisation stream), its ``GatedOptimizer``
        and the primary buffer for these Box spaces.  ``learn`` calls it; call it yourself only to use
        :meth:`step` without an agent (as :func:`replay_world_model` does)."""
        if self.built:
            raise RuntimeError("this GatedWorldModelCallback is already built; construct a new one")
        obs_dim = _flat_dim(observation_space, "observation")
        action_dim = _flat_dim(action_space, "action")
        assert isinstance(action_space, gym.spaces.Box)
        assert isinstance(observation_space, gym.spaces.Box)
        self.obs_shape: tuple[int, ...] = tuple(observation_space.shape)
        self.action_low = np.asarray(action_space.low, dtype=np.float32).reshape(-1)
        self.action_high = np.asarray(action_space.high, dtype=np.float32).reshape(-1)
        if not (np.all(np.isfinite(self.action_low)) and np.all(np.isfinite(self.action_high))):
            raise ValueError("GatedWorldModelCallback needs a bounded Box action space (finite low and high)")
        cfg = self.config
        if self.world_model_factory is None:
            model: nn.Module = WorldModel(obs_dim, action_dim, cfg["hidden"], self._init_generator)
        else:
            model = self.world_model_factory(obs_dim, action_dim, self._init_generator)
            if not isinstance(model, nn.Module):
                raise TypeError(
                    f"world_model= must return an nn.Module, got {type(model).__name__} "
                    f"from {_factory_name(self.world_model_factory)}"
                )
        if not any(True for _ in model.parameters()):
            raise ValueError(
                "the world model has no parameters to train; world_model= must build one that has"
            )
        adam = torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])
        self.world_model = model
        self.wm_optimizer = GatedOptimizer(adam, names=model)
        self.primary_buffer = PrimaryBuffer(
            cfg["buffer_size"], obs_shape=(obs_dim,), action_shape=(action_dim,), seed=self._buffer_seed
        )

    def attach(self, agent_buffer: ReplayBuffer) -> None:
        """Send the auxiliary transitions to ``agent_buffer`` (``learn`` attaches the agent's own)."""
        if agent_buffer.optimize_memory_usage:
            raise ValueError(
                "the agent's replay buffer has optimize_memory_usage=True, which stores each next "
                "observation as the following row's observation and so cannot hold auxiliary rows; "
                "create the agent with optimize_memory_usage=False"
            )
        if self.built:
            want = (int(np.prod(self.obs_shape)), len(self.action_low))
            got = (int(np.prod(agent_buffer.obs_shape)), int(agent_buffer.action_dim))
            if got != want:
                raise ValueError(
                    f"the agent's (observation, action) sizes are {got} but this callback's world model "
                    f"was built for {want}; use a callback built for this agent's spaces"
                )
        self.agent_buffer = agent_buffer
        self.n_envs = int(agent_buffer.n_envs)

    def _check_aux_envs(self, observation_space: gym.Space[Any], action_space: gym.Space[Any]) -> None:
        """``ValueError`` naming the first auxiliary environment whose observation shape or action space
        (shape and bounds) differs from the agent's Box spaces."""
        for i, env in enumerate(self.aux_envs):
            aux_obs, aux_action = env.observation_space, env.action_space
            if not (
                _same_box(aux_obs, observation_space, bounds=False)
                and _same_box(aux_action, action_space, bounds=True)
            ):
                raise ValueError(
                    f"aux_envs[{i}] ({_env_name(env)}) has observation space {aux_obs} and action space "
                    f"{aux_action}, but the agent has {observation_space} and {action_space}; pass "
                    "auxiliary environments with the agent's observation shape and action space"
                )

    def _init_callback(self) -> None:
        replay_buffer = getattr(self.model, "replay_buffer", None)
        if not isinstance(replay_buffer, ReplayBuffer):
            raise TypeError(
                f"{type(self).__name__} needs an off-policy agent with a ReplayBuffer (SAC, TD3, DDPG)"
            )
        observation_space, action_space = self.model.observation_space, self.model.action_space
        _flat_dim(observation_space, "observation")
        _flat_dim(action_space, "action")
        self._check_aux_envs(observation_space, action_space)
        if not self.built:
            if self.model.num_timesteps > 0:
                raise ValueError(
                    f"the agent has already taken {self.model.num_timesteps} steps but this "
                    f"{type(self).__name__} has no world model: continue a saved run with "
                    f"{type(self).__name__}.load(path, ...), or start a new world model with "
                    "learn(..., reset_num_timesteps=True)"
                )
            self.build(self.model.observation_space, self.model.action_space)
        else:
            space = self.model.action_space
            if not isinstance(space, gym.spaces.Box) or not (
                np.array_equal(np.asarray(space.low, np.float32).reshape(-1), self.action_low)
                and np.array_equal(np.asarray(space.high, np.float32).reshape(-1), self.action_high)
            ):
                raise ValueError(
                    "the agent's action space differs from the one this callback's world model was "
                    "built for; use a callback built for this agent"
                )
        self.attach(replay_buffer)

    def _on_training_start(self) -> None:
        if self._aux_obs is None:  # the first learn() of this callback object (or after load)
            self._aux_obs = [
                env.reset(seed=(seed + self.real_steps) % 2**63)[0]
                for env, seed in zip(self.aux_envs, self._aux_env_seeds, strict=True)
            ]

    # ------------------------------------------------------------------------------- every step

    def _on_step(self) -> bool:
        aux = self.auxiliary_transitions()
        self._check_aux(aux, f"{type(self).__name__}.auxiliary_transitions()")
        self.step(self.real_transitions(), aux)
        if not math.isnan(self.world_model_loss):
            self.logger.record("world_model/loss", self.world_model_loss)
        return True

    def real_transitions(self) -> Transitions:
        """The ``n_envs`` real transitions of the environment step SB3 just took (read from
        ``self.locals`` and the agent, before SB3 stores them; see the module docstring)."""
        dones = np.asarray(self.locals["dones"], dtype=bool).reshape(-1)
        infos: list[dict[str, Any]] = list(self.locals["infos"])
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is None:
            last_obs, new_obs = self.model._last_obs, self.locals["new_obs"]
            rewards = self.locals["rewards"]
        else:
            last_obs = self.model._last_original_obs
            new_obs, rewards = vec_normalize.get_original_obs(), vec_normalize.get_original_reward()
        n = len(dones)
        obs = np.array(last_obs, dtype=np.float32).reshape(n, -1)
        next_obs = np.array(new_obs, dtype=np.float32).reshape(n, -1)
        for i in np.flatnonzero(dones):
            terminal = infos[i].get("terminal_observation")
            if terminal is not None:
                if vec_normalize is not None:
                    terminal = vec_normalize.unnormalize_obs(terminal)
                next_obs[i] = np.asarray(terminal, dtype=np.float32).reshape(-1)
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos])
        return Transitions(
            obs=obs,
            actions=np.array(self.locals["actions"], dtype=np.float32).reshape(n, -1),
            rewards=np.array(rewards, dtype=np.float32).reshape(n),
            next_obs=next_obs,
            terminated=dones & ~truncated,
            truncated=truncated,
        )

    def auxiliary_transitions(self) -> list[Transitions]:
        """The hook: this step's auxiliary transitions, one :class:`Transitions` per auxiliary source
        (any number of rows each), in the environment's units.  Called once per environment step,
        before :meth:`step`.  By default each of ``aux_envs`` takes one step with the agent's
        stochastic policy, sampled from the callback's own stream; an episode that ends is reset.
        Override it to draw auxiliary data from elsewhere (a simulator, a dataset, other agents).
        What it returns is checked before anything is stored: a list of :class:`Transitions` whose
        observations and actions have the agent's widths (``TypeError`` / ``ValueError`` naming the
        hook and the source otherwise); rows holding NaN/Inf are dropped (:meth:`_finite_rows`), and
        the default hook restarts an environment whose next observation is not finite."""
        if not self.aux_envs:
            return []
        if self._aux_obs is None:
            raise RuntimeError("auxiliary_transitions() runs inside learn(), after the training start")
        vec_normalize = self.model.get_vec_normalize_env()
        out = []
        for i, env in enumerate(self.aux_envs):
            obs = self._aux_obs[i]
            seen = obs if vec_normalize is None else vec_normalize.normalize_obs(obs)
            with torch.random.fork_rng(devices=[]):
                torch.set_rng_state(self._aux_policy_rng)
                action, _ = self.model.predict(seen, deterministic=False)
                self._aux_policy_rng = torch.get_rng_state()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            # A non-finite state (its row is dropped, see _finite_rows) ends the episode too, as in the
            # trainer's auxiliary population: the policy is never asked to act on it.
            restart = terminated or truncated or not np.isfinite(np.asarray(next_obs, np.float64)).all()
            self._aux_obs[i] = env.reset()[0] if restart else next_obs
            out.append(
                Transitions(
                    obs=np.asarray(obs, dtype=np.float32).reshape(1, -1),
                    actions=np.asarray(action, dtype=np.float32).reshape(1, -1),
                    rewards=np.asarray([reward], dtype=np.float32),
                    next_obs=np.asarray(next_obs, dtype=np.float32).reshape(1, -1),
                    terminated=np.asarray([terminated], dtype=bool),
                    truncated=np.asarray([truncated], dtype=bool),
                )
            )
        return out

    def _check_aux(self, aux: object, origin: str) -> None:
        """Refuse auxiliary rows the agent's buffer cannot take, before anything is stored: ``TypeError``
        unless ``aux`` is a list of :class:`Transitions`; ``ValueError`` naming ``origin`` and the source
        (and, from the default hook, its environment) for observations or actions of another width
        than the agent's or non-numeric values.  These depend on the code, not on the values: a
        refusal that depended on auxiliary values (NaN/Inf) would let them stop the world model's
        training, so such rows are dropped instead (:meth:`_finite_rows`)."""
        if not isinstance(aux, list | tuple) or not all(isinstance(rows, Transitions) for rows in aux):
            kinds = sorted({type(rows).__name__ for rows in aux} if isinstance(aux, list | tuple) else set())
            got = f"a {type(aux).__name__}" + (f" of {', '.join(kinds)}" if kinds else "")
            raise TypeError(
                f"{origin} must return a list of Transitions (one per auxiliary source), got {got}"
            )
        default_hook = type(self).auxiliary_transitions is GatedWorldModelCallback.auxiliary_transitions
        widths = {"obs": int(np.prod(self.obs_shape)), "actions": len(self.action_low)}
        widths["next_obs"] = widths["obs"]
        for i, rows in enumerate(aux):
            source = f"auxiliary source {i}"
            if default_hook and i < len(self.aux_envs):
                source += f" (aux_envs[{i}], {_env_name(self.aux_envs[i])})"
            for field in ("obs", "actions", "rewards", "next_obs"):
                values = getattr(rows, field)
                if values.dtype.kind not in "biuf":
                    raise ValueError(
                        f"{origin} returned {field} of dtype {values.dtype} for {source}; auxiliary rows "
                        "must hold real numbers"
                    )
                width = widths.get(field)
                if width is not None and values.shape[1] != width:
                    what = "observation" if field != "actions" else "action"
                    raise ValueError(
                        f"{origin} returned {field} of shape {values.shape} for {source}, expected "
                        f"({len(values)}, {width}) (the agent's flattened {what} size); return rows "
                        f"shaped like the agent's {what}s"
                    )

    def _finite_rows(self, rows: Transitions, source: int) -> Transitions:
        """``rows`` without those holding NaN/Inf in ``obs``, ``actions``, ``rewards`` or ``next_obs``
        (the agent's losses would turn non-finite), as the trainer's auxiliary population drops them:
        counted in :attr:`dropped_aux_rows`, with a ``UserWarning`` naming the source and the
        environment step the first time rows of a source are dropped."""
        finite = np.ones(len(rows), dtype=bool)
        for field in ("obs", "actions", "rewards", "next_obs"):
            values = np.asarray(getattr(rows, field), dtype=np.float64)
            finite &= np.isfinite(values).reshape(len(rows), -1).all(axis=1)
        if finite.all():
            return rows
        dropped = int((~finite).sum())
        if source not in self._warned_sources:
            self._warned_sources.add(source)
            warnings.warn(
                f"{type(self).__name__}: dropped {dropped} auxiliary transition(s) of source {source} "
                f"holding "
                f"NaN/Inf at environment step {self.real_steps + 1} (the agent would learn non-finite "
                "losses from them; dropped_aux_rows counts them); fix the auxiliary environment or the hook",
                stacklevel=3,
            )
        self.dropped_aux_rows += dropped
        return Transitions(*(getattr(rows, f)[finite] for f in _FIELDS))

    def step(self, primary: Transitions, aux: Sequence[Transitions]) -> None:
        """The update path: ``aux`` goes to the agent's buffer (actions scaled to ``[-1, 1]`` as SB3
        stores them for Box spaces, ``n_envs`` rows per ``add``), ``primary`` (the step's ``n_envs``
        real transitions) to the primary buffer; every ``train_freq`` steps the world model trains
        on primary batches.  SB3 adds the real transitions to its buffer itself, after this call.
        ``aux`` rows of the wrong width are refused (``ValueError``, see :meth:`_check_aux`) before
        anything is stored; rows with NaN/Inf are dropped (:meth:`_finite_rows`)."""
        if not self.built or not hasattr(self, "agent_buffer"):
            raise RuntimeError("step() needs build() and attach(), which learn() calls")
        self._check_aux(aux, "step()'s aux")
        if self.record:
            self.recorded_primary.append(primary)
            while len(self.recorded_aux) < len(aux):
                self.recorded_aux.append([])
            for i, a in enumerate(aux):
                self.recorded_aux[i].append(a)
        for i, a in enumerate(aux):
            self._add_aux(self._finite_rows(a, i))
        self.primary_buffer.add(
            primary.obs, primary.actions, primary.rewards, primary.next_obs, primary.terminated
        )
        self.real_steps += 1
        if (
            self.real_steps % self.config["train_freq"] == 0
            and len(self.primary_buffer) >= self.config["batch_size"]
        ):
            self.train_world_model()

    def _add_aux(self, rows: Transitions) -> None:
        """Queue ``rows`` and add every complete group of ``n_envs`` to the agent's buffer."""
        if len(rows) == 0:
            return
        pending = rows if self._pending_aux is None else Transitions.concatenate([self._pending_aux, rows])
        buffer, n = self.agent_buffer, self.n_envs
        obs_shape = (n, *buffer.obs_shape)
        start = 0
        while len(pending) - start >= n:
            group = pending.rows(start, start + n)
            buffer.add(
                group.obs.reshape(obs_shape),
                group.next_obs.reshape(obs_shape),
                self.scale_action(group.actions),
                group.rewards,
                group.terminated | group.truncated,
                [
                    {"TimeLimit.truncated": bool(tr and not te)}
                    for te, tr in zip(group.terminated, group.truncated, strict=True)
                ],
            )
            self.aux_added += n
            start += n
        self._pending_aux = pending.rows(start, len(pending)) if start < len(pending) else None

    def scale_action(self, action: np.ndarray) -> np.ndarray:
        """Actions in the environment's units → ``[-1, 1]`` (what SB3 stores for Box action spaces)."""
        with np.errstate(over="ignore", invalid="ignore"):  # a broken simulator's actions pass through
            scaled = 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0
        return np.asarray(scaled, dtype=np.float32)

    def world_model_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(obs, action, next_obs)`` for one world-model update: real transitions only, drawn with the
        primary buffer's own generator (``PrimaryData``)."""
        batch = self.primary_buffer.sample(self.config["batch_size"])
        return batch.obs, batch.action, batch.next_obs

    def train_world_model(self) -> None:
        """``gradient_steps`` gated Adam updates of the world model's mean squared error on
        ``next_obs − obs``."""
        loss = torch.zeros(())
        for _ in range(self.config["gradient_steps"]):
            obs, action, next_obs = self.world_model_batch()
            prediction = self.world_model(obs, action)
            if not isinstance(prediction, torch.Tensor) or prediction.shape != obs.shape:
                got = tuple(prediction.shape) if isinstance(prediction, torch.Tensor) else type(prediction)
                raise ValueError(
                    f"the world model must map (obs, action) to a tensor shaped like obs {tuple(obs.shape)}, "
                    f"got {got}; fix the module that world_model= builds"
                )
            loss = F.mse_loss(prediction, next_obs - obs)
            self.wm_optimizer.zero_grad()
            loss.backward()
            self.wm_optimizer.step()
        self.world_model_loss = loss.item()
        if self.verbose:
            print(  # SB3 callbacks report progress on stdout with verbose=1
                f"real step {self.real_steps}: world-model loss {self.world_model_loss:.5f} "
                f"({len(self.primary_buffer)} real transitions; {self.aux_added} auxiliary ones to the agent)"
            )

    # --------------------------------------------------------------------------- recording, state

    def recording(self) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
        """``(primary, aux)`` for :func:`replay_world_model`: the recorded real transitions
        (environment step by environment step, ``n_envs`` rows each) with this callback's settings and
        spaces, and one dict of transitions per auxiliary source (``obs``, ``actions``, ``rewards``,
        ``next_obs``, ``terminated``, ``truncated``)."""
        if not self.record:
            raise RuntimeError("construct the callback with record=True to record its streams")
        if not self.recorded_primary:
            raise RuntimeError("nothing recorded yet: train with this callback first")
        primary: dict[str, Any] = Transitions.concatenate(self.recorded_primary).as_dict()
        primary["config"] = dict(self.config)
        primary["n_envs"] = self.n_envs
        primary["agent_buffer_size"] = int(self.agent_buffer.buffer_size)
        primary["obs_shape"] = tuple(self.obs_shape)
        primary["action_low"] = self.action_low.copy()
        primary["action_high"] = self.action_high.copy()
        aux = [Transitions.concatenate(stream).as_dict() for stream in self.recorded_aux if stream]
        return primary, aux

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the callback's state to ``path`` (see the module docstring; atomic)."""
        if not self.built:
            raise RuntimeError(
                "nothing to save: the callback builds its world model when learn() starts; train first"
            )
        pending = None if self._pending_aux is None else self._pending_aux.as_dict()
        save_checkpoint(
            path,
            {
                "format": _STATE_FORMAT,
                "kind": f"{__name__}.GatedWorldModelCallback",
                "world_model_factory": _factory_name(self.world_model_factory),
                "config": dict(self.config),
                "obs_shape": list(self.obs_shape),
                "action_low": torch.from_numpy(self.action_low.copy()),
                "action_high": torch.from_numpy(self.action_high.copy()),
                "world_model": self.world_model.state_dict(),
                "optimizer": self.wm_optimizer.state_dict(),
                "primary_buffer": self.primary_buffer.state_dict(),
                "real_steps": self.real_steps,
                "aux_added": self.aux_added,
                "world_model_loss": self.world_model_loss,
                "aux_policy_rng": self._aux_policy_rng.clone(),
                "pending_aux": pending,
            },
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        aux_envs: Sequence[gym.Env[Any, Any]] = (),
        *,
        world_model: WorldModelFactory | None = None,
        record: bool = False,
        verbose: int = 0,
    ) -> GatedWorldModelCallback:
        """A callback with the state :meth:`save` wrote to ``path``: the world model (built by
        ``world_model``, which must be the factory the saved one was built with) wrapped in a fresh
        ``GatedOptimizer``, whose ``load_state_dict`` checks the saved optimizer state; the primary
        buffer, counters and random streams as saved.  ``aux_envs``, ``record`` and ``verbose`` as
        for the constructor.

        Every field is checked here, before it is used: a state it cannot use (missing or extra
        fields, a bad ``config``, counters that are not non-negative ints, a random-stream state torch
        does not accept, pending rows that do not fit, ...) raises a one-line ``ValueError`` naming the
        file and the field; nothing outside the new callback is changed (the global torch random
        stream included, whether loading succeeds or not).  Optimizer state carrying auxiliary data is
        refused by the gate (``IsolationViolation``)."""
        where = os.fspath(path)
        state = load_checkpoint(path)
        keys = set(state)
        if keys != _STATE_KEYS or state["format"] != _STATE_FORMAT:
            raise ValueError(
                f"{where} is not a GatedWorldModelCallback state of format {_STATE_FORMAT} "
                f"(missing keys {sorted(_STATE_KEYS - keys)}, unexpected keys {sorted(keys - _STATE_KEYS)}); "
                "write it with GatedWorldModelCallback.save"
            )
        _check_state_fields(where, state)
        try:
            callback = cls(
                aux_envs, world_model=world_model, record=record, verbose=verbose, **state["config"]
            )
        except (TypeError, ValueError) as exc:
            raise _field_error(where, "config", f"is invalid ({_first_line(exc)})") from None
        # Building draws nn.Module default initialisations from the global torch stream: keep the
        # caller's stream as it was, whether loading succeeds or a field is refused.
        with torch.random.fork_rng(devices=[]):
            low = state["action_low"].numpy()
            high = state["action_high"].numpy()
            obs_space = gym.spaces.Box(-np.inf, np.inf, shape=tuple(state["obs_shape"]), dtype=np.float32)
            callback.build(obs_space, gym.spaces.Box(low, high, dtype=np.float32))
            try:
                callback.world_model.load_state_dict(state["world_model"])
            except RuntimeError as exc:
                raise ValueError(
                    f"{where} holds a world model built by {state['world_model_factory']}, which "
                    f"{_factory_name(world_model)} does not match ({_first_line(exc)}); pass world_model= as "
                    "when saved"
                ) from None
            for field, target in (
                ("optimizer", callback.wm_optimizer),
                ("primary_buffer", callback.primary_buffer),
            ):
                try:
                    target.load_state_dict(state[field])
                except (TaggingError, TrackingError):  # isolation errors pass unchanged
                    raise
                except (TypeError, ValueError, KeyError, RuntimeError) as exc:
                    raise _field_error(
                        where, field, f"is invalid ({type(exc).__name__}: {_first_line(exc)})"
                    ) from None
            callback.real_steps = state["real_steps"]
            callback.aux_added = state["aux_added"]
            pending = state["pending_aux"]
            if pending is not None:
                try:
                    rows = Transitions.from_dict(pending)
                    callback._check_aux([rows], "the saved pending auxiliary rows")
                except (TypeError, ValueError) as exc:
                    raise _field_error(where, "pending_aux", f"is invalid ({_first_line(exc)})") from None
                callback._pending_aux = rows
            callback.world_model_loss = float(state["world_model_loss"])
            callback._aux_policy_rng = state["aux_policy_rng"].clone()
        return callback


_CONFIG_INTS: Final = ("train_freq", "gradient_steps", "batch_size", "hidden", "buffer_size", "seed")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _field_error(where: str, field: str, problem: str) -> ValueError:
    return ValueError(
        f"{where}: field {field!r} {problem}; the file is damaged or was not written by "
        "GatedWorldModelCallback.save (save the callback again)"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _check_state_fields(where: str, state: dict[str, Any]) -> None:
    """The checks :meth:`GatedWorldModelCallback.load` runs before building anything from ``state``."""
    config = state["config"]
    expected = {*_CONFIG_INTS, "learning_rate"}
    if not isinstance(config, dict) or set(config) != expected:
        got = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise _field_error(where, "config", f"must be a dict with the keys {sorted(expected)}, got {got}")
    for key in _CONFIG_INTS:
        if not _is_int(config[key]):
            raise _field_error(where, "config", f"holds {key}={_shown(config[key])}, not an int")
    if isinstance(config["learning_rate"], bool) or not isinstance(config["learning_rate"], int | float):
        raise _field_error(
            where, "config", f"holds learning_rate={_shown(config['learning_rate'])}, not a number"
        )
    for key in ("real_steps", "aux_added"):
        if not _is_int(state[key]) or state[key] < 0:
            raise _field_error(where, key, f"is {_shown(state[key])}, not a non-negative int")
    loss = state["world_model_loss"]
    if isinstance(loss, bool) or not isinstance(loss, int | float):
        raise _field_error(where, "world_model_loss", f"is {_shown(loss)}, not a number")
    if not isinstance(state["world_model_factory"], str):
        raise _field_error(
            where, "world_model_factory", f"is {_shown(state['world_model_factory'])}, not a name"
        )
    shape = state["obs_shape"]
    if not isinstance(shape, list | tuple) or not shape or not all(_is_int(d) and d > 0 for d in shape):
        raise _field_error(where, "obs_shape", f"is {_shown(shape)}, not a list of positive ints")
    bounds = state["action_low"], state["action_high"]
    for key, bound in zip(("action_low", "action_high"), bounds, strict=True):
        if not (
            isinstance(bound, torch.Tensor)
            and bound.dtype == torch.float32
            and bound.dim() == 1
            and bound.numel() > 0
            and bool(torch.isfinite(bound).all())
        ):
            raise _field_error(where, key, f"is {_shown(bound)}, not a non-empty 1-D finite float32 tensor")
    if bounds[0].shape != bounds[1].shape or not bool((bounds[0] <= bounds[1]).all()):
        raise _field_error(where, "action_high", "does not match action_low (same shape, high >= low)")
    rng = state["aux_policy_rng"]
    problem = None
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.dim() != 1:
        problem = f"is {_shown(rng)}, not a 1-D uint8 tensor"
    else:
        try:  # a scratch generator: torch checks the state without the global stream being touched
            torch.Generator().set_state(rng.clone())
        except (RuntimeError, TypeError, ValueError) as exc:
            problem = f"is not a torch CPU random state torch accepts ({_first_line(exc)})"
    if problem is not None:
        raise _field_error(where, "aux_policy_rng", problem)
    if state["pending_aux"] is not None and not isinstance(state["pending_aux"], dict):
        raise _field_error(where, "pending_aux", f"is {_shown(state['pending_aux'])}, not None or a dict")


@checked
def replay_world_model(
    primary: dict[str, Any],
    aux: Sequence[dict[str, Any]],
    *,
    callback_class: type[GatedWorldModelCallback] = GatedWorldModelCallback,
    world_model: WorldModelFactory | None = None,
) -> nn.Module:
    """Audit target: a fresh ``callback_class`` with the recorded settings and spaces receives the
    recorded real transitions one environment step (``n_envs`` rows) at a time through
    :meth:`~GatedWorldModelCallback.step`, together with row ``t`` of every auxiliary stream that has
    one; an SB3 ``ReplayBuffer`` stands in for the agent's and receives each step's real transitions
    after the callback, as SB3's ``_store_transition`` does.

    ``primary``: :meth:`~GatedWorldModelCallback.recording`'s first element; ``aux``: a list of dicts of
    arrays (see :meth:`~GatedWorldModelCallback.recording`), one per auxiliary source; ``world_model``:
    the factory the recorded run used.  Returns the world model, which must not depend on ``aux``.
    """
    n_envs = int(primary["n_envs"])
    obs_space = gym.spaces.Box(-np.inf, np.inf, shape=tuple(primary["obs_shape"]), dtype=np.float32)
    action_space = gym.spaces.Box(
        np.asarray(primary["action_low"]), np.asarray(primary["action_high"]), dtype=np.float32
    )
    callback = callback_class(world_model=world_model, **primary["config"])
    agent_buffer = ReplayBuffer(
        int(primary["agent_buffer_size"]), obs_space, action_space, device="cpu", n_envs=n_envs
    )
    callback.build(obs_space, action_space)
    callback.attach(agent_buffer)
    real = Transitions.from_dict(primary)
    if len(real) % n_envs:
        raise ValueError(f"the recording has {len(real)} real transitions, not a multiple of n_envs={n_envs}")
    streams = [Transitions.from_dict(a) for a in aux]
    obs_shape = (n_envs, *agent_buffer.obs_shape)
    for t in range(len(real) // n_envs):
        step = real.rows(t * n_envs, (t + 1) * n_envs)
        callback.step(step, [s.rows(t, t + 1) for s in streams if t < len(s)])
        agent_buffer.add(
            step.obs.reshape(obs_shape),
            step.next_obs.reshape(obs_shape),
            callback.scale_action(step.actions),
            step.rewards,
            step.terminated | step.truncated,
            [{"TimeLimit.truncated": bool(x)} for x in step.truncated],
        )
    return callback.world_model
