"""Unit tests of the trainer's small components: streams, configuration, schedule, data log, runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from amal_verified.agents.env_runner import EnvRunner
from amal_verified.agents.rollouts import ImaginedBatch, ImaginedBuffer
from amal_verified.common.rng_streams import RunStreams
from amal_verified.envs import make_env
from amal_verified.record.primary_log import PrimaryDataLog, load_primary_stream
from amal_verified.run.config import (
    TrainConfig,
    document_digest,
    primary_count_at_update,
    updates_completed_by,
)

# ---------------------------------------------------------------------------------------- streams


def test_a_stream_depends_on_seed_and_name_only() -> None:
    a = RunStreams(7)
    b = RunStreams(7)
    b.torch_generator("unrelated")  # claiming other streams first changes nothing
    x = torch.randn(4, generator=a.torch_generator("world-model/batches"))
    y = torch.randn(4, generator=b.torch_generator("world-model/batches"))
    assert torch.equal(x, y)
    z = torch.randn(4, generator=RunStreams(8).torch_generator("world-model/batches"))
    assert not torch.equal(x, z)
    assert RunStreams(7).int_seed("a") != RunStreams(7).int_seed("b")


def test_a_stream_has_one_owner() -> None:
    streams = RunStreams(0)
    streams.numpy_generator("cem")
    with pytest.raises(ValueError, match="already claimed"):
        streams.torch_generator("cem")
    with pytest.raises(ValueError, match="seed"):
        RunStreams(-1)


def test_streams_leave_global_rngs_alone() -> None:
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()  # type: ignore[index]
    streams = RunStreams(3)
    torch.rand(3, generator=streams.torch_generator("x"))
    streams.numpy_generator("y").random(3)
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(np.random.get_state()[1], np_before)  # type: ignore[index]


def test_checked_calls_leave_pythons_global_random_alone() -> None:
    # beartype samples container items with random.getrandbits; the library gives it its own stream.
    import random

    from amal_verified.agents.cem import FlatMLPPolicy
    from amal_verified.world_model.ensemble import bootstrap_indices, member_generators

    state = random.getstate()
    bootstrap_indices(4, member_generators(0, 3))
    policy = FlatMLPPolicy(3, 2, (4, 4), True)
    policy.act(policy.init_params(2, generator=torch.Generator()), torch.zeros(5, 3))
    assert random.getstate() == state


# ---------------------------------------------------------------------------------------- configuration


def test_config_rejects_bad_values_naming_the_field() -> None:
    for field, value in [("batch_size", 0), ("gamma", 1.5), ("real_ratio", -0.1), ("wm_lr", float("nan"))]:
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="num_aux_agents"):
        TrainConfig(num_aux_agents=20, cem_population=10)
    with pytest.raises(ValueError, match="unknown configuration keys"):
        TrainConfig.from_json({"nope": 1})


CONVEX = {
    "wm_model": "linear-gaussian",
    "wm_optimizer": "sgd",
    "wm_weight_decay": 0.1,
    "wm_full_batch": True,
    "ensemble_size": 1,
    "info_weight": 0.0,
}


def test_world_model_options_are_checked_and_name_what_conflicts() -> None:
    TrainConfig(**CONVEX)
    for field, value in [
        ("wm_model", "mlp"),
        ("wm_optimizer", "rmsprop"),
        ("wm_weight_decay", -1.0),
        ("wm_weight_decay", float("inf")),
        ("wm_weight_decay", True),
        ("wm_full_batch", 1),
        ("wm_normalise", 1),
    ]:
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})
    # A single linear model: every ensemble-only or ensemble-dependent field that differs is named.
    for field, value in [
        ("ensemble_size", 20),
        ("shared_trunk", True),
        ("wm_hidden_scale", 0.5),
        ("info_weight", 0.3),
        ("real_ratio", 0.5),
        ("wm_normalise", True),
    ]:
        with pytest.raises(ValueError, match=f"{field} must be .* with wm_model='linear-gaussian'"):
            TrainConfig(**{**CONVEX, field: value})


def test_world_model_options_leave_default_documents_unchanged() -> None:
    default = TrainConfig().to_json()
    assert not {"wm_model", "wm_optimizer", "wm_weight_decay", "wm_full_batch", "wm_normalise"} & set(default)
    normalised = TrainConfig(wm_normalise=True)
    assert normalised.to_json() == {**default, "wm_normalise": True}
    assert TrainConfig.from_json(normalised.to_json()) == normalised
    convex = TrainConfig(**CONVEX)
    document = convex.to_json()
    assert {k: document[k] for k in CONVEX} == CONVEX
    assert TrainConfig.from_json(document) == convex
    assert TrainConfig.from_json(default) == TrainConfig()


def test_table_1_defaults() -> None:
    c = TrainConfig()
    assert (c.wm_lr, c.policy_lr, c.batch_size, c.buffer_size, c.gamma) == (3e-4, 3e-4, 256, 10**6, 0.99)
    assert (c.info_weight, c.num_aux_agents, c.cem_population, c.cem_elite_fraction) == (0.3, 16, 100, 0.2)
    assert (c.mi_outer_samples, c.ensemble_size) == (100, 20)


def test_schedule_is_a_function_of_the_configuration() -> None:
    c = TrainConfig(learning_starts=1_000, wm_train_every=250, wm_updates_per_round=25)
    assert c.first_round == 1_000
    assert primary_count_at_update(c, 1) == 1_000 == primary_count_at_update(c, 25)
    assert primary_count_at_update(c, 26) == 1_250
    assert updates_completed_by(c, 999) == 0
    assert updates_completed_by(c, 1_000) == 25
    assert updates_completed_by(c, 1_249) == 25
    assert updates_completed_by(c, 1_250) == 50
    odd = TrainConfig(learning_starts=1_001, wm_train_every=250)
    assert odd.first_round == 1_250


def test_document_digest_ignores_only_the_run_length() -> None:
    doc = {"train": TrainConfig().to_json(), "world_model": {"x": 1}}
    longer = {"train": {**doc["train"], "total_steps": 99}, "world_model": {"x": 1}}
    other = {"train": {**doc["train"], "wm_lr": 1e-3}, "world_model": {"x": 1}}
    assert document_digest(doc) == document_digest(longer) != document_digest(other)


# ---------------------------------------------------------------------------------------- primary data


def _fill(log: PrimaryDataLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.append(np.full(3, i, np.float32), i % 2, float(i), np.full(3, i + 1, np.float32), i % 7 == 0)


def test_data_log_round_trip_in_chunks(tmp_path: Path) -> None:
    log = PrimaryDataLog(tmp_path)
    _fill(log, 5)
    log.flush()
    _fill(log, 4, start=5)
    log.flush()
    log.flush()  # nothing pending: no empty chunk
    stream = load_primary_stream(tmp_path)
    assert stream.problems == () and stream.count == 9
    assert stream.tensors["obs"][:, 0].tolist() == list(range(9))
    assert stream.tensors["terminated"].tolist() == [i % 7 == 0 for i in range(9)]
    assert [c["file"] for c in log.manifest] == [
        "primary-0000000000-0000000005.pt",
        "primary-0000000005-0000000009.pt",
    ]


def test_data_log_problems_name_the_file(tmp_path: Path) -> None:
    log = PrimaryDataLog(tmp_path)
    _fill(log, 3)
    log.flush()
    _fill(log, 3, start=3)
    log.flush()
    (tmp_path / "data" / "stray-but-named-like-a-chunk").touch()
    extra = tmp_path / "data" / "primary-0000000006-0000000007.pt"
    extra.write_bytes(b"x")
    stream = load_primary_stream(tmp_path)
    assert [(p.file, p.message) for p in stream.problems] == [
        (extra.name, "chunk file not listed in the manifest")
    ]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    manifest["chunks"].reverse()
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(manifest))
    stream = load_primary_stream(tmp_path)
    assert "out of order" in stream.problems[0].message
    (tmp_path / "data" / "manifest.json").write_text("{")
    assert "not valid JSON" in load_primary_stream(tmp_path).problems[0].message


# ---------------------------------------------------------------------------------------- env runner


def test_env_runner_restores_mid_episode_and_refuses_a_wrong_state() -> None:
    runner = EnvRunner(make_env("Pendulum-v1"), np.random.default_rng(0))
    for t in range(30):
        runner.step(np.array([np.sin(t)], dtype=np.float32))
    state = runner.state_dict()
    twin = EnvRunner(make_env("Pendulum-v1"), np.random.default_rng(99))
    twin.load_state_dict(state)
    assert np.array_equal(twin.obs, runner.obs) and twin.episode_return == runner.episode_return
    for _ in range(200):  # crosses an episode boundary: the seed streams must agree too
        a, b = runner.step(np.array([0.5], np.float32)), twin.step(np.array([0.5], np.float32))
        assert np.array_equal(a.next_obs, b.next_obs) and a.reward == b.reward
    forged = {**state, "obs": state["obs"] + 1.0}
    with pytest.raises(ValueError, match="did not reproduce"):
        EnvRunner(make_env("Pendulum-v1"), np.random.default_rng(0)).load_state_dict(forged)


# ---------------------------------------------------------------------------------------- imagined buffer


def test_imagined_buffer_is_a_ring_and_round_trips() -> None:
    buf = ImaginedBuffer(5, 2, (), torch.int64)

    def batch(start: int, n: int) -> ImaginedBatch:
        v = torch.arange(start, start + n, dtype=torch.float32)
        return ImaginedBatch(
            v[:, None].expand(n, 2), v.long(), v, v[:, None].expand(n, 2), v > 100, torch.zeros(n)
        )

    buf.add(batch(0, 4))
    buf.add(batch(4, 3))
    assert len(buf) == 5
    assert sorted(buf.state_dict()["reward"].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    copy = ImaginedBuffer(5, 2, (), torch.int64)
    copy.load_state_dict(buf.state_dict())
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(buf.sample(8, g1)["reward"], copy.sample(8, g2)["reward"])
    with pytest.raises(ValueError, match="capacity"):
        buf.add(batch(0, 6))
