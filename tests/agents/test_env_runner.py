"""``amal_verified.agents.env_runner``: every value read from ``env.reset``/``env.step`` is checked
against gymnasium's API, and a wrong one is refused with one line naming the environment, the value
and the fix, before the runner's state changes."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from amal_verified.agents.env_runner import EnvRunner, run_episodes

BAD_STEP = 3  # the step at which the environment returns its bad value


class Scripted(gym.Env[Any, Any]):
    """A deterministic environment whose step ``BAD_STEP`` returns ``bad(result)`` instead of a valid
    5-tuple (or whose reset returns ``bad_reset(result)``)."""

    observation_space = spaces.Box(-10, 10, (3,), np.float32)
    action_space: spaces.Space[Any] = spaces.Discrete(2)

    def __init__(self, bad: Any = None, bad_reset: Any = None) -> None:
        self.bad, self.bad_reset, self.t = bad, bad_reset, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        result: tuple[Any, ...] = (np.zeros(3, np.float32), {})
        return self.bad_reset(result) if self.bad_reset else result

    def step(self, action: int) -> Any:
        self.t += 1
        result: tuple[Any, ...] = (np.full(3, self.t, np.float32), 1.0, False, self.t >= 10, {})
        return self.bad(result) if self.bad and self.t == BAD_STEP else result


def _set(index: int, value: Any) -> Any:
    return lambda r: (*r[:index], value, *r[index + 1 :])


STEP_REFUSALS = [
    (
        "reward None",
        _set(1, None),
        r"step\(\) returned reward = None \(NoneType\); reward must be a real number",
    ),
    ("reward str", _set(1, "1.0"), r"returned reward = '1\.0' \(str\); reward must be a real number"),
    ("reward bool", _set(1, True), r"reward = True \(bool\); reward must be a real number"),
    ("reward array", _set(1, np.ones(2)), r"reward = array\(\[1\., 1\.\]\) \(numpy\.ndarray\)"),
    ("terminated None", _set(2, None), r"terminated = None \(NoneType\); terminated must be a bool"),
    (
        "terminated vector",
        _set(2, np.zeros(2, bool)),
        r"terminated = array\(\[False, False\]\) \(numpy\.ndarray\); terminated must be a bool \(one",
    ),
    ("truncated float", _set(3, 0.5), r"truncated = 0\.5 \(float\); truncated must be a bool"),
    ("truncated 2", _set(3, 2), r"truncated = 2 \(int\); truncated must be a bool"),
    ("info None", _set(4, None), r"step\(\) returned info = None \(NoneType\); info must be a dict"),
    (
        "obs None",
        _set(0, None),
        r"step\(\) returned the observation = None \(NoneType\); the observation must",
    ),
    (
        "old gym 4-tuple",
        lambda r: (r[0], r[1], False, {}),
        r"step\(\) returned 4 values \(obs, reward, done, info\), the old gym API; return \(obs, reward, "
        r"terminated, truncated, info\)",
    ),
    ("3-tuple", lambda r: r[:3], r"step\(\) returned .*, not the 5-tuple \(obs, reward, terminated"),
    ("not a tuple", lambda r: list(r), r"step\(\) returned .* \(list\), not the 5-tuple"),
]


@pytest.mark.parametrize(("name", "bad", "match"), STEP_REFUSALS, ids=[c[0] for c in STEP_REFUSALS])
def test_a_bad_step_result_is_refused_with_one_line_and_nothing_changes(
    name: str, bad: Any, match: str
) -> None:
    runner = EnvRunner(Scripted(bad), np.random.default_rng(0))
    for _ in range(BAD_STEP - 1):
        runner.step(0)
    before = runner.state_dict()
    with pytest.raises(ValueError, match=match) as refused:
        runner.step(1)
    message = str(refused.value)
    assert message.startswith("environment Scripted: step() returned ") and "\n" not in message
    assert message.endswith("fix the environment's step()") or "gymnasium" in message
    after = runner.state_dict()
    assert (
        after["actions"].shape == before["actions"].shape
        and runner.episode_return == before["episode_return"]
    )
    assert np.array_equal(after["obs"], before["obs"])


def _scripted_none_reward() -> Scripted:
    return Scripted(_set(1, None))


def _scripted_old_step_api() -> Scripted:
    return Scripted(lambda r: (r[0], r[1], False, {}))


@contextlib.contextmanager
def _registered_runner(env_id: str, entry_point: Callable[[], gym.Env[Any, Any]]) -> Iterator[EnvRunner]:
    """A runner on ``gym.make(env_id)`` (gymnasium's wrappers included) just before ``BAD_STEP``."""
    gym.register(env_id, entry_point=entry_point, max_episode_steps=50)
    try:
        runner = EnvRunner(gym.make(env_id, disable_env_checker=True), np.random.default_rng(0))
        for _ in range(BAD_STEP - 1):
            runner.step(0)
        yield runner
    finally:
        del gym.registry[env_id]


def test_the_environment_is_named_by_its_registered_id() -> None:
    with (
        _registered_runner("ScriptedNoneReward-v0", _scripted_none_reward) as runner,
        pytest.raises(
            ValueError, match=r"^environment 'ScriptedNoneReward-v0': step\(\) returned reward = None"
        ),
    ):
        runner.step(0)


class UnpacksBadly(Scripted):
    def step(self, action: int) -> Any:
        obs, reward, terminated, truncated, info = super().step(action)[:4]
        return obs, reward, terminated, truncated, info


def test_an_old_gym_step_inside_gymnasiums_wrappers_is_named_as_such() -> None:
    """``gym.make`` (what ``amal train`` uses) puts ``TimeLimit`` around the environment, which fails
    to unpack an old 4-tuple before the runner sees it; the runner still names the old API."""
    with (
        _registered_runner("ScriptedOldStepApi-v0", _scripted_old_step_api) as runner,
        pytest.raises(
            ValueError,
            match=r"^environment 'ScriptedOldStepApi-v0': step\(\) returned 4 values \(obs, reward, done, "
            r"info\), the old gym API; return \(obs, reward, terminated, truncated, info\)",
        ),
    ):
        runner.step(0)
    # The same unpacking error raised by the environment's own code is the environment's.
    runner = EnvRunner(gym.wrappers.TimeLimit(UnpacksBadly(), 50), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"^not enough values to unpack \(expected 5, got 4\)$"):
        runner.step(0)


@pytest.mark.parametrize(
    ("bad_reset", "match"),
    [
        (lambda r: r[0], r"reset\(\) returned array\(.*\) \(numpy\.ndarray\), not the pair \(obs, info\)"),
        (lambda r: (r[0], None), r"reset\(\) returned info = None \(NoneType\); info must be a dict"),
        (
            lambda r: ({"a": r[0]}, {}),
            r"reset\(\) returned the observation = \{'a': .*; the observation must be",
        ),
    ],
)
def test_a_bad_reset_result_is_refused_with_one_line(bad_reset: Any, match: str) -> None:
    with pytest.raises(ValueError, match=r"^environment Scripted: " + match) as refused:
        EnvRunner(Scripted(bad_reset=bad_reset), np.random.default_rng(0))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "value",
    [
        _set(1, np.float32(0.5)),
        _set(1, np.int64(2)),
        _set(1, np.array(0.25)),
        _set(1, 3),
        _set(1, float("nan")),  # the right type: the buffers decide about non-finite values
        _set(2, np.bool_(True)),
        _set(2, np.array(False)),
        _set(3, 1),
        _set(3, np.int8(0)),
    ],
)
def test_values_of_gymnasium_types_are_accepted(value: Any) -> None:
    runner = EnvRunner(Scripted(value), np.random.default_rng(0))
    for _ in range(BAD_STEP):
        result = runner.step(0)
    assert isinstance(result.reward, float) and isinstance(result.terminated, bool)


def test_run_episodes_checks_the_environment_too() -> None:
    def act(obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return torch.zeros(obs.shape[0], dtype=torch.int64)

    with pytest.raises(ValueError, match=r"^environment Scripted: step\(\) returned reward = None"):
        run_episodes(act, Scripted(_set(1, None)), np.random.default_rng(0), 1)
    assert run_episodes(act, Scripted(), np.random.default_rng(0), 1).returns == [10.0]


def test_restoring_checks_the_environment() -> None:
    runner = EnvRunner(Scripted(), np.random.default_rng(0))
    for _ in range(BAD_STEP + 1):
        runner.step(0)
    state = runner.state_dict()
    fresh = EnvRunner(Scripted(_set(4, "info")), np.random.default_rng(1))
    with pytest.raises(
        ValueError, match=re.escape("step() returned info = 'info' (str); info must be a dict")
    ):
        fresh.load_state_dict(state)
