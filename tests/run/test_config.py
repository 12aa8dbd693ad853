"""TrainConfig: typed fields checked by pydantic, one-line errors, the dataclass interface, documents."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

from amal_verified.run.config import (
    EXECUTION_FIELDS,
    RUN_DOCUMENT_FORMAT,
    ModelName,
    OptimizerName,
    TrainConfig,
    document_digest,
    field_descriptions,
    parse_field,
    read_config_file,
)


def _error(**values: Any) -> str:
    with pytest.raises(ValueError, match=r".") as err:
        TrainConfig(**values)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no pydantic traceback
    return message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": True}, "batch_size must be a positive integer, got True"),
        ({"batch_size": "256"}, "batch_size must be a positive integer, got '256'"),
        ({"batch_size": 2.0}, "batch_size must be a positive integer, got 2.0"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
        ({"gamma": 1.5}, "gamma must be a number in [0, 1], got 1.5"),
        ({"wm_lr": float("nan")}, "wm_lr must be a finite positive number, got nan"),
        ({"wm_lr": 0}, "wm_lr must be a finite positive number, got 0"),
        ({"info_weight": float("inf")}, "info_weight must be a finite number >= 0, got inf"),
        ({"cem_std_floor": 0.0}, "cem_std_floor must be a finite positive number, got 0.0"),
        ({"policy_tau": 0.0}, "policy_tau must be None or a number in (0, 1], got 0.0"),
        ({"aux_obs_noise": -0.1}, "aux_obs_noise must be None or a finite number >= 0, got -0.1"),
        ({"aux_seed": -1}, "aux_seed must be None or a non-negative integer, got -1"),
        ({"learning_starts": 0}, "learning_starts must be a positive integer, got 0"),
        ({"eig_estimator": "mc"}, "eig_estimator must be 'pce' or 'nmc', got 'mc'"),
        ({"wm_model": "mlp"}, "wm_model must be 'ensemble' or 'linear-gaussian', got 'mlp'"),
        ({"wm_full_batch": 1}, "wm_full_batch must be true or false, got 1"),
        ({"wm_weight_decay": True}, "wm_weight_decay must be a finite number >= 0, got True"),
        ({"env_id": ""}, "env_id must be a non-empty string, got ''"),
    ],
)
def test_a_bad_value_is_one_line_naming_field_value_and_expectation(
    values: dict[str, Any], message: str
) -> None:
    assert _error(**values) == message


def test_every_problem_is_reported_on_one_line() -> None:
    message = _error(batch_size=0, gamma=2)
    assert message == "batch_size must be a positive integer, got 0; gamma must be a number in [0, 1], got 2"


def test_unknown_keys_name_the_nearest_field() -> None:
    assert _error(ensemble_sise=3) == (
        "unknown configuration keys ['ensemble_sise'] (did you mean 'ensemble_size'?); "
        "amal train --help lists the fields"
    )
    with pytest.raises(ValueError, match=r"unknown configuration keys \['nope'\]; amal train --help"):
        TrainConfig.from_json({"nope": 1})


def test_rules_relating_fields_keep_their_messages() -> None:
    assert _error(num_aux_agents=20, cem_population=10).startswith(
        "num_aux_agents (20) cannot exceed cem_population (10)"
    )
    assert _error(wm_model="linear-gaussian").startswith(
        "ensemble_size must be 1 with wm_model='linear-gaussian' (it is one model, not an ensemble), got 20"
    )


def test_it_stays_a_frozen_dataclass() -> None:
    config = TrainConfig(env_id="Pendulum-v1", seed=3)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert names[:3] == ["env_id", "total_steps", "seed"] and len(names) == 57
    assert dataclasses.asdict(config)["env_id"] == "Pendulum-v1"
    assert dataclasses.replace(config, seed=4).seed == 4
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        dataclasses.replace(config, seed=-4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 5  # type: ignore[misc]
    assert config == TrainConfig(env_id="Pendulum-v1", seed=3)
    assert hash(config) == hash(TrainConfig(env_id="Pendulum-v1", seed=3))
    assert pickle.loads(pickle.dumps(config)) == config


def test_numbers_are_kept_as_written_so_documents_and_digests_round_trip() -> None:
    config = TrainConfig(wm_lr=1, gamma=1, wm_hidden_scale=2)
    document = config.to_json()
    assert (document["wm_lr"], document["gamma"], document["wm_hidden_scale"]) == (1, 1, 2)
    assert json.dumps(document) == json.dumps(
        TrainConfig.from_json(json.loads(json.dumps(document))).to_json()
    )
    run_document = {"format": RUN_DOCUMENT_FORMAT, "train": document, "world_model": {}, "unsafe_mix": False}
    again = {**run_document, "train": TrainConfig.from_json(document).to_json()}
    assert document_digest(again) == document_digest(run_document)


def test_documents_without_the_later_fields_still_load() -> None:
    old = {k: v for k, v in dataclasses.asdict(TrainConfig()).items()}
    for name in (
        "aux_seed",
        "wm_model",
        "wm_optimizer",
        "wm_weight_decay",
        "wm_full_batch",
        "wm_normalise",
        "wm_holdout",
        "wm_check_every",
        "wm_patience",
        "wm_learner_process",
        "aux_flush_every",
        *EXECUTION_FIELDS,
    ):
        del old[name]
    assert TrainConfig.from_json(old) == TrainConfig()
    assert TrainConfig().to_json() == old  # and defaults still leave them out


def test_execution_fields_change_no_digest() -> None:
    document = {"format": RUN_DOCUMENT_FORMAT, "train": TrainConfig().to_json(), "world_model": {}}
    ray = TrainConfig(aux_backend="ray", ray_agents_per_actor=4, ray_timeout=5, ray_restarts=0).to_json()
    assert ray["aux_backend"] == "ray" and ray["ray_timeout"] == 5
    assert document_digest({**document, "train": ray}) == document_digest(document)
    assert document_digest({**document, "train": TrainConfig(seed=1).to_json()}) != document_digest(document)
    assert parse_field("aux_backend", "ray") == "ray"
    with pytest.raises(ValueError, match="aux_backend must be 'local' or 'ray', got 'spark'"):
        parse_field("aux_backend", "spark")


def test_the_model_and_optimizer_names_are_the_learners() -> None:
    from amal_verified.world_model.learner import MODELS, OPTIMIZERS

    assert get_args(ModelName) == MODELS
    assert get_args(OptimizerName) == OPTIMIZERS


def test_every_field_is_described() -> None:
    described = field_descriptions()
    assert list(described) == [f.name for f in dataclasses.fields(TrainConfig)]
    for name, (accepts, default, meaning) in described.items():
        assert accepts and meaning, name
        assert getattr(TrainConfig(), name) == default


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("ensemble_size", "5", 5),
        ("wm_lr", "0.001", 0.001),
        ("wm_lr", "1", 1),
        ("shared_trunk", "true", True),
        ("shared_trunk", "False", False),
        ("policy_tau", "none", None),
        ("aux_seed", "null", None),
        ("aux_seed", "7", 7),
        ("eig_estimator", "nmc", "nmc"),
        ("env_id", "my_pkg.envs:MyEnv-v0", "my_pkg.envs:MyEnv-v0"),
    ],
)
def test_parse_field_reads_the_command_lines_text(name: str, text: str, value: Any) -> None:
    parsed = parse_field(name, text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("ensemble_size", "five", "ensemble_size must be a positive integer, got 'five'"),
        ("ensemble_size", "0", "ensemble_size must be a positive integer, got '0'"),
        ("gamma", "inf", "gamma must be a number in [0, 1], got 'inf'"),
        ("ensemble_size", "none", "ensemble_size must be a positive integer, got 'none'"),
        ("shared_trunk", "maybe", "shared_trunk must be true or false, got 'maybe'"),
        (
            "ensembel_size",
            "5",
            "unknown configuration keys ['ensembel_size'] (did you mean 'ensemble_size'?)",
        ),
    ],
)
def test_parse_field_rejects_in_one_line(name: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r".") as err:
        parse_field(name, text)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_read_config_file_takes_fields_or_a_runs_document(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"seed": 4, "ensemble_size": 5}))
    assert read_config_file(plain) == {"seed": 4, "ensemble_size": 5}
    run = tmp_path / "config.json"
    train = TrainConfig(seed=9).to_json()
    run.write_text(
        json.dumps({"format": RUN_DOCUMENT_FORMAT, "train": train, "world_model": {}, "unsafe_mix": False})
    )
    assert TrainConfig.from_json(read_config_file(run)) == TrainConfig(seed=9)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object of configuration fields"),
        (
            '{"format": "other/2", "train": {}}',
            "a run document must have format 'amal_verified.run.config/1'",
        ),
        ('{"sed": 1}', "unknown configuration keys ['sed'] (did you mean 'seed'?)"),
    ],
)
def test_read_config_file_names_the_file_and_the_problem(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=r"^configuration file .*c\.json") as err:
        read_config_file(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_importing_the_configuration_imports_no_torch() -> None:
    code = (
        "import sys, amal_verified.run.config as c; c.TrainConfig(); "
        "print(sorted(m for m in ('torch', 'numpy', 'gymnasium') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
