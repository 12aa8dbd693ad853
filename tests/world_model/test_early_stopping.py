"""``WorldModelSpec.holdout``: a held-out split of the primary buffer's rows, rounds that stop when the
held-out loss stops improving, and what the learner refuses."""

from __future__ import annotations

import pytest
import torch

from amal_verified.common.rng_streams import RunStreams
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.isolation.errors import TaggingError
from amal_verified.isolation.tagging import aux
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def _spec(**overrides: object) -> WorldModelSpec:
    base: dict[str, object] = {
        "obs_dim": 3,
        "action_dim": 1,
        "discrete": False,
        "members": 3,
        "encoder_sizes": (16,),
        "gru_hidden": 16,
        "decoder_sizes": (16,),
        "batch_size": 32,
        "lr": 3e-3,
        "holdout": 0.2,
    }
    return WorldModelSpec(**{**base, **overrides})  # type: ignore[arg-type]


def _buffer(rows: int, seed: int = 0) -> PrimaryBuffer:
    g = torch.Generator().manual_seed(seed)
    buffer = PrimaryBuffer(10_000, obs_shape=(3,), action_shape=(1,), seed=1)
    obs, act = torch.randn(rows, 3, generator=g), torch.rand(rows, 1, generator=g)
    buffer.add(obs, act, obs.sum(1), obs + 0.1 * act, torch.zeros(rows, dtype=torch.bool))
    return buffer


def test_held_out_rows_keep_their_role_and_depend_only_on_the_row_and_the_seed() -> None:
    learner = WorldModelLearner(_spec(), RunStreams(0))
    small, large = learner.held_out_mask(300), learner.held_out_mask(3_000)
    assert torch.equal(small, large[:300])  # growing the buffer never changes a row's role
    assert torch.equal(large, WorldModelLearner(_spec(), RunStreams(0)).held_out_mask(3_000))
    assert not torch.equal(large, WorldModelLearner(_spec(), RunStreams(1)).held_out_mask(3_000))
    assert 0.17 < float(large.float().mean()) < 0.23
    assert not WorldModelLearner(_spec(holdout=0.0), RunStreams(0)).held_out_mask(100).any()


def test_training_batches_never_hold_a_held_out_row() -> None:
    buffer = _buffer(400)
    learner = WorldModelLearner(_spec(), RunStreams(0))
    held = set(torch.nonzero(learner.held_out_mask(400)).flatten().tolist())
    learner.begin_round(buffer, 10)
    drawn: set[int] = set()
    while learner.in_round:
        drawn |= set(learner._batch(buffer, ()).indices.tolist())
        learner.update(buffer)
    assert drawn and not drawn & held


def test_a_round_stops_after_patience_checks_without_a_one_percent_improvement() -> None:
    buffer = _buffer(400)
    learner = WorldModelLearner(_spec(check_every=1, patience=3, lr=1e-9), RunStreams(0))  # barely learns
    learner.begin_round(buffer, 100)
    updates = []
    while learner.in_round:
        updates.append(learner.update(buffer))
    assert len(updates) == 3  # three checks, none better by 1 %
    assert [u.round_end for u in updates[:-1]] == [None, None]
    losses = updates[-1].round_end
    assert losses is not None and len(losses) == 4  # before the round, then one per check
    assert losses[0] == pytest.approx(losses[-1], rel=1e-3)


def test_a_learning_round_runs_to_its_limit_and_checks_there() -> None:
    buffer = _buffer(400)
    learner = WorldModelLearner(_spec(check_every=4, patience=50), RunStreams(0))
    learner.begin_round(buffer, 10)
    updates = []
    while learner.in_round:
        updates.append(learner.update(buffer))
    losses = updates[-1].round_end
    assert len(updates) == 10 and losses is not None
    assert len(losses) == 1 + 2 + 1  # before, after updates 4 and 8, and at the limit (10)
    assert losses[-1] < losses[0]
    assert learner.validation_loss(buffer) == losses[-1]  # the last check is of the final parameters


def test_updates_outside_a_round_and_too_small_splits_are_refused() -> None:
    learner = WorldModelLearner(_spec(), RunStreams(0))
    buffer = _buffer(400)
    with pytest.raises(ValueError, match=r"call begin_round\(primary, updates\)"):
        learner.update(buffer)
    with pytest.raises(ValueError, match="both need some; store more"):
        learner.begin_round(_buffer(1), 5)
    with pytest.raises(ValueError, match="updates must be a positive integer"):
        learner.begin_round(buffer, 0)
    with pytest.raises(ValueError, match="holdout=0"):
        WorldModelLearner(_spec(), RunStreams(0), members=(0, 1))
    with pytest.raises(ValueError, match="unsafe_mix needs holdout=0"):
        WorldModelLearner(_spec(), RunStreams(0), unsafe_mix=True)
    with pytest.raises(ValueError, match="validation_loss needs a held-out split"):
        WorldModelLearner(_spec(holdout=0.0), RunStreams(0)).validation_loss(buffer)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"holdout": 0.6}, "holdout must be a fraction in"),
        ({"holdout": True}, "holdout must be a fraction in"),
        ({"holdout": 0.2, "full_batch": True}, "needs full_batch=False"),
        ({"check_every": 0}, "check_every must be a positive integer"),
        ({"patience": 1.5}, "patience must be a positive integer"),
    ],
)
def test_bad_holdout_settings_name_the_field(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(**overrides)


def test_default_spec_documents_leave_the_new_options_out() -> None:
    document = _spec(holdout=0.0).to_json()
    assert not {"holdout", "check_every", "patience"} & set(document)
    assert WorldModelSpec.from_json(_spec().to_json()) == _spec()


def test_take_returns_tagged_copies_and_refuses_bad_rows() -> None:
    buffer = _buffer(10)
    batch = buffer.take(torch.tensor([3, 0, 3]))
    assert batch.indices.tolist() == [3, 0, 3] and torch.equal(batch.obs[0], batch.obs[2])
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 10\)"):
        buffer.take(torch.tensor([10]))
    with pytest.raises(ValueError, match="1-D int64 tensor"):
        buffer.take(torch.tensor([1.0]))
    with pytest.raises(TaggingError, match="chosen from auxiliary data"):
        buffer.take(aux(torch.tensor([1, 2]), source="sim"))


def test_the_linear_model_with_discrete_actions_stops_on_its_held_out_loss_too() -> None:
    spec = WorldModelSpec(
        obs_dim=3,
        action_dim=2,
        discrete=True,
        members=1,
        model="linear-gaussian",
        optimizer="sgd",
        lr=0.05,
        batch_size=64,
        holdout=0.25,
        check_every=2,
        patience=2,
    )
    buffer = PrimaryBuffer(1_000, obs_shape=(3,), action_shape=(), action_dtype=torch.int64, seed=1)
    g = torch.Generator().manual_seed(0)
    obs, action = torch.randn(300, 3, generator=g), torch.randint(0, 2, (300,), generator=g)
    buffer.add(obs, action, obs.sum(1), 0.5 * obs + action[:, None], torch.zeros(300, dtype=torch.bool))
    learner = WorldModelLearner(spec, RunStreams(0))
    learner.begin_round(buffer, 100)
    updates = []
    while learner.in_round:
        updates.append(learner.update(buffer))
    losses = updates[-1].round_end
    assert losses is not None and len(losses) == 1 + len(updates) // 2
    assert losses[-1] < 0.01 * losses[0]  # a linear target: the held-out error falls with every check
