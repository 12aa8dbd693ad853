"""Custom environments: gymnasium's ``MODULE:ID``, ids registered by an imported package, the TaskInfo
of an arbitrary environment, one-line errors (nearest id, failing modules, unsupported spaces), and a
custom environment trained for a few steps from the command line."""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import pytest

from amal_verified.cli import main
from amal_verified.envs import make_env, task_info

_ENV_SOURCE = '''
import gymnasium as gym
import numpy as np


class Walk(gym.Env):
    """A point moved by its actions; float64 observations."""

    def __init__(self, action_space=None, obs_shape=(3,)):
        self.observation_space = gym.spaces.Box(-10.0, 10.0, obs_shape, np.float64)
        self.action_space = action_space if action_space is not None else gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, self.observation_space.shape)
        return self.x.copy(), {{}}

    def step(self, action):
        self.x = np.clip(self.x + 0.1 * (np.sum(action) - 0.5), -10, 10)
        return self.x.copy(), float(-np.abs(self.x).sum()), False, False, {{}}


class Pair(Walk):
    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({{"a": gym.spaces.Discrete(3)}})


gym.register("{prefix}Walk-v0", entry_point=Walk, max_episode_steps=20, reward_threshold=-1.0)
gym.register(
    "{prefix}WalkBox-v0",
    entry_point=Walk,
    kwargs={{"action_space": gym.spaces.Box(-2.0, 2.0, (2,), np.float32), "obs_shape": (2, 2)}},
)
multi = {{"action_space": gym.spaces.MultiDiscrete([2, 2])}}
gym.register("{prefix}WalkMulti-v0", entry_point=Walk, kwargs=multi)
gym.register("{prefix}Pair-v0", entry_point=Pair)
'''

_COUNTER = itertools.count()


@pytest.fixture
def env_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A fresh importable module registering ``<prefix>Walk-v0`` etc.; yields (module name, prefix)."""
    n = next(_COUNTER)
    name, prefix = f"custom_envs_{n}", f"Custom{n}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(_ENV_SOURCE.format(prefix=prefix)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, prefix
    for env_id in [k for k in gym.registry if k.startswith(prefix)]:
        del gym.registry[env_id]
    sys.modules.pop(name, None)


def test_module_colon_id_imports_the_module_and_describes_the_task(env_module: tuple[str, str]) -> None:
    module, prefix = env_module
    env_id = f"{module}:{prefix}Walk-v0"
    info = task_info(env_id)
    assert info.env_id == env_id  # kept whole: resuming and the auxiliary envs import the module again
    assert (info.obs_dim, info.discrete, info.action_dim) == (3, True, 2)
    assert (info.action_low, info.action_high, info.max_episode_steps) == ((), (), 20)
    assert info.solved_return == -1.0 and info.termination is None and not info.model_rollouts
    env = make_env(env_id)
    obs, _ = env.reset(seed=0)
    assert obs.dtype.name == "float32" and obs.shape == (3,)
    env.close()
    # Once imported, the package's own id works as it is.
    assert task_info(f"{prefix}Walk-v0").obs_dim == 3


def test_box_actions_and_observations_are_flattened(env_module: tuple[str, str]) -> None:
    module, prefix = env_module
    info = task_info(f"{module}:{prefix}WalkBox-v0")
    assert (info.obs_dim, info.discrete, info.action_dim) == (4, False, 2)
    assert (info.action_low, info.action_high) == ((-2.0, -2.0), (2.0, 2.0))
    assert info.max_episode_steps is None and info.solved_return is None


def _one_line_value_error(env_id: str) -> str:
    with pytest.raises(ValueError, match=r".") as err:
        task_info(env_id)
    message = str(err.value)
    assert "\n" not in message and err.value.__cause__ is None
    return message


def test_unsupported_spaces_are_named(env_module: tuple[str, str]) -> None:
    module, prefix = env_module
    assert "has an unsupported action space MultiDiscrete" in _one_line_value_error(
        f"{module}:{prefix}WalkMulti-v0"
    )
    assert "has an unsupported observation space Dict" in _one_line_value_error(f"{module}:{prefix}Pair-v0")


def test_unknown_ids_name_the_nearest_registered_one(env_module: tuple[str, str]) -> None:
    module, prefix = env_module
    assert _one_line_value_error("CartPol-v1").startswith(
        "unknown environment id 'CartPol-v1' (did you mean 'CartPole-v1'?). Supported environment ids: "
    )
    assert _one_line_value_error("cartpole-v1").startswith(
        "unknown environment id 'cartpole-v1' (did you mean 'CartPole-v1'?)"
    )
    assert _one_line_value_error(f"{module}:{prefix}Wlak-v0").startswith(
        f"unknown environment id '{prefix}Wlak-v0': '{module}' does not register it "
        f"(did you mean '{prefix}Walk-v0'?)"
    )


def test_modules_that_cannot_be_imported_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _one_line_value_error("no_such_module_here:X-v0") == (
        "environment id 'no_such_module_here:X-v0': cannot import 'no_such_module_here' (No module named "
        "'no_such_module_here'); install its package or put it on PYTHONPATH"
    )
    (tmp_path / "broken_envs.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _one_line_value_error("broken_envs:X-v0") == (
        "environment id 'broken_envs:X-v0': importing 'broken_envs' raised RuntimeError: no GPU here"
    )
    for malformed in (":X-v0", "mod:", "a:b:c"):
        assert "expected ID or MODULE:ID" in _one_line_value_error(malformed)


def test_the_command_line_names_the_nearest_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--env", "Pendulum-v2", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "amal train: error: unknown environment id 'Pendulum-v2' (did you mean 'Pendulum-v1'?)"
    )


@pytest.mark.slow
def test_a_custom_environment_trains_from_the_command_line(
    env_module: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module, prefix = env_module
    env_id = f"{module}:{prefix}Walk-v0"
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny_run.json"  # a run of a few seconds
    run = tmp_path / "run"
    assert main(["train", "--env", env_id, "--config", str(config), "--out", str(run), "--no-progress"]) == 0
    assert f"trained 40 primary steps in {run}" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["train"]["env_id"] == env_id
    assert main(["certify", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["env_id"] == env_id
