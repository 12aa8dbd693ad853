"""``amal train``'s configuration: the field list in --help, --config files (a run's own config.json
too), --set and flags over the file, and bad values failing fast, in one line, before torch loads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from amal_verified.cli import main
from amal_verified.run.config import TrainConfig, field_descriptions

# A run of a few seconds (training fields only; tests/configs/tiny_run.json).
TINY: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "configs" / "tiny_run.json").read_text()
)


def _printed_config(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["train", "--print-config", *argv]) == 0
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    return printed


def _error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["train", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("amal train: error: "), captured.err
    return lines[0].removeprefix("amal train: error: ")


def test_help_lists_every_field_with_its_default_and_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for name, (accepts, default, meaning) in field_descriptions().items():
        assert f"  {name} = {json.dumps(default)}\n" in text, name
        assert f"{meaning} ({accepts})" in text, name
    assert "--config FILE" in text and "--set KEY=VALUE" in text


@pytest.mark.slow
def test_help_from_a_real_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "amal_verified.cli", "train", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "  ensemble_size = 20\n      K: world-model ensemble members (a positive integer)" in done.stdout
    assert all(f"  {f.name} = " in done.stdout for f in dataclasses.fields(TrainConfig))


def test_a_bad_set_value_fails_fast_in_one_line_without_torch(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from amal_verified.cli import main\n"
        "start = time.process_time()\n"
        f"code = main(['train', '--out', {str(tmp_path / 'run')!r}, '--set', 'ensemble_size=five'])\n"
        "print(code, time.process_time() - start, 'torch' in sys.modules, 'gymnasium' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    exit_code, seconds, torch_loaded, gymnasium_loaded = done.stdout.split()
    assert (exit_code, torch_loaded, gymnasium_loaded) == ("2", "False", "False")
    assert float(seconds) < 0.5  # CPU seconds: the check does not wait for a busy machine
    assert done.stderr == (
        "amal train: error: --set ensemble_size=five: ensemble_size must be a positive integer, got 'five'\n"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "gamma=1.5"], "--set gamma=1.5: gamma must be a number in [0, 1], got '1.5'"),
        (["--set", "ensembel_size=3"], "did you mean 'ensemble_size'?"),
        (["--set", "noequals"], None),  # argparse's own usage error (exit 2 through SystemExit)
        (["--set", "num_aux_agents=20", "--set", "cem_population=10"], "num_aux_agents (20) cannot exceed"),
        (["--seed", "3", "--set", "seed=4"], "--seed and --set seed disagree (3, 4): give one"),
        (["--steps", "0"], "total_steps must be a positive integer, got 0"),
    ],
)
def test_bad_configurations_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str | None
) -> None:
    full = ["--out", str(tmp_path / "run"), *argv]
    if message is None:
        with pytest.raises(SystemExit) as exit_:
            main(["train", *full])
        assert exit_.value.code == 2
        assert "--set expects KEY=VALUE" in capsys.readouterr().err
        return
    assert message in _error_line(capsys, *full)
    assert not (tmp_path / "run").exists()


def test_the_file_then_flags_and_set(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"seed": 4, "ensemble_size": 5, "env_id": "Pendulum-v1", "total_steps": 900}))
    assert _printed_config(capsys, "--config", str(path)) == dataclasses.asdict(
        TrainConfig(seed=4, ensemble_size=5, env_id="Pendulum-v1", total_steps=900)
    )
    printed = _printed_config(
        capsys, "--config", str(path), "--seed", "7", "--set", "ensemble_size=3", "--env", "CartPole-v1"
    )
    assert (printed["seed"], printed["ensemble_size"], printed["env_id"], printed["total_steps"]) == (
        7,
        3,
        "CartPole-v1",
        900,
    )
    # What --print-config writes is a configuration file.
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(printed))
    assert _printed_config(capsys, "--config", str(saved)) == printed
    assert _printed_config(capsys, "--set", "policy_tau=none", "--unsafe-mix")["unsafe_mix"] is True


def test_resume_takes_no_configuration(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    message = _error_line(
        capsys,
        "--resume",
        "--out",
        str(tmp_path),
        "--set",
        "seed=1",
        "--set",
        "aux_backend=ray",
        "--seed",
        "2",
    )
    assert message == (
        "--resume continues the run as it was configured; drop --set seed, --seed (only --steps may change, "
        "to extend the run, and --set of the execution fields aux_backend, ray_agents_per_actor, "
        "ray_timeout, ray_restarts)"
    )
    message = _error_line(capsys, "--resume", "--out", str(tmp_path), "--set", "aux_backend=spark")
    assert message == "--set aux_backend=spark: aux_backend must be 'local' or 'ray', got 'spark'"


def test_out_is_required_to_train(capsys: pytest.CaptureFixture[str]) -> None:
    assert _error_line(capsys).startswith("--out DIRECTORY is required")


@pytest.mark.slow
def test_a_runs_config_json_configures_the_same_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(TINY))
    first, second = tmp_path / "first", tmp_path / "second"
    argv = ["--config", str(tiny), "--seed", "3", "--set", "aux_seed=5", "--out", str(first), "--no-progress"]
    assert main(["train", *argv]) == 0
    capsys.readouterr()
    document = first / "config.json"
    assert json.loads(document.read_text())["train"]["aux_seed"] == 5
    assert _printed_config(capsys, "--config", str(document)) == dataclasses.asdict(
        TrainConfig(**TINY, seed=3, aux_seed=5)
    )
    assert main(["train", "--config", str(document), "--out", str(second), "--no-progress"]) == 0
    capsys.readouterr()
    assert (second / "config.json").read_bytes() == document.read_bytes()
    assert main(["certify", str(second), "--quiet"]) == 0


def test_the_readmes_one_minute_configuration_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    smoke = Path(__file__).resolve().parents[2] / "examples" / "configs" / "smoke.json"
    assert main(["train", "--config", str(smoke), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {**printed, **json.loads(smoke.read_text())}
    assert TrainConfig.from_json(printed).total_steps == 1500


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["train", "--seed", "3", "--seed", "4"],
            "argument --seed: given more than once (--seed 3, --seed 4)",
        ),
        (
            ["train", "--steps", "10", "--print-config", "--steps", "20"],
            "argument --steps: given more than once",
        ),
        (
            ["evaluate", "run", "--episodes", "2", "--episodes", "3"],
            "argument --episodes: given more than once",
        ),
        (["audit", "m:f", "--seed", "1", "--seed", "1"], "argument --seed: given more than once (--seed 1"),
        (
            ["certify", "run", "--certificate", "a.json", "--certificate", "b.json"],
            "argument --certificate: given more than once (--certificate a.json, --certificate b.json)",
        ),
    ],
)
def test_a_repeated_option_is_refused_not_silently_overridden(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"amal {argv[0]}: error: {expected}"), last
    assert last.endswith(": give it once"), last
