"""A single-asset market with a hidden fundamental value (paper §1's trading example).

The paper's motivating example: auxiliary traders (trend following, mean reversion, market making)
generate varied market conditions, and a world model that learned from them fails in the real
market, where those traders do not exist.  :class:`MarketEnv` is registered as ``amal/Trading-v0``
with ``participants=()`` (the primary market); the auxiliary environment
(:func:`amal_verified.agents.aux_env.make_aux_env`) adds the three traders, so **their order flow moves
the price only in the auxiliary environment**.

Hidden dynamics (time index ``t``, one step per decision)
--------------------------------------------------------
- A regime ``r_t`` ∈ {bull, calm, bear} (a Markov chain: it stays with probability 0.98, else
  jumps to one of the other two uniformly) sets the drift and volatility of the fundamental:
  drift (+5, 0, −5)·10⁻⁴ and volatility (4, 3, 7)·10⁻³ per step, times ``drift_scale`` and
  ``volatility_scale``.
- The log-fundamental is a random walk: ``f_{t+1} = f_t + drift(r_t) + vol(r_t)·z_t``.
- The log-price reverts towards it with noise and moves with the participants' net order flow
  ``q_t`` through a linear impact: ``p_{t+1} = p_t + 0.1·(f_{t+1} − p_t) + 0.003·volatility_scale·e_t
  + 0.002·q_t`` (``z_t``, ``e_t`` standard normal).  The agent is a price taker (its trades have
  no impact).
- Each episode is preceded by a warm-up of 64 steps *without* participants (so the primary and
  the auxiliary market start from the same observation for the same seed); participants trade
  from the episode's first step on.

Participants (``participants``: any subset of :data:`PARTICIPANTS`, each name at most once);
their parameters are drawn per episode.  ``σ = 0.005·volatility_scale`` normalises price moves.

- ``"trend_following"`` buys after rises: ``a·tanh((p_t − p_{t−L}) / (σ√L))``, lookback
  ``L`` ∈ [4, 16], ``a`` ∈ [1, 2].
- ``"mean_reversion"`` buys below its moving average: ``−a·tanh((p_t − mean(p_{t−M+1..t})) /
  (σ√M))``, window ``M`` ∈ [8, 32], ``a`` ∈ [0.5, 1.5].
- ``"market_making"`` provides liquidity: it absorbs a fraction ``φ`` ∈ [0.3, 0.6] of the other
  traders' flow (dampening the moves they cause) and adds quote noise ``s·n_t``, ``s`` ∈ [0.5, 1]
  (widening the price noise).

Every trader also adds idiosyncratic noise ``0.1·n_t`` to its order.  The net flow is
``q_t = (1 − φ)·(trend + reversion orders) + s·n_t`` (``φ = 0``, ``s = 0`` without a market maker).

Observation (``float32``, length ``WINDOW + 2`` = 18)
---------------------------------------------------
``[0:16]`` the last 16 log returns ``p_t − p_{t−1}`` in percent (oldest first; clipped to
±:data:`RETURN_BOUND` = 100, which only extreme ``volatility_scale`` values reach); ``[16]`` the
agent's position (−1, 0, 1); ``[17]`` the fraction of the episode elapsed (0 at reset, 1 at the
end).  The fundamental, the regime and the order flow are hidden.

Action and reward
-----------------
``Discrete(3)``: the target position 0 → short (−1), 1 → flat (0), 2 → long (+1), held over the
next price change.  Reward, in **percent** (log return × 100):
``100·(position·(p_{t+1} − p_t) − cost·|position − previous position|)`` with ``cost`` the
proportional transaction cost (default 2·10⁻⁴, i.e. 2 basis points per unit traded).  Over seeds
0–19 a uniformly random policy returns −4.7 per episode on average (it pays the costs), the
hidden-state oracle (:func:`oracle_action`) +22.9; both vary by about ±3.6 between episodes.

Episodes last :data:`EPISODE_STEPS` = 256 steps; the environment truncates itself
(``truncated=True`` on the 256th step, never ``terminated``) and exposes ``max_steps`` = 256 for
:func:`amal_verified.envs.task_info`.  Stepping a finished episode raises ``RuntimeError``.

Distribution shift (the benchmark's robustness evaluation): ``volatility_scale`` (fundamental
volatility and price noise), ``drift_scale`` (regime drifts), both finite and > 0, and ``cost``
(finite, ≥ 0).

Reproducibility: all randomness comes from ``self.np_random`` (seeded by ``reset(seed=...)``).
At reset the exogenous noise of the whole episode (regimes, fundamental shocks, price noise) is
drawn from it in a fixed order, then one integer seeds the participants' own generator (drawn
whether or not there are participants), so the fundamental and the noise are the same for the
same seed whatever the participants, and the same seed and actions give bit-identical episodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from amal_verified.common.runtime_checks import checked

__all__ = [
    "DEFAULT_COST",
    "EPISODE_STEPS",
    "PARTICIPANTS",
    "RETURN_BOUND",
    "WINDOW",
    "MarketEnv",
    "oracle_action",
    "oracle_return",
]

PARTICIPANTS: Final[tuple[str, ...]] = ("trend_following", "mean_reversion", "market_making")
"""The auxiliary traders :class:`MarketEnv` knows."""

EPISODE_STEPS: Final = 256
"""Decisions per episode (the environment truncates itself after this many steps)."""

WINDOW: Final = 16
"""Number of recent log returns in the observation."""

RETURN_BOUND: Final = 100.0
"""Observed returns (percent) are clipped to ``[−RETURN_BOUND, RETURN_BOUND]``."""

DEFAULT_COST: Final = 2e-4
"""Default proportional transaction cost per unit of position traded (2 basis points)."""

_WARMUP: Final = 64
_REGIME_DRIFT: Final = np.array([5e-4, 0.0, -5e-4])
_REGIME_VOL: Final = np.array([4e-3, 3e-3, 7e-3])
_REGIME_STAY: Final = 0.98
_REVERSION: Final = 0.1
_PRICE_NOISE: Final = 3e-3
_IMPACT: Final = 2e-3
_MOVE_SCALE: Final = 5e-3
_ORDER_NOISE: Final = 0.1
_PERCENT: Final = 100.0
_POSITIONS: Final = (-1, 0, 1)


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


class MarketEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """The market (see the module docstring for dynamics, observation, reward and kwargs).

    ``participants`` is a sequence (tuple, list) of names from :data:`PARTICIPANTS`; it is stored
    as a tuple.  Raises ``TypeError`` for a bare string, ``ValueError`` for an unknown or repeated
    participant name, a non-finite or non-positive ``volatility_scale``/``drift_scale``, a
    negative or non-finite ``cost``, or a ``render_mode`` other than ``None``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  # gymnasium's convention

    @checked
    def __init__(
        self,
        participants: Sequence[str] = (),
        *,
        volatility_scale: float = 1.0,
        drift_scale: float = 1.0,
        cost: float = DEFAULT_COST,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(participants, str):
            raise TypeError(f"participants must be a sequence of names, not the string {participants!r}")
        unknown = [name for name in participants if name not in PARTICIPANTS]
        if unknown:
            raise ValueError(f"unknown market participants {unknown}; known: {', '.join(PARTICIPANTS)}")
        if len(set(participants)) != len(participants):
            raise ValueError(f"each participant may appear once, got {participants}")
        if render_mode is not None:
            raise ValueError(f"MarketEnv has no rendering; render_mode must be None, got {render_mode!r}")
        if not (math.isfinite(cost) and cost >= 0.0):
            raise ValueError(f"cost must be finite and >= 0, got {cost}")
        self.participants: tuple[str, ...] = tuple(participants)
        self.volatility_scale = _positive("volatility_scale", volatility_scale)
        self.drift_scale = _positive("drift_scale", drift_scale)
        self.cost = float(cost)
        self.render_mode = render_mode
        self.max_steps: int = EPISODE_STEPS
        high = np.full(WINDOW + 2, RETURN_BOUND, dtype=np.float32)
        high[WINDOW:] = 1.0
        self.observation_space = gym.spaces.Box(low=-high, high=high, dtype=np.float32)
        self.observation_space.low[WINDOW + 1] = 0.0
        self.action_space = gym.spaces.Discrete(len(_POSITIONS))
        total = _WARMUP + EPISODE_STEPS
        self._regime = np.zeros(total, dtype=np.int64)
        self._fundamental = np.zeros(total + 1)
        self._price_noise = np.zeros(total)
        self._price = np.zeros(total + 1)
        self._order_noise = np.zeros((EPISODE_STEPS, 3))
        self._lookback = 1
        self._trend_strength = 0.0
        self._ma_window = 1
        self._reversion_strength = 0.0
        self._absorb = 0.0
        self._quote_noise = 0.0
        self._step = 0
        self._position = 0
        self._started = False

    # --- hidden state (read by the oracle and the tests) -------------------------------------

    @property
    def time_index(self) -> int:
        """Index of the current time in the hidden arrays (warm-up steps come first)."""
        return _WARMUP + self._step

    @property
    def steps_taken(self) -> int:
        """Steps taken in the current episode."""
        return self._step

    @property
    def position(self) -> int:
        """The agent's current position (−1, 0 or 1)."""
        return self._position

    @property
    def log_price(self) -> float:
        """The current log-price ``p_t`` (observable only through its returns)."""
        return float(self._price[self.time_index])

    @property
    def log_fundamental(self) -> float:
        """The current hidden log-fundamental ``f_t``."""
        return float(self._fundamental[self.time_index])

    @property
    def regime(self) -> int:
        """The current hidden regime: 0 bull, 1 calm, 2 bear."""
        return int(self._regime[min(self.time_index, len(self._regime) - 1)])

    def price_path(self) -> npt.NDArray[np.float64]:
        """A copy of the log-prices so far, warm-up included (length ``64 + steps_taken + 1``)."""
        return self._price[: self.time_index + 1].copy()

    def fundamental_path(self) -> npt.NDArray[np.float64]:
        """A copy of the whole episode's hidden log-fundamental path, warm-up included."""
        return self._fundamental.copy()

    # --- dynamics ---------------------------------------------------------------------------

    def _draw_episode(self) -> None:
        rng = self.np_random
        total = _WARMUP + EPISODE_STEPS
        switch = rng.random(total) >= _REGIME_STAY
        jump = rng.integers(1, 3, size=total)
        shocks = rng.standard_normal(total)
        self._price_noise = rng.standard_normal(total)
        participant_seed = int(rng.integers(0, 2**63 - 1))
        regime = int(rng.integers(0, 3))
        for t in range(total):
            self._regime[t] = regime
            if switch[t]:
                regime = (regime + int(jump[t])) % 3
        drift = self.drift_scale * _REGIME_DRIFT[self._regime]
        vol = self.volatility_scale * _REGIME_VOL[self._regime]
        self._fundamental[0] = 0.0
        self._fundamental[1:] = np.cumsum(drift + vol * shocks)
        self._price[:] = 0.0
        for t in range(_WARMUP):
            self._price[t + 1] = self._next_price(t, 0.0)
        prng = np.random.default_rng(participant_seed)
        self._lookback = int(prng.integers(4, 17))
        self._trend_strength = float(prng.uniform(1.0, 2.0))
        self._ma_window = int(prng.integers(8, 33))
        self._reversion_strength = float(prng.uniform(0.5, 1.5))
        self._absorb = float(prng.uniform(0.3, 0.6))
        self._quote_noise = float(prng.uniform(0.5, 1.0))
        self._order_noise = prng.standard_normal((EPISODE_STEPS, 3))

    def _next_price(self, t: int, flow: float) -> float:
        p = self._price[t]
        return float(
            p
            + _REVERSION * (self._fundamental[t + 1] - p)
            + _PRICE_NOISE * self.volatility_scale * self._price_noise[t]
            + _IMPACT * flow
        )

    def _flow(self, t: int, *, noise: bool) -> float:
        """The participants' net order flow at time ``t`` (its deterministic part if not ``noise``)."""
        if not self.participants:
            return 0.0
        k = t - _WARMUP
        sigma = _MOVE_SCALE * self.volatility_scale
        p = self._price
        orders = 0.0
        if "trend_following" in self.participants:
            lb = self._lookback
            orders += self._trend_strength * math.tanh((p[t] - p[t - lb]) / (sigma * math.sqrt(lb)))
            if noise:
                orders += _ORDER_NOISE * self._order_noise[k, 0]
        if "mean_reversion" in self.participants:
            m = self._ma_window
            gap = p[t] - float(np.mean(p[t - m + 1 : t + 1]))
            orders -= self._reversion_strength * math.tanh(gap / (sigma * math.sqrt(m)))
            if noise:
                orders += _ORDER_NOISE * self._order_noise[k, 1]
        if "market_making" in self.participants:
            orders *= 1.0 - self._absorb
            if noise:
                orders += self._quote_noise * self._order_noise[k, 2]
        return orders

    def expected_price_change(self) -> float:
        """``E[p_{t+1} − p_t]`` given the hidden state (fundamental, regime, participants)."""
        t = self.time_index
        p = self._price[t]
        expected_f = self._fundamental[t] + self.drift_scale * _REGIME_DRIFT[self._regime[t]]
        return float(_REVERSION * (expected_f - p) + _IMPACT * self._flow(t, noise=False))

    def _observation(self) -> npt.NDArray[np.float32]:
        t = self.time_index
        obs = np.empty(WINDOW + 2, dtype=np.float32)
        obs[:WINDOW] = np.clip(
            _PERCENT * np.diff(self._price[t - WINDOW : t + 1]), -RETURN_BOUND, RETURN_BOUND
        )
        obs[WINDOW] = self._position
        obs[WINDOW + 1] = self._step / EPISODE_STEPS
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start an episode: draw its hidden paths from ``np_random`` (seeded by ``seed``)."""
        super().reset(seed=seed)
        self._draw_episode()
        self._step = 0
        self._position = 0
        self._started = True
        return self._observation(), {}

    def step(
        self, action: np.int64 | int
    ) -> tuple[npt.NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        """Take the target position ``action`` (0 short, 1 flat, 2 long) over the next price change."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._step >= EPISODE_STEPS:
            raise RuntimeError(f"the episode ended after {EPISODE_STEPS} steps; call reset()")
        index = int(action)
        if not 0 <= index < len(_POSITIONS):
            raise ValueError(f"action must be 0 (short), 1 (flat) or 2 (long), got {action!r}")
        t = self.time_index
        new_position = _POSITIONS[index]
        traded = abs(new_position - self._position)
        flow = self._flow(t, noise=True)
        self._price[t + 1] = self._next_price(t, flow)
        change = self._price[t + 1] - self._price[t]
        reward = _PERCENT * (new_position * change - self.cost * traded)
        self._position = new_position
        self._step += 1
        truncated = self._step >= EPISODE_STEPS
        return self._observation(), float(reward), False, truncated, {"flow": flow}


@checked
def oracle_action(env: MarketEnv) -> int:
    """The hidden-state oracle's action: the position maximising the expected one-step reward.

    It reads the hidden fundamental, regime and the participants' deterministic flow
    (:meth:`MarketEnv.expected_price_change`) and picks ``argmax_x x·E[Δp] − cost·|x − x_prev|``
    (ties → keep the position, then flat).  A myopic policy with information no agent has: an
    **upper reference** for the benchmark, not the exact optimum of the POMDP nor of the
    hidden-state MDP.
    """
    expected = env.expected_price_change()
    previous = env.position
    best_index, best_value = 0, -math.inf
    for index, x in sorted(enumerate(_POSITIONS), key=lambda ix: (ix[1] != previous, ix[1] != 0)):
        value = x * expected - env.cost * abs(x - previous)
        if value > best_value:
            best_index, best_value = index, value
    return best_index


@checked
def oracle_return(seed: int, **make_kwargs: Any) -> float:
    """The episode return of :func:`oracle_action` on ``MarketEnv(**make_kwargs).reset(seed=seed)``.

    ``make_kwargs`` are :class:`MarketEnv`'s (e.g. a shift's ``volatility_scale``).  The benchmark
    uses it as the "optimal" return (an upper reference, see :func:`oracle_action`).
    """
    env = MarketEnv(**make_kwargs)
    env.reset(seed=seed)
    total = 0.0
    truncated = False
    while not truncated:
        _, reward, _, truncated, _ = env.step(oracle_action(env))
        total += float(reward)
    env.close()
    return total
