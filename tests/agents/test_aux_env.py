"""Auxiliary environments: perturbed physics and observation noise from the wrapper's own generator."""

from __future__ import annotations

import random
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from amal_verified.agents.aux_env import DEFAULT_PHYSICS, PerturbedEnv, make_aux_env

ENV_IDS = ["CartPole-v1", "Pendulum-v1", "MountainCarContinuous-v0"]


def _actions(env_id: str, n: int) -> list[Any]:
    if env_id == "CartPole-v1":
        return [k % 2 for k in range(n)]  # alternate pushes, stays upright for a while
    return [np.array([1.0 if (k // 5) % 2 == 0 else -1.0], dtype=np.float32) for k in range(n)]


def _rollout(env: gym.Env[Any, Any], actions: list[Any], seed: int | None) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    out = [np.asarray(obs, dtype=np.float64)]
    for a in actions:
        obs, _, terminated, truncated, _ = env.step(a)
        out.append(np.asarray(obs, dtype=np.float64))
        if terminated or truncated:
            break
    return np.stack(out)


def _internal_state(env: gym.Env[Any, Any]) -> np.ndarray:
    return np.asarray(env.unwrapped.state, dtype=np.float64)  # type: ignore[attr-defined]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_physics_perturbation_changes_dynamics(env_id: str) -> None:
    actions = _actions(env_id, 8)
    primary = gym.make(env_id)
    aux = make_aux_env(env_id, seed=0, obs_noise=0.0)
    # Same start state: reset both with the same env seed, then copy the primary's state into aux.
    primary.reset(seed=123)
    aux.reset()
    aux.unwrapped.state = np.array(primary.unwrapped.state, copy=True)  # type: ignore[attr-defined]
    diverged = False
    for a in actions:
        primary.step(a)
        aux.step(a)
        if not np.allclose(_internal_state(primary), _internal_state(aux), rtol=0, atol=1e-7):
            diverged = True
    assert diverged
    for name, value in aux.physics_values.items():
        assert getattr(aux.unwrapped, name) == pytest.approx(value)
        assert getattr(primary.unwrapped, name) != pytest.approx(value)  # primary untouched
    primary.close()
    aux.close()


def test_cartpole_derived_attributes_are_recomputed() -> None:
    env = make_aux_env("CartPole-v1", seed=0, physics={"masspole": 3.0, "length": 2.0}, obs_noise=0.0)
    base: Any = env.unwrapped
    assert base.masspole == pytest.approx(0.3)
    assert base.total_mass == pytest.approx(0.3 + base.masscart)
    assert base.polemass_length == pytest.approx(0.3 * 1.0)
    with pytest.raises(ValueError, match="derived"):
        make_aux_env("CartPole-v1", seed=0, physics={"total_mass": 2.0})


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory_and_differs_from_primary(env_id: str) -> None:
    actions = _actions(env_id, 20)
    a = _rollout(make_aux_env(env_id, seed=5), actions, None)
    b = _rollout(make_aux_env(env_id, seed=5), actions, None)
    np.testing.assert_array_equal(a, b)
    c = _rollout(make_aux_env(env_id, seed=6), actions, None)
    assert a.shape != c.shape or not np.array_equal(a, c)
    # Explicit reset(seed=s) is deterministic too, and reseeds the noise.
    env = make_aux_env(env_id, seed=1)
    d1 = _rollout(env, actions, 42)
    d2 = _rollout(env, actions, 42)
    np.testing.assert_array_equal(d1, d2)


def test_same_actions_same_seed_differ_from_primary_env() -> None:
    """The brief's check: identical env seed and actions, primary vs aux, different trajectories."""
    env_id = "Pendulum-v1"
    actions = _actions(env_id, 30)
    aux = make_aux_env(env_id, seed=0, obs_noise=0.0)
    primary = gym.make(env_id)
    p = _rollout(primary, actions, 77)
    q = _rollout(aux, actions, 77)
    np.testing.assert_array_equal(p[0], q[0])  # same start (noise off, same env seed)
    assert not np.allclose(p, q)


@pytest.mark.parametrize("std", [0.05, 0.5])
def test_observation_noise_has_configured_std(std: float) -> None:
    env_id = "Pendulum-v1"
    clean = make_aux_env(env_id, seed=3, obs_noise=0.0)
    noisy = make_aux_env(env_id, seed=3, obs_noise=std)
    assert noisy.obs_noise == std
    actions = _actions(env_id, 199)
    diffs = []
    for _ in range(6):
        c = _rollout(clean, actions, None)
        n = _rollout(noisy, actions, None)
        diffs.append(n - c)
    noise = np.concatenate(diffs).ravel()
    assert noise.size > 3000
    assert abs(noise.mean()) < 4 * std / np.sqrt(noise.size)
    assert noise.std() == pytest.approx(std, rel=0.05)


def test_noise_keeps_observation_dtype() -> None:
    env = make_aux_env("CartPole-v1", seed=0, obs_noise=0.1)
    obs, _ = env.reset()
    assert obs.dtype == env.observation_space.dtype
    obs, *_ = env.step(0)
    assert obs.dtype == env.observation_space.dtype


def test_aux_envs_independent_and_leave_global_rngs_alone() -> None:
    env_id = "CartPole-v1"
    actions = _actions(env_id, 30)
    solo_a = _rollout(make_aux_env(env_id, seed=1, obs_noise=0.2), actions, None)
    solo_b = _rollout(make_aux_env(env_id, seed=2, obs_noise=0.2), actions, None)

    np_state = np.random.get_state(legacy=False)
    torch_state = torch.get_rng_state()
    py_state = random.getstate()
    # Interleave, with extra sampling from b: each trajectory must match its solo run.
    a2 = make_aux_env(env_id, seed=1, obs_noise=0.2)
    b2 = make_aux_env(env_id, seed=2, obs_noise=0.2)
    obs_a, _ = a2.reset()
    obs_b, _ = b2.reset()
    got_a, got_b = [obs_a], [obs_b]
    done_a = done_b = False
    for act in actions:
        if not done_b:
            b2.observation_space.sample()
            b2.action_space.sample()
            o, _, t, tr, _ = b2.step(act)
            got_b.append(o)
            done_b = t or tr
        if not done_a:
            o, _, t, tr, _ = a2.step(act)
            got_a.append(o)
            done_a = t or tr
    np.testing.assert_array_equal(np.stack(got_a).astype(np.float64), solo_a)
    np.testing.assert_array_equal(np.stack(got_b).astype(np.float64), solo_b)

    new_np = np.random.get_state(legacy=False)
    np.testing.assert_array_equal(new_np["state"]["key"], np_state["state"]["key"])
    assert new_np["state"]["pos"] == np_state["state"]["pos"]
    assert (new_np["has_gauss"], new_np["gauss"]) == (np_state["has_gauss"], np_state["gauss"])
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state


def test_each_call_builds_a_fresh_instance() -> None:
    a = make_aux_env("CartPole-v1", seed=0)
    b = make_aux_env("CartPole-v1", seed=1)
    assert a.unwrapped is not b.unwrapped
    assert a.seed == 0
    assert b.seed == 1


def test_defaults_exist_for_supported_envs() -> None:
    for env_id in ENV_IDS:
        assert env_id in DEFAULT_PHYSICS
        env = make_aux_env(env_id, seed=0)
        assert dict(env.physics) == dict(DEFAULT_PHYSICS[env_id])
        env.close()


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="obs_noise"):
        make_aux_env("CartPole-v1", seed=0, obs_noise=-0.1)
    with pytest.raises(ValueError, match="obs_noise"):
        make_aux_env("CartPole-v1", seed=0, obs_noise=float("nan"))
    with pytest.raises(ValueError, match=r"no attribute 'gravityy'.*gravity"):
        make_aux_env("CartPole-v1", seed=0, physics={"gravityy": 2.0})
    with pytest.raises(ValueError, match="not a real number"):
        make_aux_env("CartPole-v1", seed=0, physics={"kinematics_integrator": 2.0})
    with pytest.raises(ValueError, match="> 0"):
        make_aux_env("Pendulum-v1", seed=0, physics={"g": 0.0})
    with pytest.raises(ValueError, match="> 0"):
        make_aux_env("Pendulum-v1", seed=0, physics={"g": float("inf")})
    with pytest.raises(ValueError, match="no default physics"):
        make_aux_env("Acrobot-v0-does-not-matter", seed=0)
    with pytest.raises(ValueError, match="seed"):
        make_aux_env("CartPole-v1", seed=-1)
    with pytest.raises(TypeError):
        make_aux_env("CartPole-v1", seed=1.5)  # type: ignore[arg-type]


def test_noise_only_for_env_without_defaults() -> None:
    env = make_aux_env("Acrobot-v1", seed=0, physics={}, obs_noise=0.1)
    assert isinstance(env, PerturbedEnv)
    assert dict(env.physics) == {}
    env.reset()
    env.step(0)
    env.close()


def test_refuses_to_perturb_an_instance_twice() -> None:
    env = make_aux_env("Pendulum-v1", seed=0)
    g = env.unwrapped.g  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="already perturbed"):
        PerturbedEnv(env, seed=0, physics={"g": 2.0}, obs_noise=0.0)
    assert env.unwrapped.g == g  # type: ignore[attr-defined]


def test_mujoco_model_field_errors() -> None:
    with pytest.raises(ValueError, match="MuJoCo environments only"):
        make_aux_env("CartPole-v1", seed=0, physics={"model.opt.gravity": 1.5})
    with pytest.raises(ValueError, match="no field"):
        make_aux_env("HalfCheetah-v5", seed=0, physics={"model.no_such_field": 1.5})
    with pytest.raises(ValueError, match="not a float array"):
        make_aux_env("HalfCheetah-v5", seed=0, physics={"model.nbody": 1.5})
    with pytest.raises(ValueError, match="public MjModel fields"):
        make_aux_env("HalfCheetah-v5", seed=0, physics={"model._private": 1.5})
    with pytest.raises(ValueError, match="> 0"):
        make_aux_env("HalfCheetah-v5", seed=0, physics={"model.body_mass": -1.0})


def test_mujoco_body_mass_scaling() -> None:
    primary = make_aux_env("HalfCheetah-v5", seed=0, physics={}, obs_noise=0.0)
    heavy = make_aux_env("HalfCheetah-v5", seed=0, physics={"model.body_mass": 2.0}, obs_noise=0.0)
    m0 = primary.unwrapped.model.body_mass  # type: ignore[attr-defined]
    m1 = heavy.unwrapped.model.body_mass  # type: ignore[attr-defined]
    np.testing.assert_allclose(m1, 2.0 * m0)
    value = heavy.physics_values["model.body_mass"]
    assert isinstance(value, np.ndarray)
    assert not value.flags.writeable
