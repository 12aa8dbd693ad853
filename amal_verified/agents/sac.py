"""The primary agent's actor-critic: soft actor-critic (SAC) for discrete and continuous actions.

:class:`SACAgent` is what a model-based trainer (MBPO-like) optimises with batches drawn from replay
buffers, real or imagined, primary or auxiliary. Architecture (hidden sizes configurable, default
``(256, 256)``, ReLU):

- **Actor**: MLP ``obs → 256 → 256``, then

  - discrete (``gymnasium.spaces.Discrete(n)``): one linear head, the logits over the ``n`` actions;
  - continuous (``gymnasium.spaces.Box``, 1-D, finite bounds): a mean head and a log-std head of a
    diagonal Gaussian ``u``; actions are ``a = tanh(u)`` rescaled affinely to ``[low, high]``. The
    log-std is bounded smoothly, ``log σ = −5 + 3.5·(tanh(raw) + 1) ∈ (−5, 2)``.
- **Critic**: twin Q networks with Polyak-averaged target copies (``τ``, default 0.005).

  - continuous: ``[obs, ã] → 256 → 256 → 1`` where ``ã = (a − centre) / half_range ∈ [−1, 1]^d`` is the
    action normalised from environment units;
  - discrete: ``obs → 256 → 256 → n``, one Q value per action, as in discrete SAC (Christodoulou 2019).
    This deviates from a literal ``256-256-1`` critic on purpose: with the policy's probabilities
    available for every action, the soft state value ``V(s) = Σ_a π(a|s)(Q(s,a) − α log π(a|s))``, the
    actor loss and the temperature loss are *exact expectations* over actions, computed with one
    forward pass, instead of noisy single-sample estimates (a one-hot ``[obs, a] → 1`` critic would need
    ``n`` passes for the same thing).
- **Temperature**: ``log α`` is learned (Haarnoja et al. 2018b) with the loss
  ``−log α · (log π + H_target)`` (expectation over actions for discrete). ``H_target`` defaults to
  ``−action_dim`` (continuous, taken on the squashed ``[−1, 1]`` actions) and to
  ``0.3 · log n`` nats (discrete; 0.21 nats for two actions, i.e. ≈ 95 % on the preferred action).
  The customary discrete choice ``0.98 · log n`` asks for an almost uniform policy, which a policy that
  is learning to prefer actions cannot hold: its entropy stays below that target, so ``α`` grows without
  bound and the entropy bonus inflates Q far above the true return, with an exploding critic loss. With
  ``0.3 · log n`` the entropy can settle at the target and ``α`` stays bounded (measurements:
  ``benchmarks/README.md``, "Design measurements quoted by the code"; ``benchmarks/sac_baseline.py``).
- **Target rate**: ``tau`` defaults to 0.005 (Haarnoja et al.). For discrete tasks like CartPole-v1 pass
  ``tau=0.02``: with 0.005 the critic's values propagate too slowly (≈ ``τ·updates`` effective Bellman
  backups) in runs of tens of thousands of updates (measurements: as above).

Cost: one :meth:`SACAgent.update` is the forward and backward passes of the actor and the twin critics
plus three Adam steps; tagged inputs add their validation and the input copies (measurements: as above).

Contracts:

- **One gradient step per** :meth:`SACAgent.update`: critics (sum of the two MSE losses against the soft
  Bellman target), then the actor (against the just-updated critics), then ``log α`` (with the actor's
  entropy from that step), then the targets ``θ' ← (1 − τ) θ' + τ θ``. All three use Adam.
- **Termination, not truncation.** ``terminated`` must be true only for true terminal states: the target
  is ``r + γ (1 − terminated) V'(s')``, so a time-limit truncation (stored as ``terminated=False``)
  bootstraps. The reward is used as given: an exploration bonus is simply added to it by the caller.
- **Validation first.** Shapes, dtypes, finiteness (and for actions the range) of every argument are
  checked before anything changes; a refused call raises ``ValueError`` naming the argument and leaves
  the agent exactly as it was (parameters, optimizer states, generator).
- **Randomness.** Initialisation and the reparameterised samples of :meth:`SACAgent.update` draw only
  from the constructor's ``generator`` (owned by the agent from then on); :meth:`SACAgent.act` samples
  from the ``generator`` passed to it. The global torch, numpy and ``random`` RNGs are never read or
  advanced. Two agents built from identically seeded generators and fed identical batches have
  bit-identical parameters.
- **Tagged data.** The policy *may* learn from auxiliary data (only the world model is protected), but its
  parameters, optimizer states and targets stay unlabelled: a labelled policy would label every action it
  takes and so every primary transition collected with it. :meth:`SACAgent.update` therefore copies its
  batch into fresh plain tensors (the library also labels the plain memory behind a tagged tensor, so
  without the copy module calls on it would be tracked and the gradients labelled) and never turns a
  batch-derived value into a Python value; the metrics it returns carry the join of the inputs' labels,
  so a caller that converts them to numbers records that as an escape (of aux data, when the batch had
  some).
  :meth:`SACAgent.act` and :meth:`SACAgent.behaviour` return values labelled like their ``obs``. Input
  checks read the plain memory, so they record no escape: the only information leaving is whether they
  raised.
- :meth:`SACAgent.state_dict` holds plain tensors, Python scalars and strings, dicts and lists only
  (loadable with ``torch.load(weights_only=True)``, e.g. through
  :func:`amal_verified.record.checkpoint.save_checkpoint`); a loaded agent continues bit for bit.
  :meth:`SACAgent.load_state_dict` refuses a state of another configuration or format with
  ``ValueError`` and leaves the agent unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import gymnasium
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.labels import EMPTY, Label
from amal_verified.isolation.tagging import TaggedTensor, label_of, wrap_with_label

__all__ = ["DEFAULT_DISCRETE_ENTROPY_SCALE", "SACAgent"]

if TYPE_CHECKING:
    _Widths: TypeAlias = tuple[int, ...]
else:
    # beartype checks a variadic tuple by sampling one item with Python's *global* ``random`` module;
    # the agent must not touch global RNGs, so at run time only ``isinstance(hidden, tuple)`` is checked
    # by beartype and the items are checked in ``__init__``.
    _Widths = tuple

DEFAULT_DISCRETE_ENTROPY_SCALE: Final = 0.3
"""Discrete target entropy is ``DEFAULT_DISCRETE_ENTROPY_SCALE · log n`` nats unless given."""

_STATE_FORMAT: Final = 1
_LOG_STD_MIN: Final = -5.0
_LOG_STD_MAX: Final = 2.0
_METRICS: Final = ("critic_loss", "actor_loss", "alpha", "entropy", "q_mean")


def _plain(t: Tensor) -> Tensor:
    """The memory behind ``t`` as a plain tensor (no copy); ``t`` itself when untagged."""
    return t.elem if isinstance(t, TaggedTensor) else t


def _linear(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    """An ``nn.Linear`` initialised like PyTorch's default (uniform ``±1/√fan_in``), from ``generator``."""
    layer: nn.Linear = nn.utils.skip_init(nn.Linear, in_features, out_features)
    bound = 1.0 / math.sqrt(in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


def _mlp(
    in_features: int, hidden: Sequence[int], out_features: int, generator: torch.Generator
) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [_linear(width, h, generator), nn.ReLU()]
        width = h
    layers.append(_linear(width, out_features, generator))
    return nn.Sequential(*layers)


class _Actor(nn.Module):
    def __init__(
        self, obs_dim: int, hidden: Sequence[int], out: int, continuous: bool, g: torch.Generator
    ) -> None:
        super().__init__()
        self.continuous = continuous
        self.trunk = _mlp(obs_dim, hidden[:-1], hidden[-1], g)
        self.head = _linear(hidden[-1], out, g)
        self.log_std = _linear(hidden[-1], out, g) if continuous else None

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor | None]:
        z = F.relu(self.trunk(obs))
        if self.log_std is None:
            return self.head(z), None
        raw = self.log_std(z)
        log_std = _LOG_STD_MIN + 0.5 * (_LOG_STD_MAX - _LOG_STD_MIN) * (torch.tanh(raw) + 1.0)
        return self.head(z), log_std


class _TwinQ(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int], out: int, g: torch.Generator) -> None:
        super().__init__()
        self.q1 = _mlp(in_features, hidden, out, g)
        self.q2 = _mlp(in_features, hidden, out, g)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.q1(x), self.q2(x)


def _adam_state(opt: torch.optim.Optimizer, params: Sequence[Tensor]) -> list[dict[str, Tensor]]:
    """Per-parameter Adam state in parameter order, tensors cloned."""
    return [{k: v.clone() for k, v in opt.state[p].items()} if p in opt.state else {} for p in params]


def _load_adam_state(
    opt: torch.optim.Optimizer, params: Sequence[Tensor], state: list[dict[str, Tensor]]
) -> None:
    opt.state.clear()
    for p, s in zip(params, state, strict=True):
        if s:
            opt.state[p] = {k: v.clone() for k, v in s.items()}


@checked
class SACAgent:
    """Soft actor-critic for a ``Discrete`` or 1-D ``Box`` action space (see the module docstring).

    Constructor options (keyword-only after ``action_space``):

    - ``generator``: the agent's own CPU generator, used for initialisation and update sampling;
    - ``lr`` (3e-4): Adam learning rate of actor and critics; ``alpha_lr`` (``None`` → ``lr``) of ``log α``;
    - ``gamma`` (0.99), ``tau`` (0.005): discount and Polyak rate of the target critics (0.02 is
      recommended for discrete tasks such as CartPole, see the module docstring);
    - ``hidden`` ((256, 256)): hidden widths of the actor and of each critic;
    - ``target_entropy`` (``None`` → ``−action_dim`` continuous, ``0.3 · log n`` discrete);
    - ``init_alpha`` (1.0): initial temperature.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: gymnasium.spaces.Discrete | gymnasium.spaces.Box,
        *,
        generator: torch.Generator,
        lr: float = 3e-4,
        alpha_lr: float | None = None,
        gamma: float = 0.99,
        tau: float = 0.005,
        hidden: _Widths = (256, 256),
        target_entropy: float | None = None,
        init_alpha: float = 1.0,
    ) -> None:
        if obs_dim < 1:
            raise ValueError(f"obs_dim must be a positive integer, got {obs_dim}")
        for name, value in (("lr", lr), ("alpha_lr", lr if alpha_lr is None else alpha_lr)):
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite positive number, got {value}")
        if not (0.0 <= gamma <= 1.0):
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        if not (0.0 < tau <= 1.0):
            raise ValueError(f"tau must lie in (0, 1], got {tau}")
        if not hidden or any(type(h) is not int or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {hidden}")
        if not (math.isfinite(init_alpha) and init_alpha > 0.0):
            raise ValueError(f"init_alpha must be a finite positive number, got {init_alpha}")
        if target_entropy is not None and not math.isfinite(target_entropy):
            raise ValueError(f"target_entropy must be finite, got {target_entropy}")
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU generator, got device {generator.device}")

        self.discrete = isinstance(action_space, gymnasium.spaces.Discrete)
        low: list[float] = []
        high: list[float] = []
        if isinstance(action_space, gymnasium.spaces.Discrete):
            if int(action_space.start) != 0:
                raise ValueError(f"Discrete action space must start at 0, got start={action_space.start}")
            self.action_dim = int(action_space.n)
            if self.action_dim < 2:
                raise ValueError(f"Discrete action space needs at least 2 actions, got {self.action_dim}")
            default_entropy = DEFAULT_DISCRETE_ENTROPY_SCALE * math.log(self.action_dim)
        else:
            if len(action_space.shape) != 1 or action_space.shape[0] < 1:
                raise ValueError(
                    f"Box action space must be 1-D and non-empty, got shape {action_space.shape}"
                )
            lo = np.asarray(action_space.low, dtype=np.float64)
            hi = np.asarray(action_space.high, dtype=np.float64)
            if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
                raise ValueError("Box action space must have finite low and high bounds")
            if not (hi > lo).all():
                raise ValueError("Box action space must have high > low in every dimension")
            low, high = [float(x) for x in lo], [float(x) for x in hi]
            self.action_dim = len(low)
            default_entropy = -float(self.action_dim)

        self.obs_dim = obs_dim
        self.lr = float(lr)
        self.alpha_lr = float(lr if alpha_lr is None else alpha_lr)
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.hidden = tuple(int(h) for h in hidden)
        self.target_entropy = float(default_entropy if target_entropy is None else target_entropy)
        self.init_alpha = float(init_alpha)
        self._low = torch.tensor(low, dtype=torch.float32)
        self._high = torch.tensor(high, dtype=torch.float32)
        self._centre = (self._high + self._low) / 2
        self._half_range = (self._high - self._low) / 2
        self._low_list, self._high_list = low, high

        self.generator = generator
        g = generator
        critic_in = obs_dim if self.discrete else obs_dim + self.action_dim
        critic_out = self.action_dim if self.discrete else 1
        self.actor = _Actor(obs_dim, self.hidden, self.action_dim, not self.discrete, g)
        self.critic = _TwinQ(critic_in, self.hidden, critic_out, g)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(self.init_alpha), dtype=torch.float32, requires_grad=True)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=self.lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=self.lr)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=self.alpha_lr)
        self.updates = 0

    # ------------------------------------------------------------------ configuration and validation

    def config(self) -> dict[str, Any]:
        """The configuration (plain Python values) that a loaded state must match."""
        return {
            "obs_dim": self.obs_dim,
            "kind": "discrete" if self.discrete else "continuous",
            "action_dim": self.action_dim,
            "low": list(self._low_list),
            "high": list(self._high_list),
            "lr": self.lr,
            "alpha_lr": self.alpha_lr,
            "gamma": self.gamma,
            "tau": self.tau,
            "hidden": list(self.hidden),
            "target_entropy": self.target_entropy,
            "init_alpha": self.init_alpha,
        }

    def _check_obs(self, name: str, obs: Tensor, batch: int | None = None) -> Tensor:
        x = _plain(obs)
        if x.dtype != torch.float32:
            raise ValueError(f"{name} must have dtype torch.float32, got {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.obs_dim or x.shape[0] < 1:
            raise ValueError(f"{name} must have shape (B, {self.obs_dim}) with B ≥ 1, got {tuple(x.shape)}")
        if batch is not None and x.shape[0] != batch:
            raise ValueError(f"{name} must have batch size {batch} (that of obs), got {x.shape[0]}")
        if x.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU, got device {x.device}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return x

    def _check_action(self, action: Tensor, batch: int) -> Tensor:
        a = _plain(action)
        if self.discrete:
            if a.dtype != torch.int64:
                raise ValueError(f"action must have dtype torch.int64 (discrete), got {a.dtype}")
            if tuple(a.shape) != (batch,):
                raise ValueError(f"action must have shape ({batch},), got {tuple(a.shape)}")
            if not bool(((a >= 0) & (a < self.action_dim)).all()):
                raise ValueError(f"action contains values outside [0, {self.action_dim})")
            return a
        if a.dtype != torch.float32:
            raise ValueError(f"action must have dtype torch.float32 (continuous), got {a.dtype}")
        if tuple(a.shape) != (batch, self.action_dim):
            raise ValueError(f"action must have shape ({batch}, {self.action_dim}), got {tuple(a.shape)}")
        if not bool(torch.isfinite(a).all()):
            raise ValueError("action contains NaN or infinite values")
        if not bool(((a >= self._low) & (a <= self._high)).all()):
            raise ValueError("action contains values outside the action space's [low, high]")
        return a

    def _check_batch(
        self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminated: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        o = self._check_obs("obs", obs)
        b = o.shape[0]
        a = self._check_action(action, b)
        r = _plain(reward)
        if r.dtype != torch.float32:
            raise ValueError(f"reward must have dtype torch.float32, got {r.dtype}")
        if tuple(r.shape) != (b,):
            raise ValueError(f"reward must have shape ({b},), got {tuple(r.shape)}")
        if not bool(torch.isfinite(r).all()):
            raise ValueError("reward contains NaN or infinite values")
        o2 = self._check_obs("next_obs", next_obs, b)
        d = _plain(terminated)
        if d.dtype != torch.bool:
            raise ValueError(f"terminated must have dtype torch.bool, got {d.dtype}")
        if tuple(d.shape) != (b,):
            raise ValueError(f"terminated must have shape ({b},), got {tuple(d.shape)}")
        for name, t in (("action", a), ("reward", r), ("terminated", d)):
            if t.device.type != "cpu":
                raise ValueError(f"{name} must be on the CPU, got device {t.device}")
        return o, a, r, o2, d

    # ------------------------------------------------------------------ policy

    def _to_env(self, squashed: Tensor) -> Tensor:
        return torch.clamp(self._centre + self._half_range * squashed, self._low, self._high)

    def _sample(self, obs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Continuous reparameterised sample: squashed action in [−1, 1], its log-prob, and entropy proxy."""
        mean, log_std = self.actor(obs)
        assert log_std is not None
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        u = mean + log_std.exp() * eps
        a = torch.tanh(u)
        # log N(u; mean, std) − Σ log(1 − tanh(u)²), the latter as 2(log 2 − u − softplus(−2u)).
        log_prob = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return a, log_prob, -log_prob

    def act(
        self, obs: Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Actions for a batch of observations ``(B, obs_dim)``.

        Discrete: ``(B,)`` int64; continuous: ``(B, action_dim)`` float32 within ``[low, high]``.
        ``deterministic`` gives the most probable action (argmax / ``tanh(mean)``); otherwise
        ``generator`` is required and is the only randomness used. The result carries ``obs``'s label.
        """
        x = self._check_obs("obs", obs)
        if not deterministic and generator is None:
            raise ValueError("stochastic act needs a generator (or pass deterministic=True)")
        with torch.no_grad():
            if self.discrete:
                logits, _ = self.actor(x)
                if deterministic:
                    out = logits.argmax(-1)
                else:
                    assert generator is not None
                    out = torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(-1)
            elif deterministic:
                mean, _ = self.actor(x)
                out = self._to_env(torch.tanh(mean))
            else:
                assert generator is not None
                squashed, _, _ = self._sample(x, generator)
                out = self._to_env(squashed)
        return wrap_with_label(out, label_of(obs))

    def behaviour(self, obs: Tensor) -> Tensor:
        """``(B, A)``: action probabilities (discrete) or the deterministic action in env units (continuous).

        Used to compare auxiliary agents with the primary policy. No gradient; labelled like ``obs``.
        """
        x = self._check_obs("obs", obs)
        with torch.no_grad():
            head, _ = self.actor(x)
            out = F.softmax(head, -1) if self.discrete else self._to_env(torch.tanh(head))
        return wrap_with_label(out, label_of(obs))

    # ------------------------------------------------------------------ learning

    def update(
        self, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor, terminated: Tensor
    ) -> dict[str, Tensor]:
        """One gradient step on both critics, the actor and ``log α``, then the target update.

        Shapes: obs/next_obs ``(B, obs_dim)`` float32, action ``(B,)`` int64 (discrete) or
        ``(B, action_dim)`` float32 in env units, reward ``(B,)`` float32 (bonus included),
        terminated ``(B,)`` bool (true terminal only). Returns detached 0-d float32 tensors, labelled
        with the join of the inputs' labels:

        - ``critic_loss``: the mean of the two critics' MSE against the soft Bellman target;
        - ``actor_loss``: ``E[α log π − min(Q1, Q2)]`` (exact over actions for discrete);
        - ``alpha``: the temperature used in this step (before its own update);
        - ``entropy``: the policy entropy on ``obs`` (exact for discrete; the one-sample estimate
          ``−log π(ã|s)`` of the squashed action for continuous);
        - ``q_mean``: the mean of both critics' Q values of the batch's actions (before the step).
        """
        # Fresh plain copies: the library labels plain memory that holds tagged data (and module calls on
        # it), so the memory behind a tagged input would still be tracked; the policy's learning is
        # deliberately kept out of label tracking (module docstring, "Tagged data").
        o, a, r, o2, d = (t.clone() for t in self._check_batch(obs, action, reward, next_obs, terminated))
        label: Label = EMPTY
        for t in (obs, action, reward, next_obs, terminated):
            label = label.join(label_of(t))
        alpha = self.log_alpha.detach().exp()
        not_done = (~d).to(torch.float32)

        # Critics.
        with torch.no_grad():
            if self.discrete:
                logits2, _ = self.actor(o2)
                logp2 = F.log_softmax(logits2, -1)
                q1t, q2t = self.critic_target(o2)
                v2 = (logp2.exp() * (torch.minimum(q1t, q2t) - alpha * logp2)).sum(-1)
            else:
                a2, logp2_s, _ = self._sample(o2, self.generator)
                q1t, q2t = self.critic_target(torch.cat([o2, a2], -1))
                v2 = torch.minimum(q1t, q2t).squeeze(-1) - alpha * logp2_s
            y = r + self.gamma * not_done * v2
        if self.discrete:
            q1_all, q2_all = self.critic(o)
            idx = a.unsqueeze(-1)
            q1, q2 = q1_all.gather(-1, idx).squeeze(-1), q2_all.gather(-1, idx).squeeze(-1)
        else:
            a_norm = (a - self._centre) / self._half_range
            q1o, q2o = self.critic(torch.cat([o, a_norm], -1))
            q1, q2 = q1o.squeeze(-1), q2o.squeeze(-1)
        critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optim.step()

        # Actor (against the updated critics; gradients reach the actor's parameters only).
        actor_params = list(self.actor.parameters())
        if self.discrete:
            logits, _ = self.actor(o)
            logp = F.log_softmax(logits, -1)
            p = logp.exp()
            q1_pi, q2_pi = self.critic(o)
            q_pi = torch.minimum(q1_pi, q2_pi).detach()
            actor_loss = (p * (alpha * logp - q_pi)).sum(-1).mean()
            entropy = -(p * logp).sum(-1)
        else:
            a_pi, logp_s, entropy = self._sample(o, self.generator)
            q1_pi, q2_pi = self.critic(torch.cat([o, a_pi], -1))
            actor_loss = (alpha * logp_s - torch.minimum(q1_pi, q2_pi).squeeze(-1)).mean()
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=actor_params)
        self.actor_optim.step()

        # Temperature: minimise −log α · (H_target − H), i.e. raise α when entropy is below target.
        ent = entropy.detach().mean()
        alpha_loss = self.log_alpha * (ent - self.target_entropy)
        self.alpha_optim.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optim.step()

        # Targets.
        with torch.no_grad():
            src: list[Tensor] = list(self.critic.parameters())
            dst: list[Tensor] = list(self.critic_target.parameters())
            torch._foreach_lerp_(dst, src, self.tau)
        self.updates += 1

        values = {
            "critic_loss": critic_loss.detach() / 2,
            "actor_loss": actor_loss.detach(),
            "alpha": alpha.clone(),
            "entropy": ent,
            "q_mean": ((q1 + q2) / 2).detach().mean(),
        }
        return {k: wrap_with_label(v, label) for k, v in values.items()}

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit for bit, as plain tensors, scalars, strings, dicts and lists."""
        return {
            "format": _STATE_FORMAT,
            "config": self.config(),
            "actor": {k: v.detach().clone() for k, v in self.actor.state_dict().items()},
            "critic": {k: v.detach().clone() for k, v in self.critic.state_dict().items()},
            "critic_target": {k: v.detach().clone() for k, v in self.critic_target.state_dict().items()},
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_optim": _adam_state(self.actor_optim, list(self.actor.parameters())),
            "critic_optim": _adam_state(self.critic_optim, list(self.critic.parameters())),
            "alpha_optim": _adam_state(self.alpha_optim, [self.log_alpha]),
            "generator_state": self.generator.get_state(),
            "updates": self.updates,
        }

    def _validate_state(self, state: Mapping[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(
                f"state keys differ: missing {sorted(expected - set(state))}, "
                f"unexpected {sorted(set(state) - expected)}"
            )
        if state["format"] != _STATE_FORMAT:
            raise ValueError(f"state format {state['format']!r} is not {_STATE_FORMAT}")
        if state["config"] != self.config():
            mine, theirs = self.config(), state["config"]
            diff = sorted(
                k
                for k in set(mine) | set(theirs)
                if not isinstance(theirs, Mapping) or mine.get(k) != theirs.get(k)
            )
            raise ValueError(f"state is from a different configuration (differs in: {diff})")
        for name, module in (
            ("actor", self.actor),
            ("critic", self.critic),
            ("critic_target", self.critic_target),
        ):
            _check_tensors(name, state[name], module.state_dict())
        _check_tensors("log_alpha", {"": state["log_alpha"]}, {"": self.log_alpha.detach()})
        for name, params in (
            ("actor_optim", list(self.actor.parameters())),
            ("critic_optim", list(self.critic.parameters())),
            ("alpha_optim", [self.log_alpha]),
        ):
            opt_state = state[name]
            if not isinstance(opt_state, list) or len(opt_state) != len(params):
                raise ValueError(f"{name} must be a list of {len(params)} per-parameter states")
            for i, (s, p) in enumerate(zip(opt_state, params, strict=True)):
                if not isinstance(s, Mapping):
                    raise ValueError(f"{name}[{i}] must be a dict")
                if s and set(s) != {"step", "exp_avg", "exp_avg_sq"}:
                    raise ValueError(f"{name}[{i}] has keys {sorted(s)}, expected step, exp_avg, exp_avg_sq")
                if s:
                    ref = {"step": torch.zeros(()), "exp_avg": p.detach(), "exp_avg_sq": p.detach()}
                    _check_tensors(f"{name}[{i}]", s, ref)
        gs = state["generator_state"]
        ref_gs = self.generator.get_state()
        if not isinstance(gs, Tensor) or gs.dtype != torch.uint8 or gs.shape != ref_gs.shape:
            raise ValueError("generator_state must be a uint8 tensor as given by torch.Generator.get_state()")
        if (
            not isinstance(state["updates"], int)
            or isinstance(state["updates"], bool)
            or state["updates"] < 0
        ):
            raise ValueError(f"updates must be a non-negative int, got {state['updates']!r}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses (``ValueError``, nothing changed) a mismatching state."""
        self._validate_state(state)
        backup = self.state_dict()
        try:
            self._apply_state(state)
        except Exception as exc:
            self._apply_state(backup)
            raise ValueError(f"could not load the state: {exc}") from exc

    def _apply_state(self, state: Mapping[str, Any]) -> None:
        self.actor.load_state_dict(dict(state["actor"]))
        self.critic.load_state_dict(dict(state["critic"]))
        self.critic_target.load_state_dict(dict(state["critic_target"]))
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        _load_adam_state(self.actor_optim, list(self.actor.parameters()), state["actor_optim"])
        _load_adam_state(self.critic_optim, list(self.critic.parameters()), state["critic_optim"])
        _load_adam_state(self.alpha_optim, [self.log_alpha], state["alpha_optim"])
        self.generator.set_state(state["generator_state"].clone())
        self.updates = int(state["updates"])

    def parameters(self) -> list[Tensor]:
        """All trainable tensors: actor, critics and ``log α`` (targets excluded)."""
        return [*self.actor.parameters(), *self.critic.parameters(), self.log_alpha]


def _check_tensors(name: str, given: object, reference: Mapping[str, Tensor]) -> None:
    if not isinstance(given, Mapping) or set(given) != set(reference):
        raise ValueError(f"{name}: entries differ from this agent's")
    for k, ref in reference.items():
        v = given[k]
        if not isinstance(v, Tensor) or isinstance(v, TaggedTensor):
            raise ValueError(f"{name}.{k} must be a plain tensor")
        if v.shape != ref.shape or v.dtype != ref.dtype:
            raise ValueError(
                f"{name}.{k}: expected {tuple(ref.shape)} {ref.dtype}, got {tuple(v.shape)} {v.dtype}"
            )
