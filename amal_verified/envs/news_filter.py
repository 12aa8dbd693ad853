"""A synthetic news stream to filter for an analyst (a stand-in for GDELT OSINT filtering).

Everything is synthetic and drawn from the environment's own seeded generator; there is no
network access.  Registered as ``amal/NewsFilter-v0`` with the defaults below.

The stream (one article per step, :data:`EPISODE_ARTICLES` = 200 per episode)
---------------------------------------------------------------------------
- Each article has a hidden **topic** (uniform over :data:`NUM_TOPICS` = 8) and a **source**
  (one of :data:`NUM_SOURCES` = 6, drawn with the weights ``source_mix``, uniform by default).
- Source ``s`` publishes an *accurate* article with its hidden reliability
  :data:`SOURCE_RELIABILITY` ``[s]`` = (0.95, 0.9, 0.8, 0.6, 0.4, 0.2).  Inaccurate articles
  have a more extreme tone (±0.5 instead of 0, noise σ 0.3) and are shorter (standardised
  log-length mean −0.5 instead of 0, σ 1): weak per-article cues.
- The analyst's **interest** is a hidden set of :data:`NUM_RELEVANT` = 3 topics, drawn at
  reset.  Before each article after the first, with probability ``0.02·drift_rate`` one
  interesting topic (uniform) is replaced by one uninteresting topic (uniform): the interest drifts
  slowly (about 4 changes per episode at ``drift_rate=1``).  An article is *relevant* when its topic
  is in the current interest set and *useful* when it is relevant and accurate.
- ``synthetic_fraction`` (0 in the primary stream, 0.2 in the auxiliary one, see
  :data:`amal_verified.agents.aux_env.DEFAULT_AUX_MAKE_KWARGS`): each article is, with this probability,
  replaced by injected propaganda: on a currently interesting topic, from a source drawn with
  ``source_mix``, always inaccurate.  A world model that learned from the auxiliary stream would
  overrate how often relevant-looking articles are false.

Observation (``float32``, length 20)
-----------------------------------
``[0:8]`` topic features ``one_hot(topic) + noise_scale·N(0, 1)`` (``noise_scale`` 0.5 by
default); ``[8:14]`` source one-hot; ``[14]`` tone; ``[15]`` standardised log-length;
``[16:19]`` the analyst's feedback on the *previous* article, each +1 (yes), −1 (no) or 0 (no
previous article): ``[16]`` was it kept, ``[17]`` was it relevant, ``[18]`` was it accurate (the
analyst reviews every article afterwards, kept or not); ``[19]`` the fraction of the stream
elapsed (0 at reset, 1 after the last article).  The interest set, the source reliabilities and
the accuracy are hidden: the interest must be inferred from the feedback history.  The
article features ``[0:16]`` are clipped to ±:data:`FEATURE_BOUND` = 10 (reached only with a large
``noise_scale``); the observation after the last article has them all zero.

Action and reward
-----------------
``Discrete(2)``: 0 drop, 1 keep.  Reward: keep a useful article **+1**; keep an inaccurate one
**−1** (relevant or not); keep an accurate irrelevant one **−0.5**; drop a useful one **−0.25**
(a missed report); drop anything else **0**.

Episodes end by truncation after the 200th article (``truncated=True``, never ``terminated``;
``max_steps`` = 200 is exposed for :func:`amal_verified.envs.task_info`).  The final ``info``
holds the episode's ``precision`` (useful kept / kept; 0 if nothing was kept), ``recall`` (useful
kept / useful; 1 if there was no useful article), ``f1`` (0 if precision + recall is 0), the
counts ``kept`` and ``useful``, and ``is_success`` = ``f1 >= success_f1`` (default 0.6).
Stepping a finished episode raises ``RuntimeError``.

References: :func:`oracle_action` knows whether the article is useful (keeps exactly the useful
ones: F1 = 1, the **upper reference** :func:`oracle_return`); :func:`informed_action` knows the
interest set, the source reliabilities and the cue distributions but not the article's accuracy,
and takes the action with the higher expected reward (Bayes-optimal given that knowledge in the
primary stream; not calibrated for synthetic articles); :func:`informed_return` is its episode
return, the benchmark's "optimal" level: the oracle is out of reach (the informed filter scores
about 86 % of the oracle's random-normalised return, so "90 % of optimal" against it would be
unreachable for any filter; each policy's level over seeds: ``benchmarks/README.md``, "Design
measurements quoted by the code").

Distribution shift (the benchmark's robustness evaluation): ``drift_rate`` (finite, 0 ≤
``drift_rate`` ≤ 50), ``source_mix`` (6 finite non-negative weights, positive sum),
``noise_scale`` (finite, > 0).  Invalid values raise ``ValueError``.

Reproducibility: every random quantity of an episode is drawn at reset from ``self.np_random``
(seeded by ``reset(seed=...)``) in a fixed order, independent of the actions; the same seed and
actions give bit-identical episodes, and kwargs change only the quantities they govern (e.g.
``noise_scale`` scales the same topic noise draws).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from amal_verified.common.runtime_checks import checked

__all__ = [
    "EPISODE_ARTICLES",
    "FEATURE_BOUND",
    "NUM_RELEVANT",
    "NUM_SOURCES",
    "NUM_TOPICS",
    "OBS_DIM",
    "REWARDS",
    "SOURCE_RELIABILITY",
    "NewsFilterEnv",
    "informed_action",
    "informed_return",
    "oracle_action",
    "oracle_return",
]

NUM_TOPICS: Final = 8
NUM_SOURCES: Final = 6
NUM_RELEVANT: Final = 3
EPISODE_ARTICLES: Final = 200
SOURCE_RELIABILITY: Final[tuple[float, ...]] = (0.95, 0.9, 0.8, 0.6, 0.4, 0.2)
"""Probability that an article of each source is accurate (hidden from the agent)."""

REWARDS: Final[dict[str, float]] = {
    "keep_useful": 1.0,
    "keep_inaccurate": -1.0,
    "keep_irrelevant": -0.5,
    "drop_useful": -0.25,
    "drop_other": 0.0,
}
"""The reward of each outcome (see the module docstring)."""

_TOPIC_END: Final = NUM_TOPICS
_SOURCE_END: Final = _TOPIC_END + NUM_SOURCES
_TONE: Final = _SOURCE_END
_LENGTH: Final = _SOURCE_END + 1
_FEEDBACK: Final = _SOURCE_END + 2
_ELAPSED: Final = _FEEDBACK + 3
OBS_DIM: Final = _ELAPSED + 1
"""Observation length (20)."""

FEATURE_BOUND: Final = 10.0
"""Article features are clipped to ``[−FEATURE_BOUND, FEATURE_BOUND]``."""

_DRIFT_PROBABILITY: Final = 0.02
_MAX_DRIFT_RATE: Final = 1.0 / _DRIFT_PROBABILITY
_TONE_SHIFT: Final = 0.5
_TONE_NOISE: Final = 0.3
_LENGTH_SHIFT: Final = -0.5
_KEEP: Final = 1


def _sign(flag: bool) -> float:
    return 1.0 if flag else -1.0


class NewsFilterEnv(gym.Env[npt.NDArray[np.float32], np.int64]):
    """The news stream (see the module docstring for the stream, observation, reward and kwargs)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  # gymnasium's convention

    @checked
    def __init__(
        self,
        *,
        drift_rate: float = 1.0,
        source_mix: Sequence[float] | None = None,
        noise_scale: float = 0.5,
        synthetic_fraction: float = 0.0,
        success_f1: float = 0.6,
        render_mode: str | None = None,
    ) -> None:
        if not (math.isfinite(drift_rate) and 0.0 <= drift_rate <= _MAX_DRIFT_RATE):
            raise ValueError(f"drift_rate must be finite and in [0, {_MAX_DRIFT_RATE:g}], got {drift_rate}")
        mix = np.full(NUM_SOURCES, 1.0) if source_mix is None else np.array(source_mix, dtype=np.float64)
        if mix.shape != (NUM_SOURCES,):
            raise ValueError(f"source_mix must have {NUM_SOURCES} weights, got {len(mix)}")
        if not (np.all(np.isfinite(mix)) and np.all(mix >= 0.0) and mix.sum() > 0.0):
            raise ValueError(f"source_mix weights must be finite, >= 0 and not all 0, got {list(mix)}")
        if not (math.isfinite(noise_scale) and noise_scale > 0.0):
            raise ValueError(f"noise_scale must be finite and > 0, got {noise_scale}")
        if not (math.isfinite(synthetic_fraction) and 0.0 <= synthetic_fraction <= 1.0):
            raise ValueError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction}")
        if not (math.isfinite(success_f1) and 0.0 <= success_f1 <= 1.0):
            raise ValueError(f"success_f1 must be in [0, 1], got {success_f1}")
        if render_mode is not None:
            raise ValueError(f"NewsFilterEnv has no rendering; render_mode must be None, got {render_mode!r}")
        self.drift_rate = float(drift_rate)
        self.source_mix: tuple[float, ...] = tuple(float(w) for w in mix / mix.sum())
        self.noise_scale = float(noise_scale)
        self.synthetic_fraction = float(synthetic_fraction)
        self.success_f1 = float(success_f1)
        self.render_mode = render_mode
        self.max_steps: int = EPISODE_ARTICLES
        high = np.full(OBS_DIM, FEATURE_BOUND, dtype=np.float32)
        high[_FEEDBACK:] = 1.0
        low = -high
        low[_ELAPSED] = 0.0
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        n = EPISODE_ARTICLES
        self._interest = np.zeros((n, NUM_TOPICS), dtype=bool)
        self._topic = np.zeros(n, dtype=np.int64)
        self._source = np.zeros(n, dtype=np.int64)
        self._accurate = np.zeros(n, dtype=bool)
        self._synthetic = np.zeros(n, dtype=bool)
        self._features = np.zeros((n, _FEEDBACK), dtype=np.float32)
        self._step = 0
        self._started = False
        self._feedback = (0.0, 0.0, 0.0)
        self._counts = {"tp": 0, "fp": 0, "fn": 0}

    # --- hidden state (read by the references and the tests) --------------------------------

    @property
    def steps_taken(self) -> int:
        """Articles decided on in the current episode."""
        return self._step

    def _current(self) -> int:
        if not self._started or self._step >= EPISODE_ARTICLES:
            raise RuntimeError("no current article: call reset() (the episode has ended or not begun)")
        return self._step

    @property
    def interest(self) -> frozenset[int]:
        """The hidden set of topics the analyst currently cares about."""
        return frozenset(int(k) for k in np.flatnonzero(self._interest[self._current()]))

    @property
    def relevant(self) -> bool:
        """Whether the current article's topic is in the current interest set (hidden)."""
        t = self._current()
        return bool(self._interest[t, self._topic[t]])

    @property
    def accurate(self) -> bool:
        """Whether the current article is accurate (hidden)."""
        return bool(self._accurate[self._current()])

    @property
    def synthetic(self) -> bool:
        """Whether the current article is injected propaganda (only with ``synthetic_fraction > 0``)."""
        return bool(self._synthetic[self._current()])

    @property
    def source(self) -> int:
        """The current article's source (also visible, as a one-hot)."""
        return int(self._source[self._current()])

    def accuracy_posterior(self) -> float:
        """``P(accurate | source, tone, length)`` in the primary stream (no synthetic articles)."""
        t = self._current()
        tone = float(self._features[t, _TONE])
        length = float(self._features[t, _LENGTH])
        prior = SOURCE_RELIABILITY[int(self._source[t])]

        def normal(x: float, mean: float, sd: float) -> float:
            return math.exp(-0.5 * ((x - mean) / sd) ** 2) / sd

        like_accurate = normal(tone, 0.0, _TONE_NOISE) * normal(length, 0.0, 1.0)
        like_inaccurate = (
            0.5 * (normal(tone, _TONE_SHIFT, _TONE_NOISE) + normal(tone, -_TONE_SHIFT, _TONE_NOISE))
        ) * normal(length, _LENGTH_SHIFT, 1.0)
        numerator = prior * like_accurate
        denominator = numerator + (1.0 - prior) * like_inaccurate
        return numerator / denominator if denominator > 0.0 else prior

    # --- dynamics ---------------------------------------------------------------------------

    def _draw_episode(self) -> None:
        rng = self.np_random
        n = EPISODE_ARTICLES
        drift_u = rng.random(n)
        drop_index = rng.integers(0, NUM_RELEVANT, size=n)
        add_index = rng.integers(0, NUM_TOPICS - NUM_RELEVANT, size=n)
        interest = np.zeros(NUM_TOPICS, dtype=bool)
        interest[rng.permutation(NUM_TOPICS)[:NUM_RELEVANT]] = True
        topic = rng.integers(0, NUM_TOPICS, size=n)
        source = rng.choice(NUM_SOURCES, size=n, p=np.array(self.source_mix))
        accurate_u = rng.random(n)
        tone_sign = rng.integers(0, 2, size=n) * 2 - 1
        tone_noise = rng.standard_normal(n)
        length_noise = rng.standard_normal(n)
        topic_noise = rng.standard_normal((n, NUM_TOPICS))
        synthetic_u = rng.random(n)
        synthetic_index = rng.integers(0, NUM_RELEVANT, size=n)

        drift_probability = _DRIFT_PROBABILITY * self.drift_rate
        reliability = np.array(SOURCE_RELIABILITY)
        for t in range(n):
            if t > 0 and drift_u[t] < drift_probability:
                interesting = np.flatnonzero(interest)
                others = np.flatnonzero(~interest)
                interest[interesting[drop_index[t]]] = False
                interest[others[add_index[t]]] = True
            self._interest[t] = interest
            if synthetic_u[t] < self.synthetic_fraction:
                self._synthetic[t] = True
                self._topic[t] = np.flatnonzero(interest)[synthetic_index[t]]
                self._accurate[t] = False
            else:
                self._synthetic[t] = False
                self._topic[t] = topic[t]
                self._accurate[t] = accurate_u[t] < reliability[source[t]]
        self._source[:] = source
        inaccurate = ~self._accurate
        features = np.zeros((n, _FEEDBACK))
        features[np.arange(n), self._topic] = 1.0
        features[:, :_TOPIC_END] += self.noise_scale * topic_noise
        features[np.arange(n), _TOPIC_END + source] = 1.0
        features[:, _TONE] = inaccurate * _TONE_SHIFT * tone_sign + _TONE_NOISE * tone_noise
        features[:, _LENGTH] = inaccurate * _LENGTH_SHIFT + length_noise
        self._features[:] = np.clip(features, -FEATURE_BOUND, FEATURE_BOUND)

    def _observation(self) -> npt.NDArray[np.float32]:
        obs = np.zeros(OBS_DIM, dtype=np.float32)
        if self._step < EPISODE_ARTICLES:
            obs[:_FEEDBACK] = self._features[self._step]
        obs[_FEEDBACK : _FEEDBACK + 3] = self._feedback
        obs[_ELAPSED] = self._step / EPISODE_ARTICLES
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        """Start a stream: draw its articles and interest drift from ``np_random`` (seeded by ``seed``)."""
        super().reset(seed=seed)
        self._draw_episode()
        self._step = 0
        self._started = True
        self._feedback = (0.0, 0.0, 0.0)
        self._counts = {"tp": 0, "fp": 0, "fn": 0}
        return self._observation(), {}

    def _episode_info(self) -> dict[str, Any]:
        tp, fp, fn = self._counts["tp"], self._counts["fp"], self._counts["fn"]
        precision = tp / (tp + fp) if tp + fp > 0 else 0.0
        recall = tp / (tp + fn) if tp + fn > 0 else 1.0
        f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0.0 else 0.0
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "kept": tp + fp,
            "useful": tp + fn,
            "is_success": f1 >= self.success_f1,
        }

    def step(
        self, action: np.int64 | int
    ) -> tuple[npt.NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        """Keep (1) or drop (0) the current article; see the module docstring for the reward."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._step >= EPISODE_ARTICLES:
            raise RuntimeError(f"the stream ended after {EPISODE_ARTICLES} articles; call reset()")
        decision = int(action)
        if decision not in (0, 1):
            raise ValueError(f"action must be 0 (drop) or 1 (keep), got {action!r}")
        t = self._step
        relevant = bool(self._interest[t, self._topic[t]])
        accurate = bool(self._accurate[t])
        useful = relevant and accurate
        keep = decision == _KEEP
        if keep:
            if useful:
                reward = REWARDS["keep_useful"]
            elif not accurate:
                reward = REWARDS["keep_inaccurate"]
            else:
                reward = REWARDS["keep_irrelevant"]
            self._counts["tp" if useful else "fp"] += 1
        else:
            reward = REWARDS["drop_useful"] if useful else REWARDS["drop_other"]
            if useful:
                self._counts["fn"] += 1
        self._feedback = (_sign(keep), _sign(relevant), _sign(accurate))
        self._step += 1
        truncated = self._step >= EPISODE_ARTICLES
        info = self._episode_info() if truncated else {}
        return self._observation(), reward, False, truncated, info


@checked
def oracle_action(env: NewsFilterEnv) -> int:
    """Keep (1) exactly the useful articles: the oracle reads the hidden relevance and accuracy."""
    return _KEEP if env.relevant and env.accurate else 0


@checked
def informed_action(env: NewsFilterEnv) -> int:
    """The better action in expectation for a filter that knows the interest set and the source
    reliabilities (:meth:`NewsFilterEnv.accuracy_posterior`) but not the article's accuracy."""
    if not env.relevant:
        return 0  # keeping an irrelevant article never pays: −0.5 or −1 against 0
    p = env.accuracy_posterior()
    keep = p * REWARDS["keep_useful"] + (1.0 - p) * REWARDS["keep_inaccurate"]
    drop = p * REWARDS["drop_useful"]
    return _KEEP if keep > drop else 0


def _episode_return(action: Callable[[NewsFilterEnv], int], seed: int, make_kwargs: dict[str, Any]) -> float:
    env = NewsFilterEnv(**make_kwargs)
    env.reset(seed=seed)
    total = 0.0
    truncated = False
    while not truncated:
        _, reward, _, truncated, _ = env.step(action(env))
        total += float(reward)
    env.close()
    return total


@checked
def oracle_return(seed: int, **make_kwargs: Any) -> float:
    """The episode return of :func:`oracle_action` on ``NewsFilterEnv(**make_kwargs).reset(seed=seed)``
    (the number of useful articles in the stream): an upper bound no filter reaches without seeing
    each article's hidden accuracy."""
    return _episode_return(oracle_action, seed, make_kwargs)


@checked
def informed_return(seed: int, **make_kwargs: Any) -> float:
    """The episode return of :func:`informed_action` on the same episode: the benchmark's "optimal"
    reference, the best a filter can do in expectation without seeing the article's accuracy."""
    return _episode_return(informed_action, seed, make_kwargs)
