"""The integrations in examples/integrations/: CleanRL-style PPO and the Stable-Baselines3 example script
(amal_verified.integrations.sb3 itself is tested in tests/integrations/).

Each trains on a tiny budget, its world model passes the differential audit, and the leaky variants
are refused (by the gate) or fail the audit; the CleanRL script's `# amal` lines are the whole
difference from its ungated original, which runs too, and are the diff the README shows.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from amal_verified.audit import assert_noninterference, check_noninterference, compare, snapshot

REPO = Path(__file__).resolve().parents[2]
INTEGRATIONS = REPO / "examples" / "integrations"
CLEANRL = INTEGRATIONS / "cleanrl_ppo_world_model.py"
SB3 = INTEGRATIONS / "sb3_world_model_callback.py"
TINY_PPO = ("--total-timesteps", "512", "--num-envs", "2", "--num-steps", "128", "--aux-num-envs", "1")
TINY_SAC = ("--total-timesteps", "300", "--learning-starts", "100", "--wm-train-freq", "50")
Inputs = tuple[dict[str, Any], list[dict[str, torch.Tensor]]]


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=env, timeout=120, check=False
    )


def ungated_source() -> str:
    """The CleanRL script with every line that ends in the `# amal` marker removed."""
    lines = CLEANRL.read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not line.rstrip().endswith("# amal"))


def amal_diff() -> str:
    """The unified diff from the ungated original to the gated script (one line of context)."""
    ungated = ungated_source().splitlines(keepends=True)
    gated = CLEANRL.read_text().splitlines(keepends=True)
    names = ("ungated/cleanrl_ppo_world_model.py", "cleanrl_ppo_world_model.py")
    return "".join(difflib.unified_diff(ungated, gated, *names, n=1))


@pytest.fixture(scope="module")
def cleanrl() -> ModuleType:
    return load(CLEANRL, "_integration_cleanrl")


@pytest.fixture(scope="module")
def cleanrl_inputs(cleanrl: ModuleType) -> Inputs:
    """The CleanRL target's example inputs (the audit copies them before every run)."""
    inputs: Inputs = cleanrl.amal_example_inputs()
    return inputs


@pytest.fixture(scope="module")
def ungated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ungated") / "cleanrl_ppo_world_model.py"
    path.write_text(ungated_source())
    return path


@pytest.fixture(scope="module")
def sb3() -> ModuleType:
    return load(SB3, "_integration_sb3")


@pytest.fixture
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------ CleanRL


def test_cleanrl_amal_diff_is_at_most_seven_added_lines_and_is_the_readmes_diff() -> None:
    diff = amal_diff()
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert 1 <= len(changed) <= 7
    assert all(line.startswith("+") and line.endswith("# amal") for line in changed)
    readme = (INTEGRATIONS / "README.md").read_text()
    blocks = re.findall(r"```diff\n(.*?)```", readme, flags=re.DOTALL)
    assert blocks == [diff], "examples/integrations/README.md must show the diff this test computes"
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
    top = " ".join((REPO / "README.md").read_text().split())
    assert f"{words[len(changed)]} added lines" in top, "the top-level README counts the same added lines"
    assert "(examples/integrations/)" in top


@pytest.mark.slow
def test_cleanrl_gated_script_trains_and_refuses_the_leak() -> None:
    clean = run(CLEANRL, *TINY_PPO)
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.count("world_model_loss=") == 2
    leak = run(CLEANRL, *TINY_PPO, "--leak")
    assert leak.returncode == 1
    assert "IsolationViolation: refused GatedOptimizer(Adam).step(): data from aux:aux-gravity" in leak.stderr
    assert "Nothing was changed." in leak.stderr


@pytest.mark.slow
def test_cleanrl_ungated_original_runs_and_trains_silently_on_the_leak(ungated: Path) -> None:
    for extra in ((), ("--leak",)):
        out = run(ungated, *TINY_PPO, *extra)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("world_model_loss=") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-minibatches", "3"], "must be divisible by --num-minibatches"),
        (["--total-timesteps", "100"], "is less than one rollout"),
        (["--num-envs", "0"], "--num-envs must be at least 1"),
        (["--aux-num-envs", "-1"], "--aux-num-envs must be 0 or more"),
        (["--seed", "-1"], "--seed must be 0 or more"),
        (["--wm-learning-rate", "nan"], "--wm-learning-rate must be a positive number"),
        (["--gamma", "1.5"], "--gamma and --gae-lambda must lie in [0, 1]"),
        (["--anneal-lr", "maybe"], "expected true or false, got 'maybe'"),
        (["--env-id", "Acrobot-v1"], "needs discrete actions and a `gravity` attribute"),
    ],
)
def test_cleanrl_rejects_bad_arguments(
    cleanrl: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cleanrl.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cleanrl_replay_reproduces_the_live_world_model(cleanrl: ModuleType, one_thread: None) -> None:
    world_model, recorded = cleanrl.run(cleanrl.parse_args(cleanrl.EXAMPLE_ARGV), log=False)
    primary, aux = cleanrl.audit_inputs(cleanrl.EXAMPLE_ARGV, recorded)
    assert len(primary["batches"]) == len(aux) == 2
    replayed = cleanrl.train_world_model(primary, aux)
    assert compare(snapshot(world_model), snapshot(replayed)) == ()


def test_cleanrl_auxiliary_data_reaches_the_agent_but_not_the_world_model(
    cleanrl: ModuleType, cleanrl_inputs: Inputs, one_thread: None
) -> None:
    primary, aux = cleanrl_inputs
    args = cleanrl.parse_args(primary["argv"])
    learned = []
    for aux_batch in (aux[0], None):
        agent, optimizer, world_model, wm_optimizer, rngs = cleanrl.make_learners(args, 4, 2)
        batch = primary["batches"][0]
        cleanrl.update(agent, optimizer, world_model, wm_optimizer, batch, aux_batch, args, rngs)
        learned.append((snapshot(agent), snapshot(world_model)))
    (agent_with, wm_with), (agent_without, wm_without) = learned
    assert {d.name for d in compare(agent_with, agent_without)} >= {"param:critic.0.weight"}
    assert compare(wm_with, wm_without) == ()


@pytest.mark.slow
def test_cleanrl_world_model_passes_the_audit(cleanrl: ModuleType, cleanrl_inputs: Inputs) -> None:
    primary, aux = cleanrl_inputs
    assert_noninterference(cleanrl.train_world_model, primary, aux, max_examples=25)


def test_cleanrl_leak_is_refused_gated_and_fails_the_audit_ungated(
    cleanrl: ModuleType, cleanrl_inputs: Inputs, ungated: Path
) -> None:
    primary, aux = cleanrl_inputs
    leaky = {**primary, "argv": [*primary["argv"], "--leak"]}
    gated = check_noninterference(cleanrl.train_world_model, leaky, aux, max_examples=25)
    assert not gated.ok
    assert "IsolationViolation" in str(gated)
    plain = load(ungated, "_integration_cleanrl_ungated")
    result = check_noninterference(plain.train_world_model, leaky, aux, max_examples=25)
    assert not result.ok
    assert "param:weights.0" in str(result)


# ---------------------------------------------------------------------------------- Stable-Baselines3


@pytest.mark.slow
def test_sb3_callback_trains_beside_sac_and_its_run_passes_the_audit() -> None:
    out = run(SB3, *TINY_SAC, "--wm-gradient-steps", "5", "--audit-examples", "5")
    assert out.returncode == 0, out.stderr
    assert "world model: loss" in out.stdout
    assert "300 real transitions; 300 auxiliary ones to the agent" in out.stdout
    assert "PASSED" in out.stdout


@pytest.mark.slow
def test_sb3_replay_reproduces_the_live_world_model(sb3: ModuleType, one_thread: None) -> None:
    model, callback = sb3.train(sb3.parse_args(sb3.EXAMPLE_ARGV), record=True)
    primary, aux = callback.recording()
    assert len(primary["obs"]) == len(aux[0]["obs"]) == 300
    assert model.replay_buffer.size() == 600  # the agent learns from real and auxiliary transitions
    replayed = sb3.replay_world_model(primary, aux)
    assert compare(snapshot(callback.world_model), snapshot(replayed)) == ()


@pytest.mark.slow
def test_sb3_world_model_passes_the_audit_and_the_leaky_callback_fails_it(sb3: ModuleType) -> None:
    primary, aux = sb3.amal_example_inputs()
    assert_noninterference(sb3.replay_world_model, primary, aux, max_examples=25)
    leaky = check_noninterference(sb3.replay_leaky_world_model, primary, aux, max_examples=25)
    assert not leaky.ok
    assert "param:net.0.weight" in str(leaky)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--wm-batch-size", "0"], "--wm-batch-size must be at least 1"),
        (["--n-envs", "0"], "--n-envs must be at least 1"),
        (["--aux-envs", "-2"], "--aux-envs must be 0 or more"),
        (["--aux-gravity-scale", "inf"], "--aux-gravity-scale must be a positive number"),
        (["--wm-batch-size", "100", "--buffer-size", "50"], "must not exceed --buffer-size"),
    ],
)
def test_sb3_rejects_bad_arguments(
    sb3: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sb3.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_sb3_callback_refuses_an_on_policy_agent(sb3: ModuleType) -> None:
    from stable_baselines3 import PPO

    agent = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0)
    with pytest.raises(TypeError, match="needs an off-policy agent with a ReplayBuffer"):
        agent.learn(total_timesteps=64, callback=sb3.GatedWorldModelCallback())
