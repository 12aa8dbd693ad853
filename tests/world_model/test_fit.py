"""``world_model_fit``: the world model's one-step errors against "no change" and "the best constant"."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from amal_verified.common.rng_streams import RunStreams
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.world_model.fit import world_model_fit
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

LINEAR: dict[str, Any] = {
    "obs_dim": 2,
    "action_dim": 1,
    "discrete": False,
    "members": 1,
    "model": "linear-gaussian",
}
# s' = A s + B a + c, r = d·s: a linear-Gaussian model with these weights is exact.
TRUE_WEIGHT = torch.tensor(
    [
        [0.9, 0.2, 0.5, 0.1],
        [-0.3, 0.8, -0.4, 0.0],
        [1.0, -2.0, 0.0, 0.5],
    ],
    dtype=torch.float64,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def transitions(n: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 2, generator=g)
    action = torch.rand(n, 1, generator=g) * 2 - 1
    x = torch.cat([obs, action, torch.ones(n, 1)], dim=1).to(torch.float64)
    y = (x @ TRUE_WEIGHT.T).to(torch.float32)
    return {"obs": obs, "action": action, "next_obs": y[:, :2].contiguous(), "reward": y[:, 2].contiguous()}


def linear_learner(weight: Tensor) -> WorldModelLearner:
    learner = WorldModelLearner(WorldModelSpec(**LINEAR), RunStreams(0))
    with torch.no_grad():
        learner.model.weight.copy_(weight)
    return learner


def test_naive_errors_are_those_of_the_training_rows_statistics() -> None:
    train, held = transitions(64, seed=1), transitions(40, seed=2)
    report = world_model_fit(linear_learner(torch.zeros_like(TRUE_WEIGHT)), train, held)
    target = held["next_obs"].double()
    mean_next = train["next_obs"].double().mean(0)
    mean_reward = train["reward"].double().mean()
    expected_constant = (target - mean_next).square().mean(0)
    expected_no_change = (target - held["obs"].double()).square().mean(0)
    expected_reward = (held["reward"].double() - mean_reward).square().mean()
    assert report.best_constant.next_obs_mse_per_dim == pytest.approx(expected_constant.tolist(), rel=1e-12)
    assert report.best_constant.next_obs_mse == pytest.approx(float(expected_constant.mean()), rel=1e-12)
    assert report.no_change.next_obs_mse_per_dim == pytest.approx(expected_no_change.tolist(), rel=1e-12)
    assert report.no_change.reward_mse == report.best_constant.reward_mse
    assert report.best_constant.reward_mse == pytest.approx(float(expected_reward), rel=1e-12)
    # The zero map predicts s' = 0, r = 0.
    assert report.model.next_obs_mse == pytest.approx(float(target.square().mean()), rel=1e-6)
    assert (report.transitions, report.training_transitions) == (40, 64)


def test_an_exact_model_beats_both_naive_predictors_and_a_zero_model_does_not() -> None:
    train, held = transitions(64, seed=1), transitions(40, seed=2)
    exact = world_model_fit(linear_learner(TRUE_WEIGHT), train, held)
    assert exact.model.next_obs_mse < 1e-12 and exact.model.reward_mse < 1e-12
    assert exact.next_obs_beats_naive and exact.reward_beats_naive and exact.beats_naive
    # unit variance: NLL = 1/2 ‖residual‖² + 3/2 log 2π, the residual ≈ 0
    assert exact.model_nll == pytest.approx(1.5 * torch.log(torch.tensor(2 * torch.pi)).item(), rel=1e-6)
    zero = world_model_fit(linear_learner(torch.zeros_like(TRUE_WEIGHT)), train, held)
    assert zero.next_obs_beats_naive is False and not zero.beats_naive
    document = zero.to_json()
    assert document["beats_naive"] is False and document["model"]["nll"] == zero.model_nll
    assert document["best_constant"]["next_obs_mse_per_dim"] == list(zero.best_constant.next_obs_mse_per_dim)


def test_a_reward_the_training_mean_predicts_exactly_is_no_verdict() -> None:
    train, held = transitions(64, seed=1), transitions(40, seed=2)
    train["reward"], held["reward"] = torch.ones(64), torch.ones(40)
    report = world_model_fit(linear_learner(TRUE_WEIGHT), train, held)
    assert report.best_constant.reward_mse == 0.0 and report.reward_beats_naive is None
    assert report.next_obs_beats_naive and report.beats_naive  # decided by the observation alone


def test_a_primary_buffer_gives_its_stored_rows_and_nothing_changes() -> None:
    train, held = transitions(30, seed=1), transitions(20, seed=2)
    buffer = PrimaryBuffer(50, obs_shape=(2,), action_shape=(1,), seed=0)
    buffer.add(
        train["obs"], train["action"], train["reward"], train["next_obs"], torch.zeros(30, dtype=torch.bool)
    )
    learner = linear_learner(TRUE_WEIGHT)
    before = learner.param_digest()
    from_buffer = world_model_fit(learner, buffer, held)
    assert from_buffer == world_model_fit(learner, train, held)
    assert from_buffer.training_transitions == 30 and learner.param_digest() == before


def test_an_ensemble_discrete_learner_is_measured_on_its_mean_prediction() -> None:
    spec = WorldModelSpec(
        obs_dim=3,
        action_dim=2,
        discrete=True,
        members=3,
        encoder_sizes=(8,),
        gru_hidden=8,
        decoder_sizes=(8,),
    )
    learner = WorldModelLearner(spec, RunStreams(0))
    g = torch.Generator().manual_seed(3)
    held = {
        "obs": torch.randn(5, 3, generator=g),
        "action": torch.randint(0, 2, (5,), generator=g),
        "reward": torch.randn(5, generator=g),
        "next_obs": torch.randn(5, 3, generator=g),
    }
    report = world_model_fit(learner, {"next_obs": torch.randn(7, 3), "reward": torch.randn(7)}, held)
    pred = learner.predict(held["obs"], held["action"])
    mean = pred.next_obs_mean.double().mean(0).squeeze(1)
    assert report.model.next_obs_mse == pytest.approx(
        float((mean - held["next_obs"]).square().mean()), rel=1e-12
    )
    nll = learner.prediction_nll(pred, held["next_obs"], held["reward"]).mean()
    assert report.model_nll == pytest.approx(float(nll), rel=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t, h: h.pop("action"), "held_out has no tensor 'action'"),
        (lambda t, h: t.pop("reward"), "training has no tensor 'reward'"),
        (lambda t, h: h.update(obs=h["obs"][:, :1]), "held_out must hold B >= 1 transitions"),
        (lambda t, h: h.update({k: v[:0] for k, v in h.items()}), "held_out must hold B >= 1"),
        (lambda t, h: t.update(next_obs=t["next_obs"][:3]), "training must hold N >= 1 rows"),
        (lambda t, h: h["next_obs"].__setitem__((0, 0), float("nan")), "held_out contains NaN"),
        (lambda t, h: t["reward"].__setitem__(0, float("inf")), "training contains NaN"),
    ],
)
def test_bad_input_is_one_line_naming_the_argument(change: Any, message: str) -> None:
    train, held = transitions(8, seed=1), transitions(6, seed=2)
    change(train, held)
    with pytest.raises(ValueError, match=message) as error:
        world_model_fit(linear_learner(TRUE_WEIGHT), train, held)
    assert "\n" not in str(error.value)
