"""Input and target normalisation (``normalise=True``): statistics from primary data only, held as
buffers the gate protects and the parameter digest covers, outputs in the data's own units."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from amal_verified.common.rng_streams import RunStreams
from amal_verified.isolation.buffers import AuxBuffer, PrimaryBuffer
from amal_verified.isolation.errors import IsolationViolation
from amal_verified.world_model.ensemble import STD_FLOOR, EnsembleWorldModel, normalisation_statistics
from amal_verified.world_model.fit import world_model_fit
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

SMALL: dict[str, Any] = {
    "obs_dim": 3,
    "action_dim": 2,
    "discrete": False,
    "members": 3,
    "batch_size": 16,
    "encoder_sizes": (16,),
    "gru_hidden": 16,
    "decoder_sizes": (16,),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def scaled_rows(n: int, seed: int) -> dict[str, Tensor]:
    """Transitions of a badly scaled linear system: observations around 50 with spreads from 0.01 to 100,
    a constant last dimension, rewards around -300."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([100.0, 1.0, 0.0])
    obs = 50.0 + torch.randn(n, 3, generator=g) * scale
    action = torch.rand(n, 2, generator=g) * 2 - 1
    change = torch.stack(
        [5.0 * action[:, 0], 0.01 * obs[:, 1] - 0.5 + 0.3 * action[:, 1], torch.zeros(n)], dim=1
    )
    reward = -300.0 + 20.0 * action[:, 0] - 0.1 * (obs[:, 0] - 50.0)
    return {"obs": obs, "action": action, "reward": reward, "next_obs": obs + change}


def primary_buffer(rows: dict[str, Tensor], capacity: int = 2_000) -> PrimaryBuffer:
    buffer = PrimaryBuffer(capacity, obs_shape=(3,), action_shape=(2,), seed=1)
    n = rows["reward"].shape[0]
    buffer.add(
        rows["obs"], rows["action"], rows["reward"], rows["next_obs"], torch.zeros(n, dtype=torch.bool)
    )
    return buffer


def model(normalise: bool) -> EnsembleWorldModel:
    return EnsembleWorldModel(
        3, 2, members=3, generator=torch.Generator().manual_seed(0), encoder_sizes=(8,), gru_hidden=8,
        decoder_sizes=(8,), normalise=normalise,
    )  # fmt: skip


def test_without_normalise_the_model_has_the_papers_state_and_identity_statistics_change_nothing() -> None:
    plain, normalised = model(False), model(True)
    extra = set(normalised.state_dict()) - set(plain.state_dict())
    assert extra == {f"norm_{n}_{k}" for n in ("obs", "action", "delta", "reward") for k in ("mean", "std")}
    assert not any(name.startswith("norm_") for name in plain.state_dict())
    obs, action = torch.randn(4, 1, 3), torch.randn(4, 1, 2)
    a, b = plain(obs, action), normalised(obs, action)  # mean 0, std 1 until set: bit for bit the plain model
    for field in ("next_obs_mean", "next_obs_log_std", "reward_mean", "reward_log_std"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_statistics_standardise_inputs_and_de_normalise_outputs() -> None:
    rows = scaled_rows(64, seed=0)
    stats = normalisation_statistics(rows["obs"], rows["action"], rows["reward"], rows["next_obs"])
    plain, normalised = model(False), model(True)
    normalised.set_normalisation(stats)
    obs, action = rows["obs"][:5].unsqueeze(1), rows["action"][:5].unsqueeze(1)
    f = {k: v.to(torch.float32) for k, v in stats.items()}
    obs_n = (obs - f["obs_mean"]) / f["obs_std"]
    inner = plain(
        obs_n, (action - f["action_mean"]) / f["action_std"]
    )  # the same network on standardised inputs
    out = normalised(obs, action)
    delta_n = inner.next_obs_mean - obs_n
    torch.testing.assert_close(out.next_obs_mean, obs + f["delta_mean"] + f["delta_std"] * delta_n)
    torch.testing.assert_close(out.next_obs_log_std, inner.next_obs_log_std + f["delta_std"].log())
    torch.testing.assert_close(out.reward_mean, f["reward_mean"] + f["reward_std"] * inner.reward_mean)
    torch.testing.assert_close(out.reward_log_std, inner.reward_log_std + f["reward_std"].log())


def test_statistics_are_float64_moments_with_constant_dimensions_unscaled() -> None:
    rows = scaled_rows(50, seed=1)
    stats = normalisation_statistics(rows["obs"], rows["action"], rows["reward"], rows["next_obs"])
    obs = rows["obs"].double()
    assert all(v.dtype == torch.float64 for v in stats.values())
    torch.testing.assert_close(stats["obs_mean"], obs.mean(0))
    torch.testing.assert_close(stats["obs_std"][:2], obs.std(0, correction=0)[:2])
    assert stats["obs_std"][2] == 1.0 and stats["delta_std"][2] == 1.0  # constant: std 0 < STD_FLOOR → 1
    torch.testing.assert_close(stats["delta_mean"], (rows["next_obs"].double() - obs).mean(0))
    torch.testing.assert_close(stats["reward_std"], rows["reward"].double().std(correction=0))
    nearly = normalisation_statistics(
        torch.tensor([[1.0], [1.0 + STD_FLOOR]]), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 1)
    )
    assert nearly["obs_std"] == 1.0 and nearly["action_std"] == 1.0
    with pytest.raises(ValueError, match="need N >= 1 rows"):
        normalisation_statistics(torch.zeros(0, 3), torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="reward contains NaN"):
        normalisation_statistics(
            torch.zeros(2, 3), torch.zeros(2, 2), torch.tensor([0.0, torch.nan]), torch.zeros(2, 3)
        )


def test_set_normalisation_refuses_bad_statistics_and_changes_nothing() -> None:
    rows = scaled_rows(20, seed=2)
    stats = normalisation_statistics(rows["obs"], rows["action"], rows["reward"], rows["next_obs"])
    m = model(True)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for bad, message in (
        ({**stats, "obs_std": -stats["obs_std"]}, "obs_std must be positive"),
        ({**stats, "delta_mean": stats["delta_mean"][:2]}, "'delta_mean' must be a tensor of shape \\(3,\\)"),
        (
            {k: v for k, v in stats.items() if k != "reward_std"},
            "'reward_std' must be a tensor of shape \\(\\)",
        ),
        ({**stats, "action_mean": torch.full((2,), torch.inf)}, "action_mean contains NaN"),
    ):
        with pytest.raises(ValueError, match=message):
            m.set_normalisation(bad)
        assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="construct it with normalise=True"):
        model(False).set_normalisation(stats)


def test_begin_round_sets_primary_statistics_that_the_digest_covers_and_members_carry() -> None:
    rows = scaled_rows(200, seed=3)
    learner = WorldModelLearner(WorldModelSpec(**SMALL, normalise=True), RunStreams(0))
    buffer = primary_buffer(rows)
    with pytest.raises(ValueError, match="call begin_round"):
        learner.update(buffer)
    initial = learner.param_digest()
    learner.begin_round(buffer)
    assert learner.param_digest() != initial  # the statistics are state the ledger's digest records
    expected = normalisation_statistics(rows["obs"], rows["action"], rows["reward"], rows["next_obs"])
    model = learner.model
    assert isinstance(model, EnsembleWorldModel)
    for key, value in expected.items():
        held = getattr(model, f"norm_{key}")
        assert held.dtype == torch.float32 and torch.equal(held, value.float().expand_as(held)), key
    learner.update(buffer)
    part = model.select_members(1, 3)
    assert torch.equal(part.norm_delta_std, model.norm_delta_std[1:3])
    with pytest.raises(ValueError, match="the buffer is empty"):
        learner.begin_round(PrimaryBuffer(4, obs_shape=(3,), action_shape=(2,), seed=0))


def test_a_shared_trunk_normalises_its_one_input_with_the_members_common_statistics() -> None:
    rows = scaled_rows(100, seed=7)
    shared = WorldModelLearner(WorldModelSpec(**SMALL, shared_trunk=True, normalise=True), RunStreams(0))
    buffer = primary_buffer(rows)
    shared.begin_round(buffer)
    for _ in range(3):
        shared.update(buffer)  # bootstrapped (K, B) inputs through the one trunk
    pred = shared.predict(rows["obs"][:4], rows["action"][:4])  # shared (B,) inputs
    assert pred.next_obs_mean.shape == (3, 4, 1, 3) and bool(torch.isfinite(pred.next_obs_mean).all())


def test_discrete_actions_are_standardised_one_hot() -> None:
    spec = WorldModelSpec(**{**SMALL, "action_dim": 3, "discrete": True}, normalise=True)
    learner = WorldModelLearner(spec, RunStreams(0))
    buffer = PrimaryBuffer(10, obs_shape=(3,), action_shape=(), seed=0, action_dtype=torch.int64)
    actions = torch.tensor([0, 0, 0, 1])
    buffer.add(
        torch.randn(4, 3), actions, torch.zeros(4), torch.randn(4, 3), torch.zeros(4, dtype=torch.bool)
    )
    learner.begin_round(buffer)
    model = learner.model
    assert isinstance(model, EnsembleWorldModel)
    assert model.norm_action_mean[0].flatten().tolist() == [0.75, 0.25, 0.0]
    assert model.norm_action_std[0].flatten()[2] == 1.0  # an action never taken: centred, not scaled
    learner.update(buffer)


def test_the_gate_refuses_auxiliary_statistics() -> None:
    rows = scaled_rows(30, seed=4)
    learner = WorldModelLearner(WorldModelSpec(**SMALL, normalise=True), RunStreams(0))
    learner.begin_round(primary_buffer(rows))
    aux = AuxBuffer(100, obs_shape=(3,), action_shape=(2,), source="aux-0", seed=2)
    aux.add(rows["obs"], rows["action"], rows["reward"], rows["next_obs"], torch.zeros(30, dtype=torch.bool))
    state = aux.state_dict()
    stats = normalisation_statistics(state["obs"], state["action"], state["reward"], state["next_obs"])
    before = learner.param_digest()
    model = learner.model
    assert isinstance(model, EnsembleWorldModel)
    with pytest.raises(IsolationViolation):
        model.set_normalisation(stats)
    assert learner.param_digest() == before


def test_normalisation_fits_a_badly_scaled_system_the_plain_model_does_not() -> None:
    train, held = primary_buffer(scaled_rows(1_000, seed=5)), scaled_rows(300, seed=6)
    reports = {}
    for normalise in (False, True):
        spec = WorldModelSpec(**{**SMALL, "batch_size": 64, "lr": 3e-3}, normalise=normalise)
        learner = WorldModelLearner(spec, RunStreams(0))
        for _ in range(4):
            learner.begin_round(train)
            for _ in range(50):
                learner.update(train)
        reports[normalise] = world_model_fit(learner, train, held)
    assert reports[True].beats_naive, reports[True]
    assert not reports[False].beats_naive, reports[False]
