"""Partially observable tasks: the market, the news stream and KeyCorridor S8R4."""

from __future__ import annotations

import random
import struct
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from amal_verified.agents.aux_env import DEFAULT_AUX_MAKE_KWARGS, make_aux_env
from amal_verified.envs import make_env, task_info, trading
from amal_verified.envs import news_filter as news
from amal_verified.envs.news_filter import NewsFilterEnv
from amal_verified.envs.trading import PARTICIPANTS, MarketEnv

TRADING = "amal/Trading-v0"
NEWS = "amal/NewsFilter-v0"
KEY_CORRIDOR_S8R4 = "amal/KeyCorridorS8R4-v0"

Record = tuple[bytes, bytes, bool, bool]


def _record(obs: Any, reward: Any, terminated: bool, truncated: bool) -> Record:
    arr = np.asarray(obs)
    assert arr.dtype == np.float32
    return (arr.tobytes(), struct.pack("<d", float(reward)), bool(terminated), bool(truncated))


def _actions(n_actions: int, length: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(a) for a in rng.integers(n_actions, size=length)]


def _rollout(env: gym.Env[Any, Any], seed: int, actions: list[int]) -> list[Record]:
    obs, _ = env.reset(seed=seed)
    records = [_record(obs, 0.0, False, False)]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        records.append(_record(obs, reward, terminated, truncated))
        if terminated or truncated:
            break
    return records


def _episode(env: gym.Env[Any, Any], seed: int, policy: Callable[[], int]) -> tuple[float, dict[str, Any]]:
    env.reset(seed=seed)
    total, truncated, info = 0.0, False, dict[str, Any]()
    while not truncated:
        _, reward, terminated, truncated, info = env.step(policy())
        assert not terminated
        total += float(reward)
    return total, info


def _returns(participants: tuple[str, ...], seeds: range, **kwargs: Any) -> list[np.ndarray]:
    """Per-episode log returns of the market under a flat position."""
    out = []
    for seed in seeds:
        env = MarketEnv(participants, **kwargs)
        _episode(env, seed, lambda: 1)
        out.append(np.diff(env.price_path()[-trading.EPISODE_STEPS - 1 :]))
    return out


def _lag1(returns: list[np.ndarray]) -> float:
    return float(np.mean([np.corrcoef(r[:-1], r[1:])[0, 1] for r in returns]))


# --- registration, spaces, checker --------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        MarketEnv,
        lambda: MarketEnv(PARTICIPANTS, volatility_scale=1.5, drift_scale=2.0, cost=0.0),
        NewsFilterEnv,
        lambda: NewsFilterEnv(drift_rate=2.0, noise_scale=2.0, synthetic_fraction=0.3),
    ],
    ids=["market", "market-shifted", "news", "news-shifted"],
)
def test_env_checker_is_clean(factory: Callable[[], gym.Env[Any, Any]]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(factory(), skip_render_check=True)


@pytest.mark.parametrize(
    ("env_id", "obs_dim", "n_actions", "steps"),
    [(TRADING, trading.WINDOW + 2, 3, trading.EPISODE_STEPS), (NEWS, news.OBS_DIM, 2, news.EPISODE_ARTICLES)],
)
def test_registered_task_spaces_and_fixed_episode_length(
    env_id: str, obs_dim: int, n_actions: int, steps: int
) -> None:
    info = task_info(env_id)
    assert (info.obs_dim, info.discrete, info.action_dim) == (obs_dim, True, n_actions)
    assert info.max_episode_steps == steps
    env = make_env(env_id)
    assert isinstance(env.action_space, gym.spaces.Discrete)
    assert env.action_space.n == n_actions
    records = _rollout(env, 3, _actions(n_actions, steps + 10, seed=1))
    assert len(records) == steps + 1
    assert [r[3] for r in records] == [False] * steps + [True]
    assert not any(r[2] for r in records)
    obs = np.frombuffer(records[-1][0], dtype=np.float32)
    assert obs.shape == (obs_dim,)
    assert obs[-1] == 1.0  # the fraction of the episode elapsed
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)
    env.unwrapped.reset(seed=0)
    with pytest.raises(ValueError, match="action must be"):
        env.unwrapped.step(n_actions)


def test_market_observation_layout() -> None:
    env = MarketEnv()
    obs, _ = env.reset(seed=5)
    expected = np.float32(100.0) * np.diff(env.price_path()[-trading.WINDOW - 1 :]).astype(np.float32)
    np.testing.assert_allclose(obs[: trading.WINDOW], expected, rtol=1e-5)
    assert (obs[trading.WINDOW], obs[trading.WINDOW + 1]) == (0.0, 0.0)
    before = env.log_price
    obs, reward, *_ = env.step(2)
    assert obs[trading.WINDOW] == 1.0
    assert obs[trading.WINDOW + 1] == pytest.approx(1 / trading.EPISODE_STEPS)
    assert reward == pytest.approx(100.0 * ((env.log_price - before) - trading.DEFAULT_COST))
    assert obs[trading.WINDOW - 1] == pytest.approx(100.0 * (env.log_price - before), rel=1e-5)


def test_news_observation_layout_and_feedback() -> None:
    env = NewsFilterEnv()
    obs, _ = env.reset(seed=2)
    assert np.all(obs[16:20] == 0.0)
    for _ in range(50):
        source, relevant, accurate = env.source, env.relevant, env.accurate
        assert obs[8 + source] == 1.0 and np.sum(obs[8:14]) == 1.0
        action = int(obs[0] > 0.5)
        obs, *_ = env.step(action)
        assert tuple(obs[16:19]) == (
            1.0 if action else -1.0,
            1.0 if relevant else -1.0,
            1.0 if accurate else -1.0,
        )


# --- reproducibility ----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", [TRADING, NEWS, KEY_CORRIDOR_S8R4])
def test_same_seed_same_trajectory(env_id: str) -> None:
    n = int(make_env(env_id).action_space.n)  # type: ignore[attr-defined]
    actions = _actions(n, 120, seed=7)
    first = _rollout(make_env(env_id), 11, actions)
    assert first == _rollout(make_env(env_id), 11, actions)
    assert first != _rollout(make_env(env_id), 12, actions)
    aux = _rollout(make_aux_env(env_id, seed=11), 11, actions)
    assert aux == _rollout(make_aux_env(env_id, seed=11), 11, actions)
    assert aux != first


def test_reset_reseeds_and_leaves_global_rngs_alone() -> None:
    np_state = np.random.get_state()[1].copy()  # type: ignore[index]
    py_state = random.getstate()
    env = make_aux_env(TRADING, seed=0)
    again = make_env(NEWS)
    actions = _actions(2, 30, seed=0)
    # A used environment reset with a seed replays like a fresh one.
    _rollout(again, 1, actions)
    assert _rollout(again, 4, actions) == _rollout(make_env(NEWS), 4, actions)
    _rollout(env, 4, actions)
    assert np.array_equal(np.random.get_state()[1], np_state)  # type: ignore[index]
    assert random.getstate() == py_state


def test_trading_aux_differs_only_through_participants_and_noise() -> None:
    actions = _actions(3, trading.EPISODE_STEPS, seed=3)
    for seed in range(3):
        primary = make_env(TRADING)
        aux = make_aux_env(TRADING, seed=seed, obs_noise=0.0)
        p_market: Any = primary.unwrapped
        a_market: Any = aux.unwrapped
        assert a_market.participants == PARTICIPANTS
        p_obs, _ = primary.reset(seed=seed)
        a_obs, _ = aux.reset(seed=seed)
        assert p_obs.tobytes() == a_obs.tobytes()  # warm-up without participants: same start
        p_obs, *_ = primary.step(actions[0])
        a_obs, *_ = aux.step(actions[0])
        assert p_obs[:-2].tobytes() != a_obs[:-2].tobytes()  # the traders act at once
        for action in actions[1:]:
            primary.step(action)
            aux.step(action)
        p_path, a_path = p_market.price_path(), a_market.price_path()
        warmup = len(p_path) - trading.EPISODE_STEPS - 1
        assert p_path[: warmup + 1].tobytes() == a_path[: warmup + 1].tobytes()
        assert np.all(p_path[warmup + 1 :] != a_path[warmup + 1 :])
        # The hidden fundamental is exogenous: identical in both markets.
        assert p_market.fundamental_path().tobytes() == a_market.fundamental_path().tobytes()
    # Without participants and noise, the auxiliary market is the primary one, bit for bit.
    plain = make_aux_env(TRADING, seed=9, obs_noise=0.0, participants=())
    assert _rollout(plain, 9, actions) == _rollout(make_env(TRADING), 9, actions)
    noisy = make_aux_env(TRADING, seed=9, participants=())
    assert _rollout(noisy, 9, actions) != _rollout(make_env(TRADING), 9, actions)


def test_news_aux_injects_propaganda() -> None:
    assert DEFAULT_AUX_MAKE_KWARGS[NEWS] == {"synthetic_fraction": 0.2}
    aux = make_aux_env(NEWS, seed=0, obs_noise=0.0)
    env: Any = aux.unwrapped
    synthetic = relevant_false = relevant = 0
    for seed in range(10):
        aux.reset(seed=seed)
        for _ in range(news.EPISODE_ARTICLES):
            synthetic += env.synthetic
            relevant += env.relevant
            relevant_false += env.relevant and not env.accurate
            if env.synthetic:
                assert env.relevant and not env.accurate
            aux.step(0)
    assert 0.15 < synthetic / (10 * news.EPISODE_ARTICLES) < 0.25
    primary: Any = NewsFilterEnv()
    p_relevant = p_false = 0
    for seed in range(10):
        primary.reset(seed=seed)
        for _ in range(news.EPISODE_ARTICLES):
            p_relevant += primary.relevant
            p_false += primary.relevant and not primary.accurate
            primary.step(0)
    assert relevant_false / relevant > p_false / p_relevant + 0.2


# --- dynamics and references --------------------------------------------------------------------


def test_participants_change_price_dynamics() -> None:
    seeds = range(30)
    base = _returns((), seeds)
    trend = _returns(("trend_following",), seeds)
    reversion = _returns(("mean_reversion",), seeds)
    making = _returns(("market_making",), seeds)
    # Measured (seeds 0–29): lag-1 autocorrelation ≈ 0.08 without traders, ≈ 0.33 with trend
    # followers, ≈ 0.0 with mean reverters (standard errors ≈ 0.01–0.02).
    assert _lag1(trend) > _lag1(base) + 0.15
    assert _lag1(reversion) < _lag1(base) - 0.03
    # The market maker's quote noise widens the return distribution (≈ +11 %).
    assert np.std(np.concatenate(making)) > 1.05 * np.std(np.concatenate(base))
    # The fundamental is the same whatever the participants.
    a, b = MarketEnv(), MarketEnv(PARTICIPANTS)
    a.reset(seed=1)
    b.reset(seed=1)
    assert a.fundamental_path().tobytes() == b.fundamental_path().tobytes()


def test_market_oracle_beats_random() -> None:
    seeds = range(10)
    oracle = [trading.oracle_return(s) for s in seeds]
    rng = np.random.default_rng(0)
    rand = [_episode(MarketEnv(), s, lambda: int(rng.integers(3)))[0] for s in seeds]
    # Measured (seeds 0–19): oracle ≈ +22.9, random ≈ −4.7, per-episode spread ≈ 3.6.
    assert np.mean(oracle) > np.mean(rand) + 15.0
    assert min(oracle) > max(rand)
    assert trading.oracle_return(3) == oracle[3]
    # Registered env and the oracle's own env agree.
    env: Any = make_env(TRADING)
    total, _ = _episode(env, 3, lambda: trading.oracle_action(env.unwrapped))
    assert total == oracle[3]


def test_news_references_beat_random_and_report_metrics() -> None:
    seeds = range(8)
    env: Any = NewsFilterEnv()
    oracle, informed, rand = [], [], []
    rng = np.random.default_rng(0)
    for seed in seeds:
        total, info = _episode(env, seed, lambda: news.oracle_action(env))
        assert info["f1"] == 1.0 and info["precision"] == 1.0 and info["recall"] == 1.0
        assert info["is_success"] is True
        assert total == info["useful"] == news.oracle_return(seed)
        oracle.append(total)
        total, info = _episode(env, seed, lambda: news.informed_action(env))
        assert total == news.informed_return(seed)
        informed.append((total, info["f1"]))
        total, info = _episode(env, seed, lambda: int(rng.integers(2)))
        rand.append((total, info["f1"], info["is_success"]))
    # Measured (seeds 0–19): oracle ≈ +47.9, informed ≈ +34.3 (F1 0.87), random ≈ −38.9 (F1 0.31).
    assert np.mean(oracle) > np.mean([r[0] for r in informed]) > np.mean([r[0] for r in rand]) + 40.0
    assert np.mean([r[1] for r in informed]) > 0.8
    assert np.mean([r[1] for r in rand]) < 0.45 and not any(r[2] for r in rand)


def test_news_metrics_match_counts() -> None:
    env: Any = NewsFilterEnv(success_f1=0.0)
    env.reset(seed=4)
    tp = fp = fn = 0
    rewards = []
    rng = np.random.default_rng(1)
    info: dict[str, Any] = {}
    for _ in range(news.EPISODE_ARTICLES):
        useful, accurate = env.relevant and env.accurate, env.accurate
        keep = int(rng.integers(2))
        expected = (1.0 if useful else -1.0 if not accurate else -0.5) if keep else (-0.25 if useful else 0.0)
        tp, fp, fn = tp + (keep and useful), fp + (keep and not useful), fn + (not keep and useful)
        _, reward, _, truncated, info = env.step(keep)
        rewards.append(reward == expected)
    assert all(rewards) and truncated
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert info["precision"] == pytest.approx(precision)
    assert info["recall"] == pytest.approx(recall)
    assert info["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert (info["kept"], info["useful"], info["is_success"]) == (tp + fp, tp + fn, True)
    # Nothing kept: precision 0, F1 0, no success.
    _, info = _episode(env, 4, lambda: 0)
    assert (info["precision"], info["f1"], info["kept"]) == (0.0, 0.0, 0)


# --- distribution shift -------------------------------------------------------------------------


def test_market_shift_changes_what_it_claims() -> None:
    seeds = range(12)
    base = np.std(np.concatenate(_returns((), seeds)))
    volatile = np.std(np.concatenate(_returns((), seeds, volatility_scale=1.5)))
    assert 1.4 < volatile / base < 1.6
    # The drift scale multiplies the regime drifts: the fundamental's mean path spreads further.
    spread = []
    for scale in (1.0, 4.0):
        ends = []
        for seed in seeds:
            env = MarketEnv(drift_scale=scale)
            env.reset(seed=seed)
            ends.append(abs(env.fundamental_path()[-1]))
        spread.append(np.mean(ends))
    assert spread[1] > 1.5 * spread[0]
    # The cost enters the reward exactly as documented.
    actions = _actions(3, trading.EPISODE_STEPS, seed=2)
    free, costly = MarketEnv(cost=0.0), MarketEnv(cost=0.001)
    free.reset(seed=0)
    costly.reset(seed=0)
    previous = 0
    for action in actions:
        _, r_free, *_ = free.step(action)
        _, r_costly, *_ = costly.step(action)
        traded = abs((action - 1) - previous)
        previous = action - 1
        assert r_costly == pytest.approx(float(r_free) - 100.0 * 0.001 * traded, abs=1e-12)


def test_news_shift_changes_what_it_claims() -> None:
    def stats(**kwargs: Any) -> tuple[float, float, float]:
        env: Any = NewsFilterEnv(**kwargs)
        changes = accurate = 0
        noise: list[float] = []
        for seed in range(10):
            obs, _ = env.reset(seed=seed)
            interest = env.interest
            for _ in range(news.EPISODE_ARTICLES):
                changes += env.interest != interest
                interest = env.interest
                accurate += env.accurate
                topic = np.zeros(news.NUM_TOPICS)
                topic[int(np.argmax(obs[:8]))] = 1.0  # the noise off the true one-hot, roughly
                noise.append(float(np.std(obs[:8] - topic)))
                obs, *_ = env.step(0)
        return changes / 10, accurate / (10 * news.EPISODE_ARTICLES), float(np.median(noise))

    base_changes, base_accurate, base_noise = stats()
    fast_changes, _, _ = stats(drift_rate=2.0)
    _, unreliable, _ = stats(source_mix=(0, 0, 0, 1, 1, 1))
    _, _, noisy = stats(noise_scale=1.0)
    still, _, _ = stats(drift_rate=0.0)
    # Expected 0.02 × 199 ≈ 4 changes per episode, twice that at drift_rate 2 (measured 4.6 and 7.1;
    # the same uniforms decide, so the faster stream changes whenever the slower one does).
    assert 2.5 < base_changes < 6.0
    assert 5.5 < fast_changes < 11.0 and fast_changes > 1.3 * base_changes
    assert still == 0.0
    assert base_accurate > 0.6 and unreliable < 0.5  # reliabilities 0.6/0.4/0.2 average 0.4
    assert noisy > 1.6 * base_noise


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: MarketEnv(("trend_following", "hodl")), "unknown market participants"),
        (lambda: MarketEnv(("market_making", "market_making")), "appear once"),
        (lambda: MarketEnv(volatility_scale=0.0), "volatility_scale must be finite and > 0"),
        (lambda: MarketEnv(volatility_scale=float("inf")), "volatility_scale"),
        (lambda: MarketEnv(drift_scale=-1.0), "drift_scale must be finite and > 0"),
        (lambda: MarketEnv(cost=float("nan")), "cost must be finite and >= 0"),
        (lambda: MarketEnv(cost=-0.1), "cost"),
        (lambda: MarketEnv(render_mode="human"), "render_mode must be None"),
        (lambda: NewsFilterEnv(drift_rate=-0.5), "drift_rate must be finite"),
        (lambda: NewsFilterEnv(drift_rate=float("nan")), "drift_rate"),
        (lambda: NewsFilterEnv(source_mix=(1.0, 2.0)), "source_mix must have 6 weights"),
        (lambda: NewsFilterEnv(source_mix=(0, 0, 0, 0, 0, 0)), "not all 0"),
        (lambda: NewsFilterEnv(source_mix=(1, 1, 1, 1, 1, -1)), ">= 0"),
        (lambda: NewsFilterEnv(noise_scale=0.0), "noise_scale must be finite and > 0"),
        (lambda: NewsFilterEnv(synthetic_fraction=1.5), "synthetic_fraction"),
        (lambda: NewsFilterEnv(success_f1=2.0), "success_f1"),
        (lambda: make_env(TRADING, participants=("arbitrage",)), "unknown market participants"),
        (lambda: make_env(NEWS, drift_rate=-1.0), "drift_rate"),
    ],
)
def test_bad_kwargs_raise_clear_errors(factory: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()


def test_bad_kwarg_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="not the string"):
        MarketEnv("trend_following")
    with pytest.raises(TypeError):
        MarketEnv((1, 2))  # type: ignore[arg-type]
    assert MarketEnv(["market_making"]).participants == ("market_making",)
    with pytest.raises(TypeError):
        NewsFilterEnv(noise_scale="big")  # type: ignore[arg-type]


def test_stepping_before_reset_raises() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        MarketEnv().step(1)
    with pytest.raises(RuntimeError, match="reset"):
        NewsFilterEnv().step(1)


# --- KeyCorridor S8R4 ---------------------------------------------------------------------------


def test_key_corridor_s8r4_task() -> None:
    info = task_info(KEY_CORRIDOR_S8R4)
    assert (info.obs_dim, info.discrete, info.action_dim) == (151, True, 7)
    assert info.max_episode_steps == 30 * 8 * 8
    env = make_env(KEY_CORRIDOR_S8R4)
    base: Any = env.unwrapped
    assert (base.width, base.height) == (3 * 7 + 1, 4 * 7 + 1)  # room_size 8, 4 rows
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (151,)
    assert env.observation_space.shape == (151,)


@pytest.mark.parametrize(
    "env_id", [KEY_CORRIDOR_S8R4, "MiniGrid-KeyCorridorS4R3-v0", "MiniGrid-KeyCorridorS3R1-v0"]
)
def test_key_corridor_aux_env(env_id: str) -> None:
    actions = _actions(7, 60, seed=5)
    primary = _rollout(make_env(env_id), 2, actions)
    aux = _rollout(make_aux_env(env_id, seed=2), 2, actions)
    assert aux == _rollout(make_aux_env(env_id, seed=2), 2, actions)
    assert len(aux) == len(primary) and aux != primary
    quiet = _rollout(make_aux_env(env_id, seed=2, obs_noise=0.0), 2, actions)
    assert quiet == primary  # no physics: the noise is the only perturbation
