"""A learner of a range of the ensemble's members updates exactly those members of the whole learner."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from amal_verified.common.rng_streams import RunStreams
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec

SPEC: dict[str, Any] = {
    "obs_dim": 3,
    "action_dim": 2,
    "discrete": False,
    "members": 5,
    "batch_size": 16,
    "encoder_sizes": (8, 6),
    "gru_hidden": 8,
    "decoder_sizes": (8,),
}


def _buffer() -> PrimaryBuffer:
    g = torch.Generator().manual_seed(7)
    buffer = PrimaryBuffer(64, obs_shape=(3,), action_shape=(2,), seed=3)
    buffer.add(
        torch.randn(64, 3, generator=g),
        torch.randn(64, 2, generator=g),
        torch.randn(64, generator=g),
        torch.randn(64, 3, generator=g),
        torch.zeros(64, dtype=torch.bool),
    )
    return buffer


def _plain_state(learner: WorldModelLearner) -> dict[str, torch.Tensor]:
    from amal_verified.isolation.tagging import TaggedTensor

    return {
        k: (v.elem if isinstance(v, TaggedTensor) else v).clone()
        for k, v in learner.model.state_dict().items()
    }


@pytest.mark.parametrize("ranges", [[(0, 2), (2, 5)], [(0, 1), (1, 4), (4, 5)], [(3, 5)]])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_each_range_updates_its_members_of_the_whole_learner(
    ranges: list[tuple[int, int]], optimizer: str
) -> None:
    """Up to rounding in general: which kernel path torch takes (vectorised or scalar ``exp``) depends
    on the shapes, so these small shapes differ in the last bits for some ranges."""
    spec = WorldModelSpec(**SPEC, optimizer=optimizer, weight_decay=0.01)  # type: ignore[arg-type]
    whole = WorldModelLearner(spec, RunStreams(11))
    parts = [WorldModelLearner(spec, RunStreams(11), members=r) for r in ranges]
    buffers = [_buffer() for _ in range(len(parts) + 1)]
    for _ in range(4):
        done = whole.update(buffers[0])
        for part, buffer in zip(parts, buffers[1:], strict=True):
            got = part.update(buffer)
            assert (got.batch_digest, got.labels) == (done.batch_digest, done.labels)
            assert got.param_digest == ""  # the digest is of the whole model
    state = _plain_state(whole)
    for (start, stop), part in zip(ranges, parts, strict=True):
        for name, value in _plain_state(part).items():
            torch.testing.assert_close(value, state[name][start:stop], rtol=1e-5, atol=1e-6, msg=name)


def test_ranges_are_bit_for_bit_where_the_kernels_agree() -> None:
    """The trainer's tiny test configuration (3 members, batch 32): exact in 2 and in 3 parts."""
    spec = WorldModelSpec(
        obs_dim=4,
        action_dim=2,
        discrete=True,
        members=3,
        batch_size=32,
        encoder_sizes=(16, 16, 8),
        gru_hidden=16,
        decoder_sizes=(8, 16, 16),
    )
    g = torch.Generator().manual_seed(7)

    def buffer() -> PrimaryBuffer:
        b = PrimaryBuffer(128, obs_shape=(4,), action_shape=(), seed=3, action_dtype=torch.int64)
        g.manual_seed(7)
        b.add(
            torch.randn(128, 4, generator=g),
            torch.randint(0, 2, (128,), generator=g),
            torch.randn(128, generator=g),
            torch.randn(128, 4, generator=g),
            torch.zeros(128, dtype=torch.bool),
        )
        return b

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a replay runs (the run's thread count)
    try:
        _bit_for_bit(spec, buffer)
    finally:
        torch.set_num_threads(threads)


def _bit_for_bit(spec: WorldModelSpec, buffer: Any) -> None:
    for ranges in ([(0, 1), (1, 3)], [(0, 1), (1, 2), (2, 3)]):
        parts = [(WorldModelLearner(spec, RunStreams(5), members=r), buffer()) for r in ranges]
        reference = WorldModelLearner(spec, RunStreams(5))
        reference_buffer = buffer()
        for _ in range(3):
            reference.update(reference_buffer)
            for part, b in parts:
                part.update(b)
        state = _plain_state(reference)
        for (start, stop), (part, _) in zip(ranges, parts, strict=True):
            for name, value in _plain_state(part).items():
                assert torch.equal(value, state[name][start:stop]), name


def test_a_range_needs_full_members_of_the_gated_ensemble() -> None:
    for spec, unsafe in (
        (WorldModelSpec(**{**SPEC, "shared_trunk": True}), False),
        (WorldModelSpec(obs_dim=3, action_dim=2, discrete=False, members=1, model="linear-gaussian"), False),
        (WorldModelSpec(**SPEC), True),
    ):
        with pytest.raises(ValueError, match="full members"):
            WorldModelLearner(spec, RunStreams(0), unsafe_mix=unsafe, members=(0, 1))
    for bad in ((0, 0), (2, 1), (-1, 2), (0, 6)):
        with pytest.raises(ValueError, match="non-empty range"):
            WorldModelLearner(WorldModelSpec(**SPEC), RunStreams(0), members=bad)


def test_a_ranges_state_restores_only_into_the_same_range() -> None:
    spec = WorldModelSpec(**SPEC)
    part = WorldModelLearner(spec, RunStreams(1), members=(1, 3))
    part.update(_buffer())
    state = part.state_dict()
    again = WorldModelLearner(spec, RunStreams(1), members=(1, 3))
    again.load_state_dict(state)
    assert again.updates == 1
    for other in (
        WorldModelLearner(spec, RunStreams(1)),
        WorldModelLearner(spec, RunStreams(1), members=(0, 2)),
    ):
        with pytest.raises(ValueError, match=r"another range|member generators|does not fit"):
            other.load_state_dict(state)
    with pytest.raises(ValueError, match="another range"):
        WorldModelLearner(spec, RunStreams(1), members=(1, 3)).load_state_dict(
            WorldModelLearner(spec, RunStreams(1)).state_dict()
        )
