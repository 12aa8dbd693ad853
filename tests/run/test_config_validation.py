"""Bad configuration input is refused when the configuration is made (``TrainConfig(...)``,
``amal train --print-config``, ``amal evaluate``'s options), in one line naming the field or option and
what it accepts, with the range the code that uses the value accepts: never later, during training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from amal_verified.agents.cem import CEM
from amal_verified.cli import main
from amal_verified.common.rng_streams import RunStreams
from amal_verified.run.config import SEED_LIMIT, TrainConfig, field_descriptions, read_config_file


def _error_line(capsys: pytest.CaptureFixture[str], command: str, *argv: str) -> str:
    assert main([command, *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"amal {command}: error: "), captured.err
    return lines[0].removeprefix(f"amal {command}: error: ")


def _help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------------------------- cem_elite_fraction


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.5])
def test_an_elite_fraction_outside_0_1_is_refused_by_the_configuration(value: float) -> None:
    with pytest.raises(ValueError, match="cem_elite_fraction") as refused:
        TrainConfig(cem_elite_fraction=value)
    assert str(refused.value) == f"cem_elite_fraction must be a number in (0, 1], got {value!r}"


def test_the_configurations_elite_fractions_are_the_ones_cem_accepts() -> None:
    for value in (1e-9, 0.2, 1, 1.0):
        TrainConfig(cem_elite_fraction=value)
        CEM(2, population=4, elite_fraction=value, generator=torch.Generator())
    with pytest.raises(ValueError, match="elite_fraction must lie in"):
        CEM(2, population=4, elite_fraction=0.0, generator=torch.Generator())


def test_set_elite_fraction_0_fails_at_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(capsys, "train", "--set", "cem_elite_fraction=0", "--print-config")
    assert line == "--set cem_elite_fraction=0: cem_elite_fraction must be a number in (0, 1], got '0'"


def test_help_gives_the_elite_fractions_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert field_descriptions()["cem_elite_fraction"][0] == "a number in (0, 1]"
    assert "fraction of the CEM population kept as elites (a number in (0, 1])" in _help_of(capsys, "train")


# ---------------------------------------------------------------------------------- seeds


@pytest.mark.parametrize("name", ["seed", "aux_seed"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1, "a non-negative integer"),
        (SEED_LIMIT, "a non-negative integer below 2**63"),
        (2**70, "a non-negative integer below 2**63"),
    ],
)
def test_a_seed_outside_0_2_63_is_refused_naming_its_field(name: str, value: int, expected: str) -> None:
    optional = "None or " if name == "aux_seed" else ""
    with pytest.raises(ValueError, match=name) as refused:
        TrainConfig(**{name: value})
    assert str(refused.value) == f"{name} must be {optional}{expected}, got {value}"


@pytest.mark.parametrize("name", ["seed", "aux_seed"])
def test_every_configured_seed_is_one_the_run_streams_accept(name: str) -> None:
    config = TrainConfig(**{name: SEED_LIMIT - 1})
    assert RunStreams(getattr(config, name)).seed == SEED_LIMIT - 1
    with pytest.raises(ValueError, match=r"2\*\*63"):
        RunStreams(SEED_LIMIT)


def test_every_seed_like_field_is_bounded() -> None:
    seeds = [name for name in field_descriptions() if "seed" in name]
    assert seeds == ["seed", "aux_seed"]
    for name in seeds:
        assert field_descriptions()[name][0].endswith("a non-negative integer below 2**63"), name


def test_seed_flags_outside_the_range_fail_at_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(capsys, "train", "--seed", str(SEED_LIMIT), "--print-config")
    assert line == f"seed must be a non-negative integer below 2**63, got {SEED_LIMIT}"
    line = _error_line(capsys, "train", "--set", f"aux_seed={2**70}", "--print-config")
    expected = "aux_seed must be None or a non-negative integer below 2**63"
    assert line == f"--set aux_seed={2**70}: {expected}, got '{2**70}'"


def test_help_gives_the_seeds_range(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help_of(capsys, "train").split())
    assert "run seed: every random stream derives from it (a non-negative integer below 2**63)" in text
    assert (
        "seed of the auxiliary side's random streams; None: seed (None or a non-negative integer below 2**63)"
        in text
    )
    assert (
        "--seed SEED seed: every random stream derives from it (a non-negative integer below 2**63)" in text
    )


# ---------------------------------------------------------------------------------- amal evaluate


def test_evaluate_names_a_negative_seed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _error_line(capsys, "evaluate", str(tmp_path), "--seed", "-1")
    assert line == "--seed must be a non-negative integer, got -1"


def test_evaluate_names_a_non_positive_episode_count(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = _error_line(capsys, "evaluate", str(tmp_path), "--episodes", "0")
    assert line == "--episodes must be a positive integer, got 0"


def test_evaluate_help_gives_the_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help_of(capsys, "evaluate", "RUN").split())
    assert "seed of the evaluation episodes, a non-negative integer" in text
    assert "evaluation episodes, a positive integer" in text


# ---------------------------------------------------------------------------------- duplicate keys


@pytest.mark.parametrize(
    "text",
    [
        '{"total_steps": 300, "total_steps": 400}',
        '{"format": "amal_verified.run.config/1", "train": {"total_steps": 300, "total_steps": 400}}',
    ],
)
def test_a_config_file_giving_a_key_twice_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="total_steps") as refused:
        read_config_file(path)
    assert (
        str(refused.value)
        == f"configuration file {path}: key 'total_steps' is given more than once; keep one"
    )


def test_a_config_file_with_a_duplicate_key_fails_at_print_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"total_steps":300,"total_steps":400}')
    line = _error_line(capsys, "train", "--config", str(path), "--print-config")
    assert line == f"configuration file {path}: key 'total_steps' is given more than once; keep one"


@pytest.mark.parametrize("values", [("1", "2"), ("1", "1")])
def test_set_of_one_field_twice_is_refused(
    capsys: pytest.CaptureFixture[str], values: tuple[str, str]
) -> None:
    first, second = values
    line = _error_line(capsys, "train", "--set", f"seed={first}", "--set", f"seed={second}", "--print-config")
    assert line == f"--set seed is given more than once (seed={first}, seed={second}): give it once"


def test_set_twice_is_refused_on_resume_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = _error_line(
        capsys,
        "train",
        "--resume",
        "--out",
        str(tmp_path),
        "--set",
        "ray_restarts=1",
        "--set",
        "ray_restarts=3",
    )
    assert line == "--set ray_restarts is given more than once (ray_restarts=1, ray_restarts=3): give it once"


def test_set_of_different_fields_still_combines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--set", "seed=1", "--set", "aux_seed=2", "--seed", "1", "--print-config"]) == 0
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert (printed["seed"], printed["aux_seed"]) == (1, 2)
