"""Supported environments: flat float32 observations, task facts, termination rules, replay."""

from __future__ import annotations

import functools
import pickle
import struct
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from amal_verified.agents.aux_env import DEFAULT_PHYSICS, make_aux_env
from amal_verified.envs import SUPPORTED_ENVS, TaskInfo, make_env, task_info

KEY_CORRIDOR = "MiniGrid-KeyCorridorS3R1-v0"

Record = tuple[str, bytes, bytes, bool, bool]


def _record(obs: Any, reward: Any, terminated: bool, truncated: bool) -> Record:
    arr = np.asarray(obs)
    return (arr.dtype.str, arr.tobytes(), struct.pack("<d", float(reward)), bool(terminated), bool(truncated))


def _random_actions(env: gym.Env[Any, Any], n: int, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return [int(rng.integers(int(space.n))) for _ in range(n)]
    assert isinstance(space, gym.spaces.Box)
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n)]


def _check_flat_obs(env: gym.Env[Any, Any], obs: Any, info: TaskInfo) -> None:
    assert isinstance(obs, np.ndarray)
    assert obs.dtype == np.float32
    assert obs.shape == (info.obs_dim,)


@pytest.mark.parametrize("env_id", SUPPORTED_ENVS)
def test_make_env_gives_flat_float32_observations(env_id: str) -> None:
    info = task_info(env_id)
    env = make_env(env_id)
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    assert space.dtype == np.float32
    assert space.shape == (info.obs_dim,)
    obs, _ = env.reset(seed=0)
    _check_flat_obs(env, obs, info)
    for action in _random_actions(env, 5, seed=0):
        obs, *_ = env.step(action)
        _check_flat_obs(env, obs, info)
    env.close()


def test_task_info_values() -> None:
    cart = task_info("CartPole-v1")
    assert (cart.obs_dim, cart.discrete, cart.action_dim) == (4, True, 2)
    assert cart.action_low == ()
    assert cart.action_high == ()
    assert cart.max_episode_steps == 500
    assert cart.solved_return == 475.0
    assert cart.model_rollouts
    pend = task_info("Pendulum-v1")
    assert (pend.obs_dim, pend.discrete, pend.action_dim) == (3, False, 1)
    assert (pend.action_low, pend.action_high) == ((-2.0,), (2.0,))
    assert pend.max_episode_steps == 200
    assert pend.solved_return == -200.0
    car = task_info("MountainCarContinuous-v0")
    assert (car.obs_dim, car.action_dim, car.max_episode_steps) == (2, 1, 999)
    cheetah = task_info("HalfCheetah-v5")
    assert (cheetah.obs_dim, cheetah.discrete, cheetah.action_dim) == (17, False, 6)
    assert cheetah.action_low == (-1.0,) * 6
    assert cheetah.max_episode_steps == 1000
    assert cheetah.model_rollouts
    kc = task_info(KEY_CORRIDOR)
    assert (kc.obs_dim, kc.discrete, kc.action_dim) == (7 * 7 * 3 + 4, True, 7)
    assert kc.max_episode_steps == 270  # minigrid's own max_steps = 30 * room_size**2
    assert kc.termination is None
    assert not kc.model_rollouts
    assert kc.solved_return is None
    assert task_info("CartPole-v1") == cart  # cached, frozen, comparable
    assert pickle.loads(pickle.dumps(cart)) == cart  # termination rules pickle (checkpoints)


def test_unknown_and_unsupported_ids_raise_value_error_naming_supported() -> None:
    for bad in ["NoSuchEnv-v0", "FrozenLake-v1", "Blackjack-v1"]:
        with pytest.raises(ValueError, match="Supported environment ids: CartPole-v1") as err:
            task_info(bad)
        assert err.value.__cause__ is None
        assert err.value.__context__ is None or err.value.__suppress_context__  # no chained traceback
        with pytest.raises(ValueError, match="HalfCheetah-v5"):
            make_env(bad)
    with pytest.raises(TypeError):
        make_env(3)  # type: ignore[arg-type]


def test_best_effort_other_gymnasium_id() -> None:
    info = task_info("Acrobot-v1")
    assert (info.obs_dim, info.discrete, info.action_dim) == (6, True, 3)
    assert info.termination is None
    assert not info.model_rollouts


def test_task_info_validates() -> None:
    def make(**kw: Any) -> TaskInfo:
        base: dict[str, Any] = dict(
            env_id="x",
            obs_dim=2,
            discrete=False,
            action_dim=1,
            action_low=(-1.0,),
            action_high=(1.0,),
            max_episode_steps=10,
            termination=None,
            model_rollouts=False,
            solved_return=None,
        )
        base.update(kw)
        return TaskInfo(**base)

    make()
    with pytest.raises(ValueError, match="model_rollouts"):
        make(model_rollouts=True)
    make(discrete=True, action_dim=3, action_low=(), action_high=())
    with pytest.raises(ValueError, match="discrete"):
        make(discrete=True)
    with pytest.raises(ValueError, match="action_dim entries"):
        make(action_low=(-1.0, -1.0))
    with pytest.raises(ValueError, match="finite"):
        make(action_low=(-float("inf"),))
    with pytest.raises(ValueError, match="<="):
        make(action_low=(2.0,))
    with pytest.raises(TypeError):
        make(obs_dim="2")


# --- termination rules -------------------------------------------------------------------------


def _transitions(
    env_id: str, policy: Callable[[np.ndarray, int], Any], steps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    env = make_env(env_id)
    obs, _ = env.reset(seed=seed)
    o, a, n, d = [], [], [], []
    for t in range(steps):
        action = policy(obs, t)
        next_obs, _, terminated, truncated, _ = env.step(action)
        o.append(obs)
        a.append(np.atleast_1d(np.asarray(action, dtype=np.float32)))
        n.append(next_obs)
        d.append(terminated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset(seed=seed + t + 1)
    env.close()
    return (
        torch.as_tensor(np.stack(o)),
        torch.as_tensor(np.stack(a)),
        torch.as_tensor(np.stack(n)),
        torch.as_tensor(np.array(d, dtype=bool)),
    )


def test_cartpole_termination_matches_env() -> None:
    rng = np.random.default_rng(0)
    obs, act, nxt, done = _transitions("CartPole-v1", lambda o, t: int(rng.integers(2)), 300, seed=0)
    rule = task_info("CartPole-v1").termination
    assert rule is not None
    pred = rule(obs, act, nxt)
    assert pred.dtype == torch.bool
    assert pred.shape == done.shape
    assert int(done.sum()) >= 5
    assert torch.equal(pred, done)
    # The env's own thresholds: 2.4 and 12 degrees.
    probe = torch.tensor([[2.41, 0, 0, 0], [2.39, 0, 0, 0], [0, 0, 0.21, 0], [0, 0, -0.2, 0]])
    assert rule(probe, probe[:, :1], probe).tolist() == [True, False, True, False]


def test_mountain_car_termination_matches_env() -> None:
    # Energy pumping (push along the velocity) reaches the goal within the episode.
    def pump(o: np.ndarray, t: int) -> np.ndarray:
        return np.array([1.0 if o[1] >= 0 else -1.0], dtype=np.float32)

    obs, act, nxt, done = _transitions("MountainCarContinuous-v0", pump, 400, seed=0)
    rule = task_info("MountainCarContinuous-v0").termination
    assert rule is not None
    assert int(done.sum()) >= 1
    assert torch.equal(rule(obs, act, nxt), done)
    probe = torch.tensor([[0.46, 0.01], [0.46, -0.01], [0.44, 0.01]])
    assert rule(probe, probe[:, :1], probe).tolist() == [True, False, False]


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "HalfCheetah-v5"])
def test_never_terminating_envs(env_id: str) -> None:
    info = task_info(env_id)
    assert info.termination is not None
    batch = torch.randn(5, info.obs_dim)
    out = info.termination(batch, torch.zeros(5, info.action_dim), batch * 100)
    assert out.dtype == torch.bool
    assert out.shape == (5,)
    assert not out.any()


def test_key_corridor_observation_layout() -> None:
    env = make_env(KEY_CORRIDOR)
    obs, _ = env.reset(seed=3)
    raw = env.unwrapped.gen_obs()  # type: ignore[attr-defined]
    assert obs.min() >= 0.0
    assert obs.max() <= 1.0
    direction = obs[-4:]
    assert direction.sum() == 1.0
    assert int(np.argmax(direction)) == int(raw["direction"])
    image = obs[:-4].reshape(7, 7, 3)
    np.testing.assert_allclose(image[..., 0] * 10, raw["image"][..., 0], atol=1e-5)
    np.testing.assert_allclose(image[..., 1] * 5, raw["image"][..., 1], atol=1e-5)
    np.testing.assert_allclose(image[..., 2] * 2, raw["image"][..., 2], atol=1e-5)
    env.close()


# --- reproducibility: rebuild + reset(seed=episode_seed) + replay --------------------------------


def _builders() -> list[tuple[str, str, Callable[[], gym.Env[Any, Any]]]]:
    out: list[tuple[str, str, Callable[[], gym.Env[Any, Any]]]] = []
    for env_id in SUPPORTED_ENVS:
        out.append((env_id, "primary", functools.partial(make_env, env_id)))
        out.append((env_id, "aux", functools.partial(make_aux_env, env_id, seed=11)))
    return out


@pytest.mark.parametrize(
    ("env_id", "kind", "build"), _builders(), ids=[f"{e}-{k}" for e, k, _ in _builders()]
)
def test_restore_by_replay_is_bit_identical(
    env_id: str, kind: str, build: Callable[[], gym.Env[Any, Any]]
) -> None:
    base_seed = 1000
    env_a = build()
    actions = _random_actions(env_a, 70, seed=5)
    episode = 0
    episode_seed = base_seed
    obs, _ = env_a.reset(seed=episode_seed)
    episode_start = _record(obs, 0.0, False, False)
    episode_records: list[Record] = []
    episode_actions: list[Any] = []
    for action in actions[:50]:
        step = env_a.step(action)
        episode_records.append(_record(step[0], step[1], step[2], step[3]))
        episode_actions.append(action)
        if step[2] or step[3]:
            episode += 1
            episode_seed = base_seed + episode
            obs, _ = env_a.reset(seed=episode_seed)
            episode_start = _record(obs, 0.0, False, False)
            episode_records, episode_actions = [], []

    assert episode_actions  # the restore happens mid-episode
    # Checkpoint restore: a fresh env, reset with the episode's seed, replay its actions.
    env_b = build()
    obs, _ = env_b.reset(seed=episode_seed)
    assert _record(obs, 0.0, False, False) == episode_start
    replayed = []
    for action in episode_actions:
        step = env_b.step(action)
        replayed.append(_record(step[0], step[1], step[2], step[3]))
    assert replayed == episode_records

    # Both continue identically.
    for action in actions[50:]:
        sa = env_a.step(action)
        sb = env_b.step(action)
        ra, rb = _record(sa[0], sa[1], sa[2], sa[3]), _record(sb[0], sb[1], sb[2], sb[3])
        assert ra == rb
        if sa[2] or sa[3]:
            episode += 1
            oa, _ = env_a.reset(seed=base_seed + episode)
            ob, _ = env_b.reset(seed=base_seed + episode)
            assert _record(oa, 0.0, False, False) == _record(ob, 0.0, False, False)
    env_a.close()
    env_b.close()


# --- auxiliary environments for the new envs ---------------------------------------------------


def test_every_supported_env_has_a_default_perturbation() -> None:
    for env_id in SUPPORTED_ENVS:
        assert env_id in DEFAULT_PHYSICS
        env = make_aux_env(env_id, seed=0)
        assert env.obs_noise > 0.0
        assert dict(env.physics) == dict(DEFAULT_PHYSICS[env_id])
        obs, _ = env.reset(seed=0)
        assert obs.dtype == np.float32
        assert obs.shape == (task_info(env_id).obs_dim,)
        env.close()
    assert dict(DEFAULT_PHYSICS[KEY_CORRIDOR]) == {}  # no physics: observation noise only


def _model(env: gym.Env[Any, Any]) -> Any:
    return env.unwrapped.model  # type: ignore[attr-defined]


def test_half_cheetah_perturbation_is_per_instance() -> None:
    primary = make_env("HalfCheetah-v5")
    g0 = _model(primary).opt.gravity.copy()
    damping0 = _model(primary).dof_damping.copy()
    friction0 = _model(primary).geom_friction.copy()
    aux1 = make_aux_env("HalfCheetah-v5", seed=0, obs_noise=0.0)
    aux2 = make_aux_env("HalfCheetah-v5", seed=1)
    fresh = make_env("HalfCheetah-v5")
    assert _model(aux1) is not _model(primary)
    assert _model(aux1) is not _model(aux2)
    for env in (primary, fresh):  # untouched by the aux envs' perturbations
        np.testing.assert_array_equal(_model(env).opt.gravity, g0)
        np.testing.assert_array_equal(_model(env).dof_damping, damping0)
        np.testing.assert_array_equal(_model(env).geom_friction, friction0)
    for env in (aux1, aux2):  # each scaled once, never compounded
        np.testing.assert_allclose(_model(env).opt.gravity, 1.5 * g0)
        np.testing.assert_allclose(_model(env).dof_damping, 2.0 * damping0)
        np.testing.assert_allclose(_model(env).geom_friction, 0.6 * friction0)
    np.testing.assert_allclose(aux1.physics_values["model.opt.gravity"], 1.5 * g0)

    # Same env seed and actions: same start, different dynamics.
    actions = _random_actions(primary, 20, seed=0)
    p0, _ = primary.reset(seed=4)
    q0, _ = aux1.reset(seed=4)
    np.testing.assert_array_equal(p0, q0)
    for action in actions:
        p, *_ = primary.step(action)
        q, *_ = aux1.step(action)
    assert not np.allclose(p, q)
    for env in (primary, aux1, aux2, fresh):
        env.close()


def test_key_corridor_aux_differs_by_noise_only() -> None:
    primary = make_env(KEY_CORRIDOR)
    clean = make_aux_env(KEY_CORRIDOR, seed=0, obs_noise=0.0)
    noisy = make_aux_env(KEY_CORRIDOR, seed=0)
    actions = _random_actions(primary, 15, seed=1)
    p, _ = primary.reset(seed=2)
    c, _ = clean.reset(seed=2)
    n, _ = noisy.reset(seed=2)
    np.testing.assert_array_equal(p, c)
    assert not np.array_equal(p, n)
    np.testing.assert_allclose(p, n, atol=0.1)
    for action in actions:
        p, *_ = primary.step(action)
        c, *_ = clean.step(action)
        n, *_ = noisy.step(action)
        np.testing.assert_array_equal(p, c)
        assert not np.array_equal(p, n)


_DIGEST_SCRIPT = """
import hashlib, struct
import numpy as np
from amal_verified.agents.aux_env import make_aux_env
from amal_verified.envs import SUPPORTED_ENVS, make_env

def digests():
    out = {}
    for env_id in SUPPORTED_ENVS:
        for kind, env in (("primary", make_env(env_id)), ("aux", make_aux_env(env_id, seed=3))):
            rng = np.random.default_rng(0)
            h = hashlib.sha256()
            obs, _ = env.reset(seed=21)
            h.update(obs.tobytes())
            for _ in range(30):
                space = env.action_space
                if hasattr(space, "n"):
                    action = int(rng.integers(int(space.n)))
                else:
                    action = rng.uniform(space.low, space.high).astype(space.dtype)
                obs, r, te, tr, _ = env.step(action)
                h.update(obs.tobytes() + struct.pack("<d??", float(r), te, tr))
                if te or tr:
                    obs, _ = env.reset(seed=22)
                    h.update(obs.tobytes())
            out[f"{env_id}/{kind}"] = h.hexdigest()
            env.close()
    return out
"""


@pytest.mark.slow
def test_trajectories_identical_in_a_fresh_process() -> None:
    """A checkpoint is usually restored by another process: trajectories must not depend on it."""
    import json
    import subprocess
    import sys

    namespace: dict[str, Any] = {}
    exec(_DIGEST_SCRIPT, namespace)
    here = namespace["digests"]()
    code = _DIGEST_SCRIPT + "\nimport json\nprint(json.dumps(digests()))\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there == here
    assert len(here) == 2 * len(SUPPORTED_ENVS)


def test_mujoco_compile_warning_leaves_no_log_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import mujoco  # type: ignore[import-untyped,unused-ignore]

    from amal_verified.envs.tasks import _mujoco_warning

    monkeypatch.chdir(tmp_path)
    previous = mujoco.get_mju_user_warning()
    env = make_aux_env("HalfCheetah-v5", seed=0)
    env.reset(seed=0)
    env.close()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert mujoco.get_mju_user_warning() is previous
    with pytest.warns(RuntimeWarning, match="MuJoCo: something else"):
        _mujoco_warning("something else")
