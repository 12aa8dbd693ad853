"""SACAgent: the primary agent's soft actor-critic (discrete and continuous)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import amal_verified as av
from amal_verified.agents.sac import SACAgent
from amal_verified.record.checkpoint import load_checkpoint, save_checkpoint

SMALL = (32, 32)
OBS_DIM = 3
DISCRETE = gym.spaces.Discrete(3)
BOX = gym.spaces.Box(low=np.array([-2.0, 0.0], np.float32), high=np.array([2.0, 1.0], np.float32))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _agent(space: gym.spaces.Discrete | gym.spaces.Box, seed: int = 0, **kw: object) -> SACAgent:
    return SACAgent(OBS_DIM, space, generator=_gen(seed), hidden=SMALL, **kw)  # type: ignore[arg-type]


def _batch(space: gym.spaces.Discrete | gym.spaces.Box, b: int = 16, seed: int = 1) -> list[torch.Tensor]:
    g = _gen(seed)
    obs = torch.randn(b, OBS_DIM, generator=g)
    next_obs = torch.randn(b, OBS_DIM, generator=g)
    if isinstance(space, gym.spaces.Discrete):
        action = torch.randint(0, int(space.n), (b,), generator=g)
    else:
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        action = low + (high - low) * torch.rand(b, 2, generator=g)
    reward = torch.randn(b, generator=g)
    terminated = torch.rand(b, generator=g) < 0.2
    return [obs, action, reward, next_obs, terminated]


def _params(agent: SACAgent) -> list[torch.Tensor]:
    return [*agent.parameters(), *agent.critic_target.parameters()]


def _same_state(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SPACES = [pytest.param(DISCRETE, id="discrete"), pytest.param(BOX, id="continuous")]


# ---------------------------------------------------------------------------- construction, act, behaviour


@pytest.mark.parametrize("space", SPACES)
def test_act_and_behaviour_shapes_and_bounds(space: gym.spaces.Discrete | gym.spaces.Box) -> None:
    agent = _agent(space)
    obs = 5 * torch.randn(64, OBS_DIM, generator=_gen(3))
    stochastic = agent.act(obs, generator=_gen(4))
    det = agent.act(obs, deterministic=True)
    beh = agent.behaviour(obs)
    if isinstance(space, gym.spaces.Discrete):
        for a in (stochastic, det):
            assert a.shape == (64,) and a.dtype == torch.int64
            assert bool(((a >= 0) & (a < 3)).all())
        assert beh.shape == (64, 3)
        assert torch.allclose(beh.sum(-1), torch.ones(64))
        assert torch.equal(det, beh.argmax(-1))
    else:
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        for a in (stochastic, det, beh):
            assert a.shape == (64, 2) and a.dtype == torch.float32
            assert bool(((a >= low) & (a <= high)).all())
        assert torch.equal(det, beh)
        assert not torch.equal(stochastic, det)
    assert not beh.requires_grad and not stochastic.requires_grad
    # Same acting generator seed, same actions.
    assert torch.equal(agent.act(obs, generator=_gen(4)), stochastic)


def test_stochastic_act_needs_generator() -> None:
    agent = _agent(DISCRETE)
    with pytest.raises(ValueError, match="generator"):
        agent.act(torch.zeros(2, OBS_DIM))


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (gym.spaces.Box(-1.0, 1.0, (2, 2)), "1-D"),
        (gym.spaces.Box(-np.inf, 1.0, (2,)), "finite"),
        (gym.spaces.Discrete(3, start=1), "start at 0"),
    ],
)
def test_rejects_unsupported_spaces(space: gym.spaces.Discrete | gym.spaces.Box, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _agent(space)


def test_default_target_entropy() -> None:
    assert _agent(BOX).target_entropy == -2.0
    assert _agent(DISCRETE).target_entropy == pytest.approx(0.3 * np.log(3))
    assert _agent(DISCRETE, target_entropy=0.5).target_entropy == 0.5


# ---------------------------------------------------------------------------- update


@pytest.mark.parametrize("space", SPACES)
def test_update_returns_detached_scalars_and_changes_everything(
    space: gym.spaces.Discrete | gym.spaces.Box,
) -> None:
    agent = _agent(space)
    before = [p.detach().clone() for p in _params(agent)]
    metrics = agent.update(*_batch(space))
    assert set(metrics) == {"critic_loss", "actor_loss", "alpha", "entropy", "q_mean"}
    for value in metrics.values():
        assert value.shape == () and not value.requires_grad and bool(torch.isfinite(value))
    assert float(metrics["alpha"]) == pytest.approx(1.0)  # the value used in this step: init_alpha
    assert agent.updates == 1
    changed = [not torch.equal(b, p) for b, p in zip(before, _params(agent), strict=True)]
    assert all(changed)  # critics, actor, log α and (Polyak) targets all moved


def _bad_batches(space: gym.spaces.Discrete | gym.spaces.Box) -> list[tuple[int, torch.Tensor, str]]:
    obs, action, reward, _, terminated = _batch(space)
    nan_obs = obs.clone()
    nan_obs[3, 1] = float("nan")
    bad = [
        (0, obs[:, :2], "obs must have shape"),
        (0, obs.double(), "obs must have dtype"),
        (0, nan_obs, "obs contains NaN"),
        (3, nan_obs, "next_obs contains NaN"),
        (3, obs[:5], "next_obs must have batch size"),
        (2, reward[:, None], "reward must have shape"),
        (2, reward.clone().fill_(float("inf")), "reward contains NaN"),
        (2, reward.double(), "reward must have dtype"),
        (4, terminated.float(), "terminated must have dtype"),
        (4, terminated[:3], "terminated must have shape"),
    ]
    if isinstance(space, gym.spaces.Discrete):
        bad += [
            (1, action.float(), "action must have dtype"),
            (1, action.clone().fill_(3), "outside"),
            (1, action[:, None], "action must have shape"),
        ]
    else:
        out = action.clone()
        out[0, 0] = 2.5
        nan_action = action.clone()
        nan_action[1, 1] = float("nan")
        bad += [
            (1, action.long(), "action must have dtype"),
            (1, out, "outside"),
            (1, nan_action, "action contains NaN"),
            (1, action[:, :1], "action must have shape"),
        ]
    return bad


@pytest.mark.parametrize("space", SPACES)
def test_update_validation_refuses_and_changes_nothing(space: gym.spaces.Discrete | gym.spaces.Box) -> None:
    agent = _agent(space)
    agent.update(*_batch(space, seed=5))  # optimizer states exist
    state = agent.state_dict()
    for position, bad, message in _bad_batches(space):
        args = _batch(space)
        args[position] = bad
        with pytest.raises(ValueError, match=message):
            agent.update(*args)
        assert _same_state(agent.state_dict(), state), message


def test_terminated_stops_bootstrapping_only_where_true() -> None:
    # With γ = 1 and identical (obs, next_obs), a terminated transition's target is r, a truncated one's
    # (terminated=False) is r + V(s'): the critic loss differs between the two, and the first equals
    # Σ_i (Q_i(s, a) − r)² over both heads.
    space = DISCRETE
    obs, action, reward, next_obs, _ = _batch(space, b=8)
    losses = {}
    for flag in (True, False):
        agent = _agent(space, gamma=1.0)
        with torch.no_grad():
            q1, q2 = agent.critic(obs)
            idx = action[:, None]
            expected = ((q1.gather(1, idx)[:, 0] - reward) ** 2).mean() + (
                (q2.gather(1, idx)[:, 0] - reward) ** 2
            ).mean()
        term = torch.full((8,), flag)
        losses[flag] = agent.update(obs, action, reward, next_obs, term)["critic_loss"]
        if flag:
            assert torch.allclose(2 * losses[flag], expected)
    assert not torch.equal(losses[True], losses[False])


# ---------------------------------------------------------------------------- randomness and determinism


@pytest.mark.parametrize("space", SPACES)
def test_identical_seeds_give_bit_identical_agents(space: gym.spaces.Discrete | gym.spaces.Box) -> None:
    a, b, c = _agent(space, seed=7), _agent(space, seed=7), _agent(space, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(_params(a), _params(c), strict=True))
    for i in range(3):
        batch = _batch(space, seed=10 + i)
        ma, mb = a.update(*batch), b.update(*batch)
        assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


@pytest.mark.parametrize("space", SPACES)
def test_global_rngs_untouched(space: gym.spaces.Discrete | gym.spaces.Box) -> None:
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    np_state = np.random.get_state(legacy=False)
    agent = _agent(space)
    agent.update(*_batch(space))
    obs = torch.randn(4, OBS_DIM, generator=_gen(2))
    agent.act(obs, generator=_gen(3))
    agent.act(obs, deterministic=True)
    agent.behaviour(obs)
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state(legacy=False)
    assert np.array_equal(after["state"]["key"], np_state["state"]["key"])
    assert after["state"]["pos"] == np_state["state"]["pos"]
    assert random.getstate() == py_state


# ---------------------------------------------------------------------------- state


@pytest.mark.parametrize("space", SPACES)
def test_checkpoint_round_trip_continues_bit_for_bit(
    space: gym.spaces.Discrete | gym.spaces.Box, tmp_path: Path
) -> None:
    reference = _agent(space, seed=3)
    reference.update(*_batch(space, seed=20))
    path = tmp_path / "agent.pt"
    save_checkpoint(path, {"agent": reference.state_dict()})
    raw = torch.load(path, weights_only=True)  # plain types only
    assert raw["agent"]["config"] == reference.config()

    resumed = _agent(space, seed=99)  # different initialisation and generator, overwritten by the load
    resumed.load_state_dict(load_checkpoint(path)["agent"])
    assert _same_state(resumed.state_dict(), reference.state_dict())
    for i in range(3):
        batch = _batch(space, seed=30 + i)
        mr, mc = reference.update(*batch), resumed.update(*batch)
        assert all(torch.equal(mr[k], mc[k]) for k in mr)
    assert _same_state(resumed.state_dict(), reference.state_dict())


def test_load_refuses_other_configuration_and_changes_nothing() -> None:
    donor = _agent(DISCRETE, lr=1e-3)
    donor.update(*_batch(DISCRETE))
    agent = _agent(DISCRETE)
    before = agent.state_dict()
    with pytest.raises(ValueError, match="different configuration"):
        agent.load_state_dict(donor.state_dict())
    other = _agent(BOX)
    with pytest.raises(ValueError, match="different configuration"):
        agent.load_state_dict(other.state_dict())
    broken = _agent(DISCRETE, seed=5).state_dict()
    broken["actor"]["head.weight"] = broken["actor"]["head.weight"][:, :2]
    with pytest.raises(ValueError, match=r"actor\.head\.weight"):
        agent.load_state_dict(broken)
    missing = _agent(DISCRETE, seed=5).state_dict()
    del missing["generator_state"]
    with pytest.raises(ValueError, match="missing"):
        agent.load_state_dict(missing)
    assert _same_state(agent.state_dict(), before)


# ---------------------------------------------------------------------------- tagged data


@pytest.mark.parametrize("space", SPACES)
def test_tagged_inputs_leave_parameters_unlabelled(space: gym.spaces.Discrete | gym.spaces.Box) -> None:
    plain_agent, tagged_agent = _agent(space), _agent(space)
    obs, action, reward, next_obs, terminated = _batch(space)
    av.clear_escapes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = tagged_agent.update(
            av.aux(obs.clone(), source="aux-1"),
            av.primary(action.clone()),
            av.aux(reward.clone(), source="aux-1"),
            av.aux(next_obs.clone(), source="aux-1"),
            terminated,
        )
        acts = tagged_agent.act(av.aux(obs.clone(), source="aux-2"), generator=_gen(1))
        beh = tagged_agent.behaviour(av.primary(obs.clone()))
    assert av.escapes() == []
    grads = [p.grad for p in tagged_agent.parameters() if p.grad is not None]
    assert len(grads) == len(tagged_agent.parameters())
    adam = [
        v
        for o in (tagged_agent.actor_optim, tagged_agent.critic_optim)
        for s in o.state.values()
        for v in s.values()
    ]
    for p in [*_params(tagged_agent), *grads, *adam]:
        assert av.label_of(p).is_empty
    # The metrics and outputs carry the inputs' labels...
    assert {str(s) for s in av.label_of(metrics["critic_loss"])} == {"aux:aux-1", "primary:real-env"}
    assert {str(s) for s in av.label_of(acts)} == {"aux:aux-2"}
    assert {str(s) for s in av.label_of(beh)} == {"primary:real-env"}
    # ...and the values are exactly those of the untagged computation.
    plain_metrics = plain_agent.update(obs, action, reward, next_obs, terminated)
    for k, v in plain_metrics.items():
        with av.declassify(reason="test compares values"):
            assert torch.equal(metrics[k].clone(), v)
    assert all(torch.equal(x, y) for x, y in zip(_params(plain_agent), _params(tagged_agent), strict=True))


# ---------------------------------------------------------------------------- learning


def test_discrete_bandit_learns_rewarded_action() -> None:
    # Contextual bandit, one step: the rewarded action is 0 when obs[0] > 0, else 2 (reward 1, others 0).
    torch.manual_seed(0)  # not used by the agent; only makes explicit that nothing depends on it
    agent = SACAgent(OBS_DIM, DISCRETE, generator=_gen(0), hidden=SMALL, lr=3e-3, init_alpha=0.1)
    g = _gen(1)
    for _ in range(150):
        obs = torch.randn(64, OBS_DIM, generator=g)
        action = torch.randint(0, 3, (64,), generator=g)
        best = torch.where(obs[:, 0] > 0, 0, 2)
        reward = (action == best).float()
        agent.update(obs, action, reward, obs, torch.ones(64, dtype=torch.bool))
    probe = torch.randn(256, OBS_DIM, generator=g)
    best = torch.where(probe[:, 0] > 0, 0, 2)
    probs = agent.behaviour(probe)
    assert float(probs.gather(1, best[:, None]).mean()) > 0.8
    with torch.no_grad():
        q1, _ = agent.critic(probe)
    assert float(q1.gather(1, best[:, None]).mean()) > 0.7
    assert float((agent.act(probe, deterministic=True) == best).float().mean()) > 0.9


def test_continuous_bandit_moves_towards_rewarded_action() -> None:
    # One step, reward −(a₀ − 1.5)² − (a₁ − 0.25)²: the mean action must approach (1.5, 0.25).
    agent = SACAgent(OBS_DIM, BOX, generator=_gen(0), hidden=SMALL, lr=3e-3, init_alpha=0.05)
    g = _gen(1)
    target = torch.tensor([1.5, 0.25])
    low, high = torch.as_tensor(BOX.low), torch.as_tensor(BOX.high)
    start = (agent.behaviour(torch.zeros(1, OBS_DIM)) - target).norm()
    for _ in range(200):
        obs = torch.randn(64, OBS_DIM, generator=g)
        action = low + (high - low) * torch.rand(64, 2, generator=g)
        reward = -((action - target) ** 2).sum(-1)
        agent.update(obs, action, reward, obs, torch.ones(64, dtype=torch.bool))
    end = (agent.behaviour(torch.randn(64, OBS_DIM, generator=g)) - target).norm(dim=-1).mean()
    assert float(start) > 1.0
    assert float(end) < 0.4
