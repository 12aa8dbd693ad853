"""The world-model learner's options beyond the paper's defaults: model, optimizer, weight decay, full batch.

The convergence of the strongly convex configuration is a property in
``properties/test_world_model_convergence.py``; here are the options' contracts and errors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from amal_verified.common.rng_streams import RunStreams
from amal_verified.isolation.buffers import AuxBuffer, PrimaryBuffer
from amal_verified.record.ledger import batch_digest
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec
from amal_verified.world_model.linear import LinearGaussianWorldModel

SMALL_ENSEMBLE: dict[str, Any] = {
    "obs_dim": 3,
    "action_dim": 2,
    "discrete": False,
    "members": 2,
    "batch_size": 8,
    "encoder_sizes": (8,),
    "gru_hidden": 8,
    "decoder_sizes": (8,),
}
LINEAR: dict[str, Any] = {
    "obs_dim": 3,
    "action_dim": 2,
    "discrete": False,
    "members": 1,
    "lr": 0.05,
    "model": "linear-gaussian",
    "optimizer": "sgd",
    "weight_decay": 0.1,
    "full_batch": True,
}
# The keys of a default spec's document before these options existed: config digests depend on them.
PAPER_KEYS = [
    "obs_dim",
    "action_dim",
    "discrete",
    "members",
    "lr",
    "batch_size",
    "shared_trunk",
    "encoder_sizes",
    "gru_hidden",
    "decoder_sizes",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def buffer(n: int = 12, *, obs_dim: int = 3, action_dim: int = 2, seed: int = 0) -> PrimaryBuffer:
    g = torch.Generator().manual_seed(seed)
    buf = PrimaryBuffer(n + 4, obs_shape=(obs_dim,), action_shape=(action_dim,), seed=1)
    buf.add(
        torch.randn(n, obs_dim, generator=g),
        torch.randn(n, action_dim, generator=g),
        torch.randn(n, generator=g),
        torch.randn(n, obs_dim, generator=g),
        torch.zeros(n, dtype=torch.bool),
    )
    return buf


def learner(seed: int = 0, **spec: Any) -> WorldModelLearner:
    return WorldModelLearner(WorldModelSpec(**spec), RunStreams(seed))


# ---------------------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model": "gru"}, "model must be one of 'ensemble', 'linear-gaussian', got 'gru'"),
        ({"optimizer": "adamw"}, "optimizer must be one of 'adam', 'sgd', got 'adamw'"),
        ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0"),
        ({"weight_decay": math.nan}, "weight_decay must be a finite number >= 0"),
        ({"weight_decay": math.inf}, "weight_decay must be a finite number >= 0"),
        ({"weight_decay": True}, "weight_decay must be a finite number >= 0"),
        ({"weight_decay": "0.1"}, "weight_decay must be a finite number >= 0"),
        ({"full_batch": 1}, "full_batch must be True or False"),
        ({"normalise": 1}, "normalise must be True or False"),
    ],
)
def test_spec_rejects_bad_options_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"WorldModelSpec.{message}".replace("(", r"\(").replace(")", r"\)")):
        WorldModelSpec(**{**SMALL_ENSEMBLE, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"members": 20}, "members must be 1 with model='linear-gaussian'"),
        ({"shared_trunk": True}, "shared_trunk configures the recurrent ensemble"),
        ({"encoder_sizes": (8,)}, "encoder_sizes configures the recurrent ensemble"),
        ({"gru_hidden": 8}, "gru_hidden configures the recurrent ensemble"),
        ({"decoder_sizes": (8,)}, "decoder_sizes configures the recurrent ensemble"),
        ({"normalise": True}, "normalise configures the recurrent ensemble"),
    ],
)
def test_linear_model_refuses_ensemble_settings(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorldModelSpec(**{**LINEAR, **overrides})


def test_default_document_is_the_papers_and_options_round_trip() -> None:
    default = WorldModelSpec(obs_dim=3, action_dim=2, discrete=True)
    assert list(default.to_json()) == PAPER_KEYS  # unchanged documents, unchanged config digests
    assert WorldModelSpec.from_json(default.to_json()) == default
    linear = WorldModelSpec(**LINEAR)
    document = linear.to_json()
    assert {k: document[k] for k in ("model", "optimizer", "weight_decay", "full_batch")} == {
        "model": "linear-gaussian",
        "optimizer": "sgd",
        "weight_decay": 0.1,
        "full_batch": True,
    }
    assert WorldModelSpec.from_json(document) == linear
    only_sgd = WorldModelSpec(**SMALL_ENSEMBLE, optimizer="sgd")
    assert list(only_sgd.to_json()) == [*PAPER_KEYS, "optimizer"]
    assert WorldModelSpec.from_json(only_sgd.to_json()) == only_sgd
    normalised = WorldModelSpec(**SMALL_ENSEMBLE, normalise=True)
    assert list(normalised.to_json()) == [*PAPER_KEYS, "normalise"]
    assert WorldModelSpec.from_json(normalised.to_json()) == normalised
    with pytest.raises(ValueError, match="unknown keys \\['optimiser'\\]"):
        WorldModelSpec.from_json({**default.to_json(), "optimiser": "sgd"})


# ---------------------------------------------------------------------------------------- updates


def test_full_batch_uses_every_primary_row_once_in_storage_order() -> None:
    buf = buffer(10)
    lrn = learner(**SMALL_ENSEMBLE, full_batch=True)
    state = buf.state_dict()
    expected = batch_digest(
        torch.arange(10), *(state[k] for k in ("obs", "action", "reward", "next_obs", "done"))
    )
    batches_before = lrn.state_dict()["batches"]
    first, second = lrn.update(buf), lrn.update(buf)
    assert first.batch_digest == second.batch_digest == expected
    assert torch.equal(lrn.state_dict()["batches"], batches_before)  # no row was drawn
    assert first.param_digest != second.param_digest
    sampled = learner(**SMALL_ENSEMBLE).update(buf)
    assert sampled.batch_digest != expected


def test_full_batch_refuses_an_empty_buffer() -> None:
    empty = PrimaryBuffer(4, obs_shape=(3,), action_shape=(2,), seed=0)
    with pytest.raises(ValueError, match="the buffer is empty"):
        learner(**LINEAR).update(empty)


def test_weight_decay_adds_half_lambda_times_the_squared_norm_to_the_loss() -> None:
    buf = buffer()
    plain = learner(**SMALL_ENSEMBLE)
    decayed = learner(**SMALL_ENSEMBLE, weight_decay=0.3)  # same seed: same init, batch, bootstrap
    squared = sum(float(p.detach().double().square().sum()) for p in plain.model.parameters())
    a, b = plain.update(buf), decayed.update(buf)
    assert a.batch_digest == b.batch_digest
    assert math.isclose(b.loss - a.loss, 0.15 * squared, rel_tol=1e-5)
    assert a.param_digest != b.param_digest


def test_sgd_step_is_plain_gradient_descent_on_the_least_squares_objective() -> None:
    buf = buffer()
    lrn = learner(**LINEAR)
    assert isinstance(lrn.model, LinearGaussianWorldModel)
    w0 = lrn.model.weight.detach().clone()
    assert w0.dtype == torch.float64
    state = buf.state_dict()
    x = torch.cat([state["obs"].elem, state["action"].elem, torch.ones(12, 1)], dim=1).double()
    y = torch.cat([state["next_obs"].elem, state["reward"].elem[:, None]], dim=1).double()
    expected_loss = 0.5 * (y - x @ w0.T).square().sum(1).mean() + 4 * 0.5 * math.log(2 * math.pi)
    expected_loss += 0.5 * 0.1 * w0.square().sum()
    gradient = (x @ w0.T - y).T @ x / 12 + 0.1 * w0
    assert math.isclose(lrn.full_batch_loss(buf), float(expected_loss), rel_tol=1e-12)
    update = lrn.update(buf)
    assert math.isclose(update.loss, float(expected_loss), rel_tol=1e-12)
    assert update.labels == ("primary:real-env",)
    torch.testing.assert_close(lrn.model.weight.detach(), w0 - 0.05 * gradient, rtol=0, atol=1e-14)


def test_adam_is_the_default_and_sgd_is_plain() -> None:
    adam = learner(**SMALL_ENSEMBLE).optimizer.state_dict()["param_groups"][0]
    sgd = learner(**SMALL_ENSEMBLE, optimizer="sgd").optimizer.state_dict()["param_groups"][0]
    assert "betas" in adam
    assert (sgd["momentum"], sgd["weight_decay"], sgd["nesterov"]) == (0, 0, False)


def test_linear_learner_resumes_bit_for_bit_and_refuses_another_configuration() -> None:
    buf = buffer()
    a = learner(**LINEAR)
    a.update(buf)
    b = learner(**LINEAR)
    b.load_state_dict(a.state_dict())
    assert [a.update(buf).param_digest for _ in range(3)] == [b.update(buf).param_digest for _ in range(3)]
    other = learner(**{**LINEAR, "weight_decay": 0.2})
    with pytest.raises(ValueError, match="different configuration"):
        other.load_state_dict(a.state_dict())


def test_linear_model_predicts_like_a_one_member_ensemble_and_refuses_imagination() -> None:
    buf = buffer()
    lrn = learner(**LINEAR)
    state = buf.state_dict()
    pred = lrn.predict(state["obs"], state["action"])
    assert pred.next_obs_mean.shape == (1, 12, 1, 3)
    assert pred.reward_mean.shape == pred.reward_log_std.shape == (1, 12, 1)
    assert float(pred.next_obs_log_std.abs().max()) == 0.0
    with pytest.raises(ValueError, match="need model='ensemble'"):
        lrn.model.sample(pred, torch.Generator())


def test_linear_model_one_hot_encodes_discrete_actions() -> None:
    buf = PrimaryBuffer(8, obs_shape=(2,), action_shape=(), seed=0, action_dtype=torch.int64)
    obs = np.ones((6, 2), np.float32)
    buf.add(obs, np.arange(6) % 3, np.zeros(6, np.float32), obs, np.zeros(6, bool))
    lrn = learner(**{**LINEAR, "obs_dim": 2, "action_dim": 3, "discrete": True})
    assert lrn.model.weight.shape == (3, 2 + 3 + 1)
    assert lrn.update(buf).labels == ("primary:real-env",)


def test_full_batch_loss_is_only_for_the_deterministic_configuration() -> None:
    buf = buffer()
    for spec in (SMALL_ENSEMBLE, {**SMALL_ENSEMBLE, "full_batch": True}, {**LINEAR, "full_batch": False}):
        with pytest.raises(ValueError, match="full_batch_loss needs model='linear-gaussian'"):
            learner(**spec).full_batch_loss(buf)


def test_linear_model_checks_its_inputs() -> None:
    model = LinearGaussianWorldModel(2, 1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"action must have shape \(4, 1\)"):
        model(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="obs contains NaN"):
        model(torch.full((4, 2), math.nan), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="action must be a floating tensor"):
        model(torch.zeros(4, 2), torch.zeros(4, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="obs_dim and action_dim must be positive"):
        LinearGaussianWorldModel(0, 1, generator=torch.Generator())


def test_unsafe_full_batch_reads_every_primary_then_every_auxiliary_row() -> None:
    primary_rows = buffer(5)
    aux_rows = AuxBuffer(8, source="aux-0", obs_shape=(3,), action_shape=(2,), seed=2)
    aux_rows.add(
        torch.ones(3, 3), torch.ones(3, 2), torch.ones(3), torch.ones(3, 3), torch.zeros(3, dtype=torch.bool)
    )
    empty = AuxBuffer(8, source="aux-1", obs_shape=(3,), action_shape=(2,), seed=3)
    spec = WorldModelSpec(**LINEAR)
    unsafe = WorldModelLearner(spec, RunStreams(0), unsafe_mix=True)
    fields = ("obs", "action", "reward", "next_obs", "done")
    p, a = primary_rows.state_dict(), aux_rows.state_dict()
    expected = batch_digest(
        torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]), *(torch.cat([p[k].elem, a[k].elem]) for k in fields)
    )
    update = unsafe.update(primary_rows, [aux_rows, empty])
    assert update.batch_digest == expected
    assert update.labels == ("aux:aux-0", "primary:real-env")


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_foreach_adam_is_bit_identical_to_the_per_tensor_loop(weight_decay: float) -> None:
    """The learner's Adam (per-tensor loop on CPU, torch's default) and the same optimizer stepping with
    ``foreach=True`` (multi-tensor) give the same parameter digest after every update and bit-identical
    state: either may run a certified run.  (The learner keeps the default: foreach measured no faster
    at Table 1's sizes, ``benchmarks/README.md``; fused Adam is not bit-identical.)"""
    small = {
        "obs_dim": 3,
        "action_dim": 2,
        "discrete": False,
        "members": 3,
        "batch_size": 8,
        "encoder_sizes": (8, 8, 4),
        "gru_hidden": 8,
        "decoder_sizes": (4, 8, 8),
        "weight_decay": weight_decay,
    }
    multi, single = learner(4, **small), learner(4, **small)
    for group in multi.optimizer.param_groups:
        group["foreach"] = True
    buf = buffer(40)
    for _ in range(4):
        assert multi.update(buf).param_digest == single.update(buf).param_digest
    states = [o.state_dict()["state"] for o in (multi.optimizer, single.optimizer)]
    assert states[0].keys() == states[1].keys()
    for index, entry in states[0].items():
        for key, value in entry.items():
            assert torch.equal(
                value.float().view(torch.int32), states[1][index][key].float().view(torch.int32)
            )
