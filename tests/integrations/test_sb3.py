"""amal_verified.integrations.sb3: the gated world-model callback beside SB3's SAC.

Real transitions of every vectorised environment reach the primary buffer exactly as SB3 stores them
(terminal observations included); auxiliary rows reach SAC's buffer in groups it accepts; the
callback's state survives save/load with the gate in place; same seed, same world model; without
Stable-Baselines3 the import names the extra to install.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

import amal_verified as av
from amal_verified.integrations.sb3 import GatedWorldModelCallback, Transitions, replay_world_model
from amal_verified.record.checkpoint import load_checkpoint, save_checkpoint

# End to end: each test trains SB3 agents beside a gated world model.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ENV_ID = "Pendulum-v1"
EPISODE = 30  # short episodes, so that a few hundred steps end several of them in every environment
TINY: dict[str, Any] = {
    "train_freq": 25,
    "gradient_steps": 3,
    "batch_size": 16,
    "hidden": 16,
    "buffer_size": 2000,
}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_env(n_envs: int, seed: int = 0) -> Any:
    return make_vec_env(ENV_ID, n_envs=n_envs, seed=seed, env_kwargs={"max_episode_steps": EPISODE})


def make_aux_env() -> gym.Env[Any, Any]:
    return gym.make(ENV_ID, g=15.0, max_episode_steps=EPISODE)


def make_sac(env: Any, seed: int = 0, **kwargs: Any) -> SAC:
    return SAC(
        "MlpPolicy",
        env,
        policy_kwargs={"net_arch": [16, 16]},
        learning_starts=50,
        batch_size=32,
        buffer_size=2000,
        seed=seed,
        **kwargs,
    )


def train(
    n_envs: int, steps: int, aux: int = 0, seed: int = 0, **kwargs: Any
) -> tuple[SAC, GatedWorldModelCallback]:
    callback = GatedWorldModelCallback([make_aux_env() for _ in range(aux)], seed=seed, **{**TINY, **kwargs})
    model = make_sac(make_env(n_envs, seed), seed=seed)
    model.learn(total_timesteps=steps, callback=callback)
    return model, callback


def world_model_state(callback: GatedWorldModelCallback) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in callback.world_model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


# ------------------------------------------------------------------------------------- n_envs


@pytest.mark.parametrize("n_envs", [1, 2])
def test_every_real_transition_reaches_the_primary_buffer_as_sb3_stores_it(n_envs: int) -> None:
    model, callback = train(n_envs, 200)
    steps = 200 // n_envs
    assert callback.real_steps == steps
    assert len(callback.primary_buffer) == 200
    assert callback.n_envs == n_envs
    rb = model.replay_buffer
    assert rb.size() == steps  # no auxiliary rows: SAC's buffer holds exactly the real transitions
    state = callback.primary_buffer.state_dict()
    rows = 200
    expected = {
        "obs": rb.observations[:steps].reshape(rows, -1),
        "next_obs": rb.next_observations[:steps].reshape(rows, -1),
        "reward": rb.rewards[:steps].reshape(rows),
    }
    for name, want in expected.items():
        assert torch.equal(state[name], torch.as_tensor(want)), name
    low, high = model.action_space.low, model.action_space.high
    actions = low + (rb.actions[:steps].reshape(rows, -1) + 1) / 2 * (high - low)
    torch.testing.assert_close(state["action"], torch.as_tensor(actions, dtype=torch.float32))
    # Episodes of EPISODE steps end by truncation: the successor is the terminal observation (not the
    # next episode's first), and the primary buffer's done flag (termination) stays False.
    ends = rb.timeouts[:steps].reshape(rows).astype(bool)
    assert ends.sum() == (steps // EPISODE) * n_envs
    assert not state["done"].any()
    obs = rb.observations[:steps]
    next_obs = rb.next_observations[:steps]
    continuing = ~rb.timeouts[: steps - 1].astype(bool)
    assert np.array_equal(next_obs[: steps - 1][continuing], obs[1:][continuing])
    assert not np.any(np.all(next_obs[: steps - 1][~continuing] == obs[1:][~continuing], axis=-1))


def test_under_vec_normalize_the_primary_buffer_holds_the_unnormalised_transitions() -> None:
    env = VecNormalize(make_env(2))
    callback = GatedWorldModelCallback([make_aux_env()], **TINY)
    model = make_sac(env)
    model.learn(total_timesteps=120, callback=callback)
    rb, steps = model.replay_buffer, 60 + 30  # 60 real rows and 30 pairs of auxiliary rows
    assert rb.size() == steps
    state = callback.primary_buffer.state_dict()
    assert len(callback.primary_buffer) == 120
    for field, stored in (("obs", rb.observations), ("next_obs", rb.next_observations)):
        sb3_rows = {tuple(row) for row in stored[:steps].reshape(-1, 3).tolist()}
        assert {tuple(row) for row in state[field].tolist()} <= sb3_rows, field
    assert float(state["obs"][:, :2].abs().max()) <= 1.0  # cos and sin: not normalised


def test_auxiliary_rows_reach_a_two_env_buffer_in_pairs() -> None:
    model, callback = train(2, 201, aux=1)  # 101 environment steps, one auxiliary row each
    assert callback.real_steps == 101
    assert len(callback.primary_buffer) == 202
    assert callback.aux_added == 100
    assert callback._pending_aux is not None and len(callback._pending_aux) == 1
    assert model.replay_buffer.size() == 101 + 50
    actions = model.replay_buffer.actions[: model.replay_buffer.size()]
    assert np.all(np.abs(actions) <= 1.0)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_recorded_run_replays_to_the_live_world_model(n_envs: int) -> None:
    _, callback = train(n_envs, 200, aux=3, record=True)
    primary, aux = callback.recording()
    assert primary["n_envs"] == n_envs
    assert len(primary["obs"]) == 200
    assert [len(a["obs"]) for a in aux] == [200 // n_envs] * 3
    replayed = replay_world_model(primary, aux)
    assert_same_state(world_model_state(callback), {k: v.detach() for k, v in replayed.state_dict().items()})
    without_aux = replay_world_model(primary, [])
    assert_same_state(
        world_model_state(callback), {k: v.detach() for k, v in without_aux.state_dict().items()}
    )


# ------------------------------------------------------------------------------------- save/load


def test_save_and_load_keep_the_gate_and_training_continues(tmp_path: Path) -> None:
    model, callback = train(1, 300, aux=1)
    trained = world_model_state(callback)
    model.save(tmp_path / "sac.zip")
    model.save_replay_buffer(tmp_path / "sac_buffer.pkl")
    callback.save(tmp_path / "world_model.pt")

    env = make_env(1)
    agent = SAC.load(tmp_path / "sac.zip", env=env)
    agent.load_replay_buffer(tmp_path / "sac_buffer.pkl")
    with pytest.raises(ValueError, match=r"already taken 300 steps .* GatedWorldModelCallback\.load"):
        agent.learn(total_timesteps=10, callback=GatedWorldModelCallback(**TINY), reset_num_timesteps=False)

    loaded = GatedWorldModelCallback.load(tmp_path / "world_model.pt", [make_aux_env()])
    assert_same_state(trained, world_model_state(loaded))
    assert loaded.real_steps == 300
    assert len(loaded.primary_buffer) == 300
    assert loaded.config == callback.config
    torch.testing.assert_close(loaded.wm_optimizer.state_dict(), callback.wm_optimizer.state_dict())
    buffers = loaded.primary_buffer.state_dict(), callback.primary_buffer.state_dict()
    assert buffers[0].keys() == buffers[1].keys()
    for key, value in buffers[0].items():
        same = (
            torch.equal(value, buffers[1][key])
            if isinstance(value, torch.Tensor)
            else value == buffers[1][key]
        )
        assert same, key

    agent.learn(total_timesteps=200, callback=loaded, reset_num_timesteps=False)
    assert loaded.real_steps == 500
    assert len(loaded.primary_buffer) == 500
    assert any(not torch.equal(trained[k], v) for k, v in world_model_state(loaded).items())

    optimizer = loaded.wm_optimizer
    assert isinstance(optimizer, av.GatedOptimizer)
    assert sorted(optimizer.protected_names) == sorted(n for n, _ in loaded.world_model.named_parameters())
    before = world_model_state(loaded)
    obs = av.aux(torch.randn(8, 3), source="aux-gravity")
    action = av.aux(torch.randn(8, 1), source="aux-gravity")
    optimizer.zero_grad()
    loaded.world_model(obs, action).pow(2).mean().backward()
    with pytest.raises(av.IsolationViolation, match="aux:aux-gravity"):
        optimizer.step()
    assert_same_state(before, world_model_state(loaded))


def test_load_refuses_an_optimizer_state_carrying_auxiliary_data(tmp_path: Path) -> None:
    _, callback = train(1, 100)
    callback.save(tmp_path / "world_model.pt")
    state = load_checkpoint(tmp_path / "world_model.pt")
    moments = state["optimizer"]["state"][0]
    moments["exp_avg"] = av.aux(torch.zeros_like(moments["exp_avg"]), source="aux-0")
    save_checkpoint(tmp_path / "tampered.pt", state)
    with pytest.raises(av.IsolationViolation, match="aux:aux-0"):
        GatedWorldModelCallback.load(tmp_path / "tampered.pt")


def test_load_names_the_problem_with_a_file_or_a_model_it_cannot_use(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "other.pt", {"weights": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"other\.pt is not a GatedWorldModelCallback state"):
        GatedWorldModelCallback.load(tmp_path / "other.pt")
    _, callback = train(1, 100)
    callback.save(tmp_path / "world_model.pt")

    def linear(obs_dim: int, action_dim: int, generator: torch.Generator) -> nn.Module:
        return LinearModel(obs_dim, action_dim)

    with pytest.raises(ValueError, match="pass world_model= as when saved"):
        GatedWorldModelCallback.load(tmp_path / "world_model.pt", world_model=linear)
    with pytest.raises(RuntimeError, match="nothing to save"):
        GatedWorldModelCallback().save(tmp_path / "empty.pt")


# ------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_world_model_and_another_seed_another() -> None:
    runs = [world_model_state(train(2, 200, aux=1, seed=seed)[1]) for seed in (3, 3, 4)]
    assert_same_state(runs[0], runs[1])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_auxiliary_policy_sampling_leaves_the_global_torch_stream_alone() -> None:
    _, callback = train(1, 60, aux=2)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    callback.auxiliary_transitions()
    assert torch.equal(torch.rand(4), expected)


# ------------------------------------------------------------------------------------- user models


class LinearModel(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, out: int | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(obs_dim + action_dim, obs_dim if out is None else out)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(torch.cat([obs, action], dim=-1))
        return out


def test_a_user_supplied_world_model_is_built_from_the_callbacks_generator_and_gated() -> None:
    calls: list[tuple[int, int]] = []

    def factory(obs_dim: int, action_dim: int, generator: torch.Generator) -> nn.Module:
        calls.append((obs_dim, action_dim))
        model = LinearModel(obs_dim, action_dim)
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.1, 0.1, generator=generator)
        return model

    _, callback = train(1, 100, world_model=factory)
    assert calls == [(3, 1)]
    assert isinstance(callback.world_model, LinearModel)
    assert sorted(callback.wm_optimizer.protected_names) == ["linear.bias", "linear.weight"]
    assert callback.world_model_loss == callback.world_model_loss  # trained: not NaN


def test_a_world_model_of_the_wrong_output_shape_is_named() -> None:
    def wrong(obs_dim: int, action_dim: int, generator: torch.Generator) -> nn.Module:
        return LinearModel(obs_dim, action_dim, out=1)

    with pytest.raises(ValueError, match=r"shaped like obs \(16, 3\), got \(16, 1\)"):
        train(1, 60, world_model=wrong)


# ------------------------------------------------------------------------------------- refusals


def test_refuses_agents_and_arguments_it_cannot_serve() -> None:
    agent = PPO("MlpPolicy", ENV_ID, n_steps=64, batch_size=64, seed=0)
    with pytest.raises(TypeError, match="needs an off-policy agent with a ReplayBuffer"):
        agent.learn(total_timesteps=64, callback=GatedWorldModelCallback())
    compact = make_sac(
        make_env(1), optimize_memory_usage=True, replay_buffer_kwargs={"handle_timeout_termination": False}
    )
    with pytest.raises(ValueError, match="optimize_memory_usage=False"):
        compact.learn(total_timesteps=10, callback=GatedWorldModelCallback())
    with pytest.raises(ValueError, match="batch_size <= buffer_size"):
        GatedWorldModelCallback(batch_size=10, buffer_size=5)
    with pytest.raises(ValueError, match="learning_rate must be a positive number"):
        GatedWorldModelCallback(learning_rate=float("nan"))
    with pytest.raises(TypeError):
        GatedWorldModelCallback(train_freq="often")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same number of rows"):
        Transitions(
            np.zeros((2, 3)),
            np.zeros((2, 1)),
            np.zeros(3),
            np.zeros((2, 3)),
            np.zeros(2, bool),
            np.zeros(2, bool),
        )


def test_a_discrete_action_agent_is_refused_with_the_fix_for_actions() -> None:
    agent = DQN("MlpPolicy", "CartPole-v1", learning_starts=10, buffer_size=100, seed=0)
    with pytest.raises(TypeError) as refused:
        agent.learn(total_timesteps=10, callback=GatedWorldModelCallback(**TINY))
    message = str(refused.value)
    assert message.startswith("GatedWorldModelCallback needs a Box action space, got Discrete(2); ")
    assert "continuous-action off-policy agents (SAC, TD3, DDPG)" in message and "DQN" in message
    assert "FlattenObservation" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("aux_id", "spaces"),
    [
        (
            "MountainCarContinuous-v0",
            r"observation space Box\(.*\(2,\), float32\) and action space Box\(-1\.0, 1\.0",
        ),
        ("CartPole-v1", r"observation space Box\(.*\(4,\), float32\) and action space Discrete\(2\)"),
    ],
)
def test_auxiliary_environments_with_other_spaces_are_refused_at_set_up(aux_id: str, spaces: str) -> None:
    callback = GatedWorldModelCallback([gym.make(aux_id)], **TINY)
    model = make_sac(make_env(1))
    with pytest.raises(ValueError, match=r"^aux_envs\[0\] ") as refused:
        model.learn(total_timesteps=10, callback=callback)
    message = str(refused.value)
    assert message.startswith(f"aux_envs[0] ('{aux_id}') has ") and "\n" not in message
    assert re.search(spaces, message), message
    assert re.search(
        r"but the agent has Box\(.*\(3,\), float32\) and Box\(-2\.0, 2\.0, \(1,\), float32\)", message
    )
    assert model.num_timesteps == 0 and not callback.built


class _FixedAux(GatedWorldModelCallback):
    """Returns ``self.rows`` (two rows of the given widths, values ``fill``) from the hook."""

    rows: tuple[int, int, float] = (3, 1, 0.0)

    def auxiliary_transitions(self) -> list[Transitions]:
        obs_dim, action_dim, fill = self.rows
        obs = np.full((2, obs_dim), fill, np.float32)
        return [
            Transitions(
                obs,
                np.zeros((2, action_dim), np.float32),
                np.zeros(2, np.float32),
                obs,
                np.zeros(2, bool),
                np.zeros(2, bool),
            )
        ]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            (4, 1, 0.0),
            r"_FixedAux\.auxiliary_transitions\(\) returned obs of shape \(2, 4\) for auxiliary source 0, "
            r"expected \(2, 3\)",
        ),
        (
            (3, 2, 0.0),
            r"_FixedAux\.auxiliary_transitions\(\) returned actions of shape \(2, 2\) for auxiliary "
            r"source 0, expected \(2, 1\)",
        ),
    ],
)
def test_hook_rows_of_the_wrong_width_are_refused_before_storing(
    rows: tuple[int, int, float], match: str
) -> None:
    callback = _FixedAux(**TINY)
    callback.rows = rows
    model = make_sac(make_env(1))
    with pytest.raises(ValueError, match=match) as refused:
        model.learn(total_timesteps=10, callback=callback)
    assert "\n" not in str(refused.value)
    assert callback.aux_added == 0 and callback._pending_aux is None
    assert model.replay_buffer.pos == 0 and len(callback.primary_buffer) == 0


class _NaNObsAt(gym.Wrapper[Any, Any, Any, Any]):
    """Its ``at``-th step returns a NaN observation."""

    def __init__(self, env: gym.Env[Any, Any], at: int) -> None:
        super().__init__(env)
        self.at, self.steps = at, 0

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        return (obs * np.nan if self.steps == self.at else obs), reward, terminated, truncated, info


@pytest.mark.parametrize("fill", [float("nan"), float("inf")])
def test_non_finite_hook_rows_are_dropped_counted_and_warned(fill: float) -> None:
    """Non-finite auxiliary rows never reach the agent's buffer and never stop the world model's
    training (a refusal would let auxiliary values decide whether it trains)."""
    callback = _FixedAux(**TINY)
    callback.rows = (3, 1, fill)
    model = make_sac(make_env(1))
    with pytest.warns(
        UserWarning,
        match=r"dropped 2 auxiliary transition\(s\) of source 0 holding NaN/Inf at environment step 1",
    ):
        model.learn(total_timesteps=10, callback=callback)
    assert callback.dropped_aux_rows == 20 and callback.aux_added == 0 and callback.real_steps == 10
    assert model.replay_buffer.pos == 10 and np.isfinite(model.replay_buffer.observations[:10]).all()


def test_non_finite_rows_of_an_auxiliary_environment_are_dropped_naming_it_and_the_step() -> None:
    callback = GatedWorldModelCallback([make_aux_env(), _NaNObsAt(make_aux_env(), at=5)], **TINY)
    model = make_sac(make_env(1))
    with pytest.warns(UserWarning, match=r"of source 1 holding NaN/Inf at environment step 5"):
        model.learn(total_timesteps=20, callback=callback)
    assert callback.real_steps == 20 and callback.dropped_aux_rows == 1
    assert callback.aux_added == 2 * 20 - 1
    stored = model.replay_buffer.observations[: model.replay_buffer.pos]
    assert (
        np.isfinite(stored).all()
        and np.isfinite(model.replay_buffer.next_observations[: model.replay_buffer.pos]).all()
    )


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _, callback = train(1, 60, aux=1)
    path = tmp_path_factory.mktemp("saved") / "world_model.pt"
    callback.save(path)
    return load_checkpoint(path)


@pytest.mark.parametrize(
    ("field", "damage", "problem"),
    [
        ("real_steps", "abc", r"is 'abc', not a non-negative int"),
        ("aux_added", -1, r"is -1, not a non-negative int"),
        ("world_model_loss", "low", r"is 'low', not a number"),
        ("config", {"train_freq": 1}, r"must be a dict with the keys"),
        (
            "config",
            "batch_size",
            r"is invalid \(need 1 <= batch_size <= buffer_size, got batch_size=1000000000",
        ),
        ("config", "hidden", r"holds hidden='64', not an int"),
        (
            "aux_policy_rng",
            torch.zeros(3, dtype=torch.uint8),
            r"is not a torch CPU random state torch accepts \(Expected",
        ),
        ("aux_policy_rng", torch.zeros(3), r"not a 1-D uint8 tensor"),
        ("obs_shape", [3, 0], r"is \[3, 0\], not a list of positive ints"),
        ("action_low", torch.tensor([float("nan")]), r"not a non-empty 1-D finite float32 tensor"),
        ("pending_aux", {"obs": np.zeros((1, 3))}, r"is invalid \(transitions need the fields"),
        ("primary_buffer", {}, r"is invalid \("),
    ],
)
def test_load_refuses_a_damaged_field_naming_the_file_and_the_field(
    tmp_path: Path, saved_state: dict[str, Any], field: str, damage: Any, problem: str
) -> None:
    state = dict(saved_state)
    if field == "config" and damage == "batch_size":
        state["config"] = {**state["config"], "batch_size": 10**9}
    elif field == "config" and damage == "hidden":
        state["config"] = {**state["config"], "hidden": "64"}
    else:
        state[field] = damage
    path = tmp_path / "damaged.pt"
    save_checkpoint(path, state)
    aux_env = make_aux_env()
    rng_before = torch.get_rng_state()
    with pytest.raises(ValueError, match=re.escape(str(path))) as refused:
        GatedWorldModelCallback.load(path, [aux_env])
    message = str(refused.value)
    assert message.startswith(f"{path}: field '{field}' ") and "\n" not in message
    assert re.search(problem, message), message
    assert torch.equal(torch.get_rng_state(), rng_before)
    # the undamaged state still loads
    save_checkpoint(path, saved_state)
    assert GatedWorldModelCallback.load(path, [aux_env]).real_steps == 60


# ------------------------------------------------------------------------------------- the extra


def test_importing_without_stable_baselines3_names_the_extra() -> None:
    script = (
        "import sys\n"
        "sys.modules['stable_baselines3'] = None\n"
        "import amal_verified.integrations\n"
        "import amal_verified.integrations.sb3\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        "ImportError: amal_verified.integrations.sb3 needs Stable-Baselines3, which is not installed: "
        "pip install 'amal_verified[sb3]'"
    )
    assert "During handling" not in done.stderr
