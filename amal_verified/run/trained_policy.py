"""A trained run's primary policy, loaded for inference: :func:`load_policy` and :class:`TrainedPolicy`.

The Python API of a run, from a script or a notebook::

    import amal_verified as av

    config = av.TrainConfig(env_id="CartPole-v1", total_steps=20_000, seed=0)
    av.Trainer.create(config, "runs/cp").run()        # train (the run directory must be new or empty)
    av.Trainer.resume("runs/cp").run()                # continue an interrupted run from its checkpoint
    report = av.evaluate_run("runs/cp", episodes=10)  # returns and world-model error on the real env
    cert = av.certify_run("runs/cp")                  # Theorem 1 replay (in a fresh process if needed)

    policy = av.load_policy("runs/cp")
    obs, _ = env.reset(seed=0)
    action = policy.act(obs)                          # int (Discrete) or float32 array (Box)

:func:`load_policy` reads ``config.json`` and the policy's part of ``checkpoint.pt`` (the latest
checkpoint of the run, complete or not; :attr:`TrainedPolicy.step` says which step), only if a seal
of the run's ``checkpoints.jsonl`` records the file's SHA-256: a checkpoint changed after the run
wrote it is refused.  It builds no
environment, world model or auxiliary agent: the action space comes from the checkpointed policy's
own configuration.  A missing or unreadable run directory is refused with a one-line ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias, final

import gymnasium
import numpy as np
import numpy.typing as npt
import torch

from amal_verified.agents.sac import SACAgent
from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.record.checkpoint import CheckpointError, load_checkpoint
from amal_verified.record.ledger import LEDGER_FILENAME, verify
from amal_verified.run.config import CHECKPOINT_FILENAME, CONFIG_FILENAME, TrainConfig, read_json
from amal_verified.run.run_dir import sealed_checkpoint

__all__ = ["Observation", "TrainedPolicy", "load_policy"]

Observation: TypeAlias = npt.NDArray[Any] | torch.Tensor | Sequence[float] | Sequence[Sequence[float]]
"""What :meth:`TrainedPolicy.act` takes: one observation or a batch, as an array, tensor or numbers."""

SAMPLING_STREAM: Final = "inference/actions"
"""The :class:`~amal_verified.common.rng_streams.RunStreams` name of a loaded policy's sampling stream."""


@checked
@final
class TrainedPolicy:
    """The primary policy of a run at its checkpoint step, for inference (see :func:`load_policy`).

    :meth:`act` maps an observation to an environment action.  Attributes: ``run_dir``, ``env_id``,
    ``step`` (the checkpoint's primary step), ``unsafe_mix`` (the run is the ablation), ``discrete``,
    ``obs_dim``, ``action_dim`` (number of actions when discrete), ``action_low`` / ``action_high``
    (the Box bounds as float32 arrays; ``None`` when discrete).
    """

    def __init__(
        self, run_dir: Path, config: TrainConfig, step: int, agent: SACAgent, generator: torch.Generator
    ) -> None:
        self.run_dir: Final = run_dir
        self.env_id: Final = config.env_id
        self.step: Final = step
        self.unsafe_mix: Final = config.unsafe_mix
        self.discrete: Final = agent.discrete
        self.obs_dim: Final = agent.obs_dim
        self.action_dim: Final = agent.action_dim
        policy_config = agent.config()
        self.action_low: Final = None if agent.discrete else np.asarray(policy_config["low"], np.float32)
        self.action_high: Final = None if agent.discrete else np.asarray(policy_config["high"], np.float32)
        self._agent: Final = agent
        self._generator: Final = generator

    def __repr__(self) -> str:
        space = f"Discrete({self.action_dim})" if self.discrete else f"Box(shape=({self.action_dim},))"
        marker = ", unsafe_mix=True" if self.unsafe_mix else ""
        return f"TrainedPolicy({self.env_id!r}, step={self.step}, action_space={space}{marker})"

    def act(
        self,
        obs: Observation,
        *,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> int | npt.NDArray[Any]:
        """The action for ``obs``, in the environment's units.

        ``obs`` is one observation ``(obs_dim,)`` or a batch ``(B, obs_dim)`` (numpy array, tensor or
        sequence of numbers; converted to float32).  One observation gives an ``int`` (Discrete) or a
        float32 array ``(action_dim,)`` within the Box bounds (Box); a batch gives an int64 array
        ``(B,)`` or a float32 array ``(B, action_dim)``.  ``deterministic`` (default) acts greedily:
        the most probable action, or ``tanh`` of the Gaussian mean rescaled to the bounds.  With
        ``deterministic=False`` the action is sampled from ``generator``, or else from the policy's
        own stream (``RunStreams(seed)``'s ``inference/actions``, seeded by :func:`load_policy`).
        """
        x = self._observations(obs)
        single = x.dim() == 1
        batch = x.unsqueeze(0) if single else x
        if deterministic:
            action = self._agent.act(batch, deterministic=True)
        else:
            action = self._agent.act(batch, generator=self._generator if generator is None else generator)
        values = action.detach().numpy()
        if self.discrete:
            return int(values[0]) if single else values.astype(np.int64)
        out = values.astype(np.float32)
        return out[0] if single else out

    def _observations(self, obs: Observation) -> torch.Tensor:
        if isinstance(obs, torch.Tensor):
            x = obs.detach().to(device="cpu", dtype=torch.float32)
        else:
            try:
                array = np.asarray(obs, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"obs must be numeric, got {type(obs).__name__} ({exc})") from None
            x = torch.from_numpy(array.copy())
        if x.dim() not in (1, 2) or x.shape[-1] != self.obs_dim or x.numel() == 0:
            raise ValueError(
                f"obs must have shape ({self.obs_dim},) or (B, {self.obs_dim}) for {self.env_id}, "
                f"got {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("obs contains NaN or infinite values")
        return x


@checked
def load_policy(run_dir: str | Path, *, seed: int = 0) -> TrainedPolicy:
    """The primary policy of the run in ``run_dir`` at its latest checkpoint (see the module docstring).

    ``seed`` seeds the policy's sampling stream (used only by ``act(obs, deterministic=False)``).
    ``ValueError`` (one line, naming the file and what to do) if ``run_dir`` is not a run directory,
    has no checkpoint yet, or its configuration or checkpoint cannot be read.
    """
    path = Path(run_dir)
    config, state = read_run_checkpoint(path)
    return policy_from_state(path, config, state, seed=seed)


def read_run_checkpoint(path: Path, *, restore: bool = False) -> tuple[TrainConfig, dict[str, Any]]:
    """The run's configuration and its checkpoint's content; ``ValueError`` (one line) if unreadable,
    or if no seal of the run's checkpoint log records the checkpoint's SHA-256 (changed on disk).

    ``restore`` restores tagged tensors (see :func:`~amal_verified.record.checkpoint.load_checkpoint`);
    the policy's state holds none, so :func:`load_policy` reads without it and switches no tracking on.
    """
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise ValueError(f"run directory {path} {what}: pass the --out directory of an `amal train` run")
    document = read_json(path / CONFIG_FILENAME, "run configuration")
    try:
        config = TrainConfig.from_json(document["train"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path / CONFIG_FILENAME} is not a run configuration ({exc})") from None
    checkpoint = path / CHECKPOINT_FILENAME
    if not checkpoint.exists():
        raise ValueError(
            f"{checkpoint} does not exist: the run has not reached its first checkpoint "
            f"(checkpoint_every={config.checkpoint_every}); train it further with "
            f"`amal train --resume --out {path}`"
        )
    try:
        state = load_checkpoint(checkpoint, restore=restore)
    except CheckpointError as exc:
        raise ValueError(f"{checkpoint} is not a readable checkpoint ({exc})") from None
    if not isinstance(state.get("policy"), Mapping) or not isinstance(state.get("step"), int):
        raise ValueError(f"{checkpoint} holds no policy state: it is not a checkpoint of an `amal train` run")
    header = verify(path).header
    if header is None:
        raise ValueError(f"{path / LEDGER_FILENAME} has no valid run header: {path} is not an intact run")
    sealed_checkpoint(path, header.genesis)
    return config, state


def policy_from_state(
    path: Path, config: TrainConfig, state: Mapping[str, Any], *, seed: int
) -> TrainedPolicy:
    """The :class:`TrainedPolicy` of a checkpoint read by :func:`read_run_checkpoint`."""
    checkpoint = path / CHECKPOINT_FILENAME
    policy_state = state["policy"]
    try:
        agent = _agent_for(policy_state["config"])
        agent.load_state_dict(policy_state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{checkpoint}: the policy state does not load ({exc})") from None
    generator = RunStreams(seed).torch_generator(SAMPLING_STREAM)
    return TrainedPolicy(path, config, int(state["step"]), agent, generator)


def _agent_for(config: Mapping[str, Any]) -> SACAgent:
    """An agent of the checkpointed configuration (its weights are overwritten by the state)."""
    space: gymnasium.spaces.Discrete | gymnasium.spaces.Box
    if config["kind"] == "discrete":
        space = gymnasium.spaces.Discrete(int(config["action_dim"]))
    else:
        low = np.asarray(config["low"], dtype=np.float64)
        high = np.asarray(config["high"], dtype=np.float64)
        space = gymnasium.spaces.Box(low, high, dtype=np.float64)
    return SACAgent(
        int(config["obs_dim"]),
        space,
        generator=torch.Generator().manual_seed(0),
        lr=float(config["lr"]),
        alpha_lr=float(config["alpha_lr"]),
        gamma=float(config["gamma"]),
        tau=float(config["tau"]),
        hidden=tuple(int(h) for h in config["hidden"]),
        target_entropy=float(config["target_entropy"]),
        init_alpha=float(config["init_alpha"]),
    )
