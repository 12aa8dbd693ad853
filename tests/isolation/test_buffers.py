"""Tests for ``amal_verified.isolation.buffers``: the primary and auxiliary replay buffers
(paper, Definition 2).

Transitions carry an integer id so that stored rows can be traced back: obs row
``[id, id + 0.25, id + 0.5]``, next_obs ``obs + 1000``, action ``[-id, id]``,
reward ``id / 2``, done ``id`` odd.  Some tests look at private state (the
storage tensors, write position, generator) because "a refused add leaves the
buffer exactly unchanged" is a statement about bytes the public API never shows.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import amal_verified.isolation.buffers
from amal_verified.isolation.buffers import AuxBuffer, Batch, PrimaryBuffer
from amal_verified.isolation.errors import TaggingError
from amal_verified.isolation.labels import EMPTY, Label, Source, SourceKind
from amal_verified.isolation.tagging import AuxData, PrimaryData, TaggedTensor, aux, label_of, primary

OBS = (3,)
ACT = (2,)
BUFFERS_PY = pathlib.Path(amal_verified.isolation.buffers.__file__).resolve()
REAL = Label.of(SourceKind.PRIMARY, "real-env")
AUX3 = Label.of(SourceKind.AUX, "aux-3")

Buffer = PrimaryBuffer | AuxBuffer


# ---------------------------------------------------------------------------------------- helpers


def make_primary(capacity: int = 5, seed: int = 0, **kw: Any) -> PrimaryBuffer:
    return PrimaryBuffer(capacity, obs_shape=OBS, action_shape=ACT, seed=seed, **kw)


def make_aux(capacity: int = 5, seed: int = 0, source: str = "aux-3", **kw: Any) -> AuxBuffer:
    return AuxBuffer(capacity, source=source, obs_shape=OBS, action_shape=ACT, seed=seed, **kw)


def batch_of(ids: list[int]) -> dict[str, torch.Tensor]:
    """A batch of transitions with the given ids, as plain tensors (keyword arguments of ``add``)."""
    i = torch.tensor(ids, dtype=torch.float32)
    obs = torch.stack([i, i + 0.25, i + 0.5], dim=1)
    return {
        "obs": obs,
        "action": torch.stack([-i, i], dim=1),
        "reward": i / 2,
        "next_obs": obs + 1000,
        "done": torch.tensor([x % 2 == 1 for x in ids]),
    }


def one(tid: int) -> dict[str, torch.Tensor]:
    """A single transition (no batch dimension)."""
    return {k: v[0] for k, v in batch_of([tid]).items()}


def plain(t: torch.Tensor) -> torch.Tensor:
    """The data behind a tagged tensor, so tests can compare AuxData without recording an escape."""
    return t.elem if isinstance(t, TaggedTensor) else t


def stored_ids(buf: Buffer) -> list[int]:
    """Ids of the stored rows, in storage order, read through the public state_dict."""
    return [int(x) for x in plain(buf.state_dict()["obs"])[:, 0].tolist()]


def snapshot(buf: Buffer) -> dict[str, Any]:
    """Every byte of the buffer's state, including storage rows beyond ``len``."""
    snap: dict[str, Any] = {name: t.reshape(-1).view(torch.uint8).clone() for name, t in buf._storage.items()}
    snap["pos"] = buf._pos
    snap["size"] = buf._size
    snap["generator"] = buf._generator.get_state()
    return snap


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def assert_batches_equal(a: Batch, b: Batch) -> None:
    for f in ("obs", "action", "reward", "next_obs", "done", "indices"):
        x, y = plain(getattr(a, f)), plain(getattr(b, f))
        assert x.dtype == y.dtype, f
        assert torch.equal(x, y), f


def raised_in_buffers(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """The exception was raised by buffers.py itself, not from inside torch or numpy."""
    return pathlib.Path(str(excinfo.traceback[-1].path)).resolve() == BUFFERS_PY


# ---------------------------------------------------------------------------------------- construction


def test_construction_defaults() -> None:
    p = make_primary(capacity=7)
    assert len(p) == 0
    assert p.capacity == 7
    assert p.source == Source(SourceKind.PRIMARY, "real-env")
    assert (p.obs_shape, p.action_shape) == (OBS, ACT)
    assert (p.obs_dtype, p.action_dtype) == (torch.float32, torch.float32)
    a = make_aux(source="aux-3")
    assert a.source == Source(SourceKind.AUX, "aux-3")
    assert make_primary(source="robot-2").source == Source(SourceKind.PRIMARY, "robot-2")
    assert "aux-3" in repr(a)


def test_aux_buffer_requires_its_agent_source() -> None:
    with pytest.raises(TypeError, match="source"):
        AuxBuffer(4, obs_shape=OBS, action_shape=ACT, seed=0)  # type: ignore[call-arg]


def test_storage_is_preallocated_and_never_reallocated() -> None:
    buf = make_primary(capacity=5)
    shapes = {name: tuple(t.shape) for name, t in buf._storage.items()}
    assert shapes == {"obs": (5, 3), "action": (5, 2), "reward": (5,), "next_obs": (5, 3), "done": (5,)}
    ptrs = {name: t.data_ptr() for name, t in buf._storage.items()}
    for start in range(0, 12, 3):
        buf.add(**batch_of(list(range(start, start + 3))))
    buf.add(**one(99))
    assert {name: t.data_ptr() for name, t in buf._storage.items()} == ptrs


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"capacity": 0}, ValueError, "capacity must be a positive int, got 0"),
        ({"capacity": -3}, ValueError, "capacity"),
        ({"capacity": True}, ValueError, "capacity"),
        ({"obs_shape": (0,)}, ValueError, "obs_shape must be a tuple of positive ints"),
        ({"action_shape": (2, -1)}, ValueError, "action_shape"),
        ({"obs_shape": [3]}, TypeError, "obs_shape"),
        ({"obs_dtype": torch.int64}, TypeError, "obs_dtype must be one of"),
        ({"action_dtype": torch.int32}, TypeError, "action_dtype must be one of"),
        ({"action_dtype": torch.complex64}, TypeError, "action_dtype"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**64}, ValueError, "seed"),
        ({"seed": True}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"source": ""}, ValueError, "source must be a non-empty string"),
    ],
)
def test_constructor_validation(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    args: dict[str, Any] = {"capacity": 4, "obs_shape": OBS, "action_shape": ACT, "seed": 0, **kwargs}
    capacity = args.pop("capacity")
    with pytest.raises(exc, match=match):
        PrimaryBuffer(capacity, **args)
    with pytest.raises(exc, match=match):
        AuxBuffer(capacity, **{"source": "aux-1", **args})


def test_other_supported_dtypes() -> None:
    buf = PrimaryBuffer(
        3, obs_shape=(2, 2), action_shape=(), seed=0, obs_dtype=torch.uint8, action_dtype=torch.int64
    )
    buf.add(np.full((2, 2), 255, dtype=np.uint8), 4, 1.0, np.zeros((2, 2), dtype=np.int64), False)
    b = buf.sample(2)
    assert b.obs.dtype == torch.uint8
    assert b.action.dtype == torch.int64
    assert plain(b.obs).eq(255).all()
    assert plain(b.action).eq(4).all()
    assert tuple(b.action.shape) == (2,)


# ---------------------------------------------------------------------------------------- add / sample


def test_single_transition_round_trip_primary() -> None:
    buf = make_primary()
    buf.add(**one(3))
    assert len(buf) == 1
    b = buf.sample(4)
    expected = batch_of([3, 3, 3, 3])
    for f in ("obs", "action", "reward", "next_obs", "done"):
        value = getattr(b, f)
        assert not isinstance(value, AuxData), f
        assert isinstance(value, PrimaryData), f
        assert label_of(value) is REAL, f
        assert value.dtype == expected[f].dtype, f
        assert torch.equal(plain(value), expected[f]), f
    assert type(b.indices) is torch.Tensor
    assert b.indices.dtype == torch.int64
    assert label_of(b.indices) is EMPTY
    assert b.indices.tolist() == [0, 0, 0, 0]
    assert len(b) == 4


def test_sample_from_aux_buffer_is_aux_data() -> None:
    buf = make_aux(source="aux-3")
    buf.add(**batch_of([1, 2]))
    b = buf.sample(3)
    for f in ("obs", "action", "reward", "next_obs", "done"):
        value = getattr(b, f)
        assert not isinstance(value, PrimaryData), f
        assert isinstance(value, AuxData), f
        assert label_of(value) is AUX3, f
    assert type(b.indices) is torch.Tensor
    assert label_of(b.indices) is EMPTY


def test_sampled_rows_match_their_indices() -> None:
    buf = make_primary(capacity=6, seed=3)
    buf.add(**batch_of([10, 11, 12, 13]))
    buf.add(**batch_of([14, 15, 16]))  # wraps: slot 0 now holds 16
    rows = {k: plain(v) for k, v in buf.state_dict().items() if k in ("obs", "action", "reward", "done")}
    b = buf.sample(64)
    idx = b.indices
    assert int(idx.min()) >= 0
    assert int(idx.max()) < len(buf)
    assert set(idx.tolist()) == set(range(6))  # 64 draws over 6 rows with this seed hit every row
    for f, stored in rows.items():
        assert torch.equal(plain(getattr(b, f)), stored[idx]), f
    assert torch.equal(plain(b.next_obs), rows["obs"][idx] + 1000)


def test_batch_is_frozen_and_holds_fresh_tensors() -> None:
    buf = make_primary()
    buf.add(**batch_of([1, 2, 3]))
    b = buf.sample(8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.obs = b.next_obs  # type: ignore[misc]
    storage_ptrs = {t.untyped_storage().data_ptr() for t in buf._storage.values()}
    for f in ("obs", "action", "reward", "next_obs", "done"):
        assert plain(getattr(b, f)).untyped_storage().data_ptr() not in storage_ptrs, f
    before = snapshot(buf)
    b.obs.add_(100.0)
    b.reward.mul_(3.0)
    b.done.logical_not_()
    assert_same(before, snapshot(buf))
    again = buf.sample(8)
    assert float(plain(again.obs).max()) < 100.0
    # One stored row, one sampled: indices [0] -- the case where a slice would look like a gather.
    single = make_aux(capacity=1)
    single.add(**one(4))
    b1 = single.sample(1)
    storage_ptrs = {t.untyped_storage().data_ptr() for t in single._storage.values()}
    for f in ("obs", "action", "reward", "next_obs", "done"):
        assert plain(getattr(b1, f)).untyped_storage().data_ptr() not in storage_ptrs, f


def test_accepts_numpy_arrays_and_python_scalars() -> None:
    buf = make_primary()
    obs = np.array([1.0, 1.25, 1.5])  # float64: cast to float32
    buf.add(obs, np.array([-1, 1], dtype=np.int32), 0.5, obs + 1000, np.True_)
    buf.add(
        torch.tensor([2.0, 2.25, 2.5]), torch.tensor([-2.0, 2.0]), 1, np.array([1002, 1002.25, 1002.5]), 0
    )
    buf.add(
        np.array([[3.0, 3.25, 3.5]], dtype=np.float32)[:, ::1],
        np.array([[-3.0, 3.0]], dtype=">f8"),  # big-endian
        np.array([1.5]),
        np.array([[1003.0, 1003.25, 1003.5]]),
        np.array([1]),
    )
    state = buf.state_dict()
    assert torch.equal(plain(state["obs"]), batch_of([1, 2, 3])["obs"])
    assert torch.equal(plain(state["action"]), batch_of([1, 2, 3])["action"])
    assert torch.equal(plain(state["reward"]), torch.tensor([0.5, 1.0, 1.5]))
    assert plain(state["done"]).tolist() == [True, False, True]
    assert state["obs"].dtype == torch.float32


def test_accepts_non_contiguous_and_read_only_inputs() -> None:
    buf = make_primary()
    wide = np.arange(12, dtype=np.float32).reshape(2, 6)
    obs = wide[:, ::2]  # strided view
    ro = np.ones((2, 2), dtype=np.float32)
    ro.setflags(write=False)
    buf.add(obs, ro, np.array([1.0, 2.0])[::-1], torch.zeros(3, 2).t(), np.array([True, False])[::-1])
    assert len(buf) == 2
    assert plain(buf.state_dict()["obs"]).tolist() == [[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]
    assert plain(buf.state_dict()["reward"]).tolist() == [2.0, 1.0]
    assert plain(buf.state_dict()["done"]).tolist() == [False, True]


def test_discrete_action_buffer_takes_ints_and_refuses_floats() -> None:
    buf = PrimaryBuffer(4, obs_shape=OBS, action_shape=(), seed=0, action_dtype=torch.int64)
    o = torch.zeros(3)
    buf.add(o, 2, 0.0, o, False)
    buf.add(o, np.int32(3), 0.0, o, False)
    buf.add(
        torch.zeros(2, 3),
        torch.tensor([4, 5], dtype=torch.int16),
        torch.zeros(2),
        torch.zeros(2, 3),
        torch.zeros(2),
    )
    assert plain(buf.state_dict()["action"]).tolist() == [2, 3, 4, 5]
    before = snapshot(buf)
    cases: list[tuple[Any, type[Exception], str]] = [
        (torch.tensor(1.0), TypeError, r"action must hold integers \(int64 storage\), got dtype float32"),
        (np.float64(1.0), TypeError, "got dtype float64"),
        (1.0, TypeError, "got dtype float64"),
        (True, TypeError, "action must be numeric.*got dtype bool"),
        (np.array(2**63, dtype=np.uint64), ValueError, "does not fit in int64"),
    ]
    for bad, exc, match in cases:
        with pytest.raises(exc, match=match) as excinfo:
            buf.add(o, bad, 0.0, o, False)
        assert raised_in_buffers(excinfo)
        assert_same(before, snapshot(buf))


def test_uint8_obs_range_is_checked() -> None:
    buf = PrimaryBuffer(2, obs_shape=(2,), action_shape=(1,), seed=0, obs_dtype=torch.uint8)
    before = snapshot(buf)
    with pytest.raises(
        ValueError, match=r"obs holds values in \[0, 256\], outside the uint8 range \[0, 255\]"
    ):
        buf.add(torch.tensor([0, 256]), torch.zeros(1), 0.0, torch.tensor([0, 1]), False)
    with pytest.raises(ValueError, match="next_obs holds values in"):
        buf.add(torch.tensor([0, 1]), torch.zeros(1), 0.0, np.array([-1, 1]), False)
    with pytest.raises(TypeError, match=r"obs must hold integers \(uint8 storage\)"):
        buf.add(torch.tensor([0.0, 1.0]), torch.zeros(1), 0.0, torch.tensor([0, 1]), False)
    assert_same(before, snapshot(buf))


def test_ring_buffer_overwrites_oldest() -> None:
    buf = make_primary(capacity=5)
    for tid in range(7):
        buf.add(**one(tid))
    assert len(buf) == 5
    assert stored_ids(buf) == [5, 6, 2, 3, 4]
    assert buf.state_dict()["pos"] == 2
    buf.add(**batch_of([7, 8, 9, 10]))  # wraps around the end of storage
    assert stored_ids(buf) == [10, 6, 7, 8, 9]
    buf.add(**batch_of([20, 21, 22, 23, 24]))  # exactly capacity
    assert stored_ids(buf) == [24, 20, 21, 22, 23]
    assert buf.state_dict()["pos"] == 1


def test_sample_argument_errors() -> None:
    buf = make_aux()
    with pytest.raises(ValueError, match=r"AuxBuffer\(source='aux-3'\).sample: the buffer is empty"):
        buf.sample(1)
    buf.add(**one(1))
    for bad in (0, -4):
        with pytest.raises(ValueError, match=f"batch_size must be at least 1, got {bad}"):
            buf.sample(bad)
    with pytest.raises(TypeError, match="batch_size must be an int, got bool"):
        buf.sample(True)
    with pytest.raises(TypeError, match="batch_size"):
        buf.sample(2.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- refusals


def _replace(field: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(t: dict[str, Any]) -> dict[str, Any]:
        return {**t, field: value}

    return edit


def _nan_at(field: str, row: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(t: dict[str, Any]) -> dict[str, Any]:
        bad = t[field].clone()
        bad[row] = float("nan")
        return {**t, field: bad}

    return edit


# Each case edits a valid batch of two transitions (ids 7, 8) into an invalid add.
REFUSALS: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], type[Exception], str]] = [
    (
        "obs shape",
        _replace("obs", torch.zeros(2, 4)),
        ValueError,
        r"obs has shape \(2, 4\); expected \(3,\) for one transition or \(n, 3\) for a batch of n",
    ),
    (
        "action row shape",
        _replace("action", torch.zeros(2, 3)),
        ValueError,
        r"action has shape \(2, 3\); expected \(2, 2\) \(obs is a batch of 2\)",
    ),
    (
        "batch sizes disagree",
        _replace("next_obs", torch.zeros(3, 3)),
        ValueError,
        r"batch sizes disagree: obs has 2 transitions but next_obs has 3",
    ),
    (
        "reward per row not scalar",
        _replace("reward", torch.zeros(2, 1)),
        ValueError,
        r"reward has shape \(2, 1\); expected \(2,\)",
    ),
    ("done scalar for a batch", _replace("done", False), ValueError, r"done has shape \(\); expected \(2,\)"),
    ("nan obs", _nan_at("obs", 1), ValueError, r"obs contains a non-finite value nan \(first at batch row 1"),
    (
        "inf next_obs",
        _replace("next_obs", torch.tensor([[0.0, 0, 0], [0, float("inf"), 0]])),
        ValueError,
        r"next_obs contains a non-finite value inf \(first at batch row 1",
    ),
    (
        "-inf action",
        _replace("action", torch.tensor([[float("-inf"), 0.0], [0.0, 0.0]])),
        ValueError,
        r"action contains a non-finite value -inf \(first at batch row 0",
    ),
    (
        "nan reward",
        _replace("reward", np.array([0.0, np.nan])),
        ValueError,
        "reward contains a non-finite value",
    ),
    (
        "overflow on cast",
        _replace("obs", np.full((2, 3), 1e300)),
        ValueError,
        r"obs contains a non-finite value inf after conversion to float32",
    ),
    (
        "done not 0/1",
        _replace("done", torch.tensor([1, 2])),
        ValueError,
        r"done must be bool or 0/1, got 2 at batch row 1",
    ),
    (
        "done fractional",
        _replace("done", np.array([0.5, 1.0])),
        ValueError,
        "done must be bool or 0/1, got 0.5",
    ),
    ("done nan", _replace("done", np.array([0.0, np.nan])), ValueError, "done must be bool or 0/1"),
    (
        "bool reward",
        _replace("reward", torch.tensor([True, False])),
        TypeError,
        r"reward must be numeric \(float32 storage\), got dtype bool",
    ),
    (
        "complex obs",
        _replace("obs", torch.zeros(2, 3, dtype=torch.complex64)),
        TypeError,
        "obs must hold real numbers or bools, got dtype complex64",
    ),
    (
        "object array",
        _replace("action", np.array([[None, 1], [2, 3]], dtype=object)),
        TypeError,
        "action must hold real numbers or bools, got numpy dtype object",
    ),
    ("string array", _replace("reward", np.array(["a", "b"])), TypeError, "reward must hold real numbers"),
    ("uint16 tensor", _replace("reward", torch.zeros(2, dtype=torch.uint16)), TypeError, "got dtype uint16"),
    ("meta device", _replace("obs", torch.zeros(2, 3, device="meta")), TypeError, "obs must be on the CPU"),
    ("sparse", _replace("obs", torch.zeros(2, 3).to_sparse()), TypeError, "obs must be a dense tensor"),
    (
        "huge python int",
        lambda t: {**one(7), "reward": 2**70},
        ValueError,
        "reward = 1180591620717411303424 does not fit",
    ),
    (
        "batch larger than capacity",
        lambda t: batch_of(list(range(6))),
        ValueError,
        "batch of 6 transitions is larger than the capacity 5",
    ),
    (
        "empty batch",
        lambda t: {k: v[:0] for k, v in t.items()},
        ValueError,
        r"empty batch \(obs has shape \(0, 3\)\)",
    ),
    (
        "only the last field is bad",
        _replace("done", torch.tensor([0.0, 3.0])),
        ValueError,
        "done must be bool or 0/1",
    ),
    (
        "single obs, batched reward",
        lambda t: {**one(7), "reward": torch.zeros(1)},
        ValueError,
        r"reward has shape \(1,\); expected \(\) \(obs is one transition\)",
    ),
]


@pytest.mark.parametrize(("name", "edit", "exc", "match"), REFUSALS, ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("make", [make_primary, make_aux], ids=["primary", "aux"])
def test_refused_add_leaves_buffer_exactly_unchanged(
    make: Callable[..., Buffer],
    name: str,
    edit: Callable[[dict[str, Any]], dict[str, Any]],
    exc: type[Exception],
    match: str,
) -> None:
    buf = make(capacity=5)
    buf.add(**batch_of([1, 2, 3]))
    buf.sample(2)  # the generator has moved off its seed state
    before = snapshot(buf)
    bad = edit(batch_of([7, 8]))
    with pytest.raises(exc, match=match) as excinfo:
        buf.add(**bad)
    assert raised_in_buffers(excinfo), excinfo.traceback[-1]
    assert_same(before, snapshot(buf))
    # ...and the buffer still works: the valid version of the same add goes through.
    buf.add(**batch_of([7, 8]))
    assert stored_ids(buf) == [1, 2, 3, 7, 8]


@pytest.mark.parametrize(
    ("field", "value", "got", "fix"),
    [
        ("obs", "abc", "a str", r"torch\.as_tensor\(obs\)"),
        (
            "action",
            [0.0, 1.0],
            "a list of length 2",
            r"torch\.as_tensor\(action\) or numpy\.asarray\(action\)",
        ),
        ("reward", None, "None", "pass a number, NumPy array or tensor for reward"),
        ("done", {"x": 1}, "a dict", "pass the array itself, not a dict"),
        (
            "done",
            (np.array(False), np.array(True)),
            "a tuple of length 2",
            r"not a \(terminated, truncated\) pair, e\.g\. torch\.as_tensor\(terminated\)",
        ),
    ],
)
@pytest.mark.parametrize("make", [make_primary, make_aux], ids=["primary", "aux"])
def test_non_numeric_types_are_one_line_type_errors(
    make: Callable[..., Buffer], field: str, value: Any, got: str, fix: str
) -> None:
    """A list, None, dict or (terminated, truncated) pair gets one line naming the argument, what was
    received and what to pass; the buffer is unchanged."""
    buf = make()
    buf.add(**one(1))
    before = snapshot(buf)
    with pytest.raises(TypeError) as excinfo:
        buf.add(**{**one(2), field: value})
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{type(buf).__name__}.add: {field} must be a torch.Tensor, NumPy array or")
    assert f"got {got}; " in message
    assert re.search(fix, message), message
    assert raised_in_buffers(excinfo), excinfo.traceback[-1]
    assert_same(before, snapshot(buf))


def test_add_keeps_beartype_and_accepts_keywords() -> None:
    """The one-line check sits in front of the beartype-checked method, which stays in place."""
    assert getattr(PrimaryBuffer.add.__wrapped__, "__beartype_wrapper", False)  # type: ignore[attr-defined]
    buf = make_primary()
    buf.add(obs=one(1)["obs"], action=one(1)["action"], reward=0.5, next_obs=one(1)["next_obs"], done=True)
    assert len(buf) == 1


# ---------------------------------------------------------------------------------------- labels

FIELDS = ("obs", "action", "reward", "next_obs", "done")


def _tagged(kind: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` (a fresh copy) with the label named by ``kind``."""
    t = t.clone()
    if kind == "plain":
        return t
    if kind == "real-env":
        return primary(t, source="real-env")
    if kind == "primary:sim":
        return primary(t, source="sim")
    if kind.startswith("aux-"):
        return aux(t, source=kind)
    if kind == "mixed real-env+aux-3":
        return primary(t, source="real-env") + aux(torch.zeros_like(t), source="aux-3")
    if kind == "plain alias of aux-3 memory":
        aux(t, source="aux-3")  # labels t's storage; t itself stays a plain tensor
        return t
    if kind == "plain alias of real-env memory":
        primary(t, source="real-env")
        return t
    raise AssertionError(kind)


PRIMARY_REFUSES = ["aux-3", "mixed real-env+aux-3", "primary:sim", "plain alias of aux-3 memory"]
PRIMARY_ACCEPTS = ["plain", "real-env", "plain alias of real-env memory"]
AUX3_REFUSES = ["real-env", "aux-4", "mixed real-env+aux-3", "primary:sim", "plain alias of real-env memory"]
AUX3_ACCEPTS = ["plain", "aux-3", "plain alias of aux-3 memory"]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    ("make", "kind"),
    [(make_primary, k) for k in PRIMARY_REFUSES] + [(make_aux, k) for k in AUX3_REFUSES],
)
def test_wrong_label_is_refused(make: Callable[..., Buffer], kind: str, field: str) -> None:
    buf = make()
    buf.add(**batch_of([1, 2]))
    before = snapshot(buf)
    transition = batch_of([5, 6])
    transition[field] = _tagged(kind, transition[field])
    with pytest.raises(TaggingError, match=f"refuses {field}: it is labelled") as excinfo:
        buf.add(**transition)
    assert str(buf.source) in str(excinfo.value)
    assert raised_in_buffers(excinfo)
    assert_same(before, snapshot(buf))


@pytest.mark.parametrize(
    ("make", "kind"),
    [(make_primary, k) for k in PRIMARY_ACCEPTS] + [(make_aux, k) for k in AUX3_ACCEPTS],
)
def test_own_label_and_untagged_data_are_accepted(make: Callable[..., Buffer], kind: str) -> None:
    buf = make()
    transition = {f: _tagged(kind, v) for f, v in batch_of([5, 6]).items()}
    buf.add(**transition)
    assert stored_ids(buf) == [5, 6]
    assert label_of(buf.sample(2).obs) is Label((buf.source,))


def test_refusal_names_the_foreign_sources() -> None:
    buf = make_primary()
    with pytest.raises(
        TaggingError, match=r"which includes aux:aux-3; this buffer accepts only untagged data"
    ):
        buf.add(**{**one(1), "obs": aux(torch.zeros(3), source="aux-3")})
    other = make_aux(source="aux-3")
    with pytest.raises(TaggingError, match=r"which includes aux:aux-4"):
        other.add(**{**one(1), "reward": aux(torch.tensor(1.0), source="aux-4")})


# ---------------------------------------------------------------------------------------- generators


def _filled(seed: int, make: Callable[..., Buffer] = make_primary) -> Buffer:
    buf = make(capacity=16, seed=seed)
    buf.add(**batch_of(list(range(16))))
    return buf


def test_same_seed_same_draws_different_seed_different_draws() -> None:
    a, b, c = _filled(1), _filled(1), _filled(2)
    da = [a.sample(8).indices for _ in range(3)]
    db = [b.sample(8).indices for _ in range(3)]
    dc = [c.sample(8).indices for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(da, db, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(da, dc, strict=True))


def test_sampling_another_buffer_does_not_change_draws() -> None:
    reference, a = _filled(7), _filled(7)
    other_primary, other_aux = _filled(7), _filled(7, make_aux)  # same seed: the worst case for sharing
    expected = [reference.sample(5) for _ in range(4)]
    got = []
    for _ in range(4):
        got.append(a.sample(5))
        other_primary.sample(11)
        other_aux.sample(3)
    for e, g in zip(expected, got, strict=True):
        assert_batches_equal(e, g)


def test_sampling_never_touches_the_global_rng() -> None:
    buf = _filled(0)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    buf.sample(32)
    buf.add(**one(3))
    assert torch.equal(before, torch.get_rng_state())
    # ... and the global RNG does not influence the buffer either.
    x, y = _filled(5), _filled(5)
    torch.manual_seed(1)
    bx = x.sample(9)
    torch.manual_seed(2)
    torch.rand(100)
    by = y.sample(9)
    assert_batches_equal(bx, by)


def test_sample_uses_only_its_generator_and_touches_o_batch_rows() -> None:
    """Capacity 10^6: allocation works, and sampling does O(batch) work.

    Every aten op run by ``sample`` is recorded: the random draw must name a
    generator (``randint.low_generator``), and the only ops that see the
    capacity-sized storage are the ``index_select`` s gathering the batch; no op
    produces more than ``batch_size`` rows.
    """
    capacity, batch_size = 10**6, 32
    buf = PrimaryBuffer(capacity, obs_shape=(4,), action_shape=(1,), seed=0)
    assert buf.capacity == capacity
    assert all(t.shape[0] == capacity for t in buf._storage.values())
    n = 1000
    buf.add(
        torch.ones(n, 4),
        torch.zeros(n, 1),
        torch.zeros(n),
        torch.ones(n, 4),
        torch.zeros(n, dtype=torch.bool),
    )

    with _OpRecorder() as rec:
        b = buf.sample(batch_size)
    assert len(b) == batch_size
    names = [name for name, _, _ in rec.calls]
    assert "aten.randint.low_generator" in names
    assert not any(
        name.startswith(("aten.randint.low", "aten.randint.default")) and "generator" not in name
        for name in names
    )
    for name, in_rows, out_rows in rec.calls:
        assert out_rows <= batch_size, (name, out_rows)
        if in_rows > batch_size:
            assert name == "aten.index_select.default", (name, in_rows)
    assert names.count("aten.index_select.default") == 5
    assert plain(b.obs).eq(1).all()


class _OpRecorder(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Records (op name, largest leading dim among tensor inputs, among outputs) of every aten op."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.calls: list[tuple[str, int, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))

        def rows(tree: Any) -> int:
            return max(
                [t.shape[0] if t.dim() else 1 for t in tree_leaves(tree) if isinstance(t, torch.Tensor)],
                default=0,
            )

        self.calls.append((str(func), rows((args, kwargs)), rows(out)))
        return out


# ---------------------------------------------------------------------------------------- state dict


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    blob = io.BytesIO()
    torch.save(state, blob)
    blob.seek(0)
    loaded: dict[str, Any] = torch.load(blob, weights_only=False)
    return loaded


@pytest.mark.parametrize("make", [make_primary, make_aux], ids=["primary", "aux"])
@pytest.mark.parametrize("n_added", [3, 12])  # not yet full / wrapped around
def test_state_dict_round_trip_resumes_bit_for_bit(make: Callable[..., Buffer], n_added: int) -> None:
    a = make(capacity=7, seed=11)
    for tid in range(n_added - 2):
        a.add(**one(tid))
    a.add(**batch_of([100, 101]))
    for _ in range(3):
        a.sample(4)
    state = _round_trip(a.state_dict())
    b = make(capacity=7, seed=999)
    b.add(**one(55))
    b.load_state_dict(state)
    assert len(b) == len(a)
    assert_same(snapshot(a), snapshot(b))  # rows beyond len are zero in both
    for step in range(5):
        assert_batches_equal(a.sample(6), b.sample(6))
        a.add(**one(200 + step))
        b.add(**one(200 + step))
    assert stored_ids(a) == stored_ids(b)
    assert_batches_equal(a.sample(9), b.sample(9))


def test_empty_buffer_state_round_trip() -> None:
    a, b = make_aux(seed=4), make_aux(seed=5)
    b.add(**one(1))
    b.load_state_dict(_round_trip(a.state_dict()))
    assert len(b) == 0
    with pytest.raises(ValueError, match="empty"):
        b.sample(1)
    a.add(**one(2))
    b.add(**one(2))
    assert_batches_equal(a.sample(3), b.sample(3))


def test_state_dict_holds_tagged_copies() -> None:
    buf = make_primary()
    buf.add(**batch_of([1, 2]))
    state = buf.state_dict()
    assert state["size"] == 2
    assert state["pos"] == 2
    assert type(state["generator_state"]) is torch.Tensor
    before = snapshot(buf)
    for f in FIELDS:
        assert label_of(state[f]) is REAL, f
        assert tuple(state[f].shape)[:1] == (2,), f
    state["obs"].add_(5.0)
    state["done"].logical_not_()
    assert_same(before, snapshot(buf))


def test_state_dict_cannot_launder_aux_data_into_a_primary_buffer() -> None:
    donor = make_aux(source="aux-3")
    donor.add(**batch_of([1, 2]))
    state = donor.state_dict()
    victim = make_primary()
    with pytest.raises(TaggingError):
        victim.add(**{f: state[f] for f in FIELDS})
    with pytest.raises(
        TaggingError, match=r"holds data of source aux:aux-3; this buffer holds primary:real-env"
    ):
        victim.load_state_dict(state)
    assert len(victim) == 0
    other_aux = make_aux(source="aux-4")
    with pytest.raises(TaggingError, match="aux:aux-3"):
        other_aux.load_state_dict(state)
    assert len(other_aux) == 0


def test_load_state_dict_accepts_untagged_contents_and_list_shapes() -> None:
    a = make_primary()
    a.add(**batch_of([4, 5, 6]))
    state = a.state_dict()
    state = {**state, **{f: plain(state[f]).clone() for f in FIELDS}, "obs_shape": [3]}
    b = make_primary(seed=1)
    b.load_state_dict(state)
    assert stored_ids(b) == [4, 5, 6]
    assert_batches_equal(a.sample(5), b.sample(5))


def _edit_state(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(s: dict[str, Any]) -> dict[str, Any]:
        return {**s, key: value(s) if callable(value) else value}

    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda s: {k: v for k, v in s.items() if k != key}


# Each case edits the (valid) state of a primary buffer of capacity 7 holding 5 transitions.
BAD_STATES: list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]], type[Exception], str]] = [
    ("missing key", _drop("pos"), ValueError, r"missing keys \['pos'\]"),
    ("extra key", _edit_state("extra", 1), ValueError, r"unexpected keys \['extra'\]"),
    ("format", _edit_state("format", 2), ValueError, "unsupported state format 2"),
    ("other primary source", _edit_state("source", "sim"), TaggingError, "holds data of source primary:sim"),
    ("aux kind", _edit_state("kind", "aux"), TaggingError, "holds data of source aux:real-env"),
    ("capacity", _edit_state("capacity", 8), ValueError, "capacity is 8, this buffer has 7"),
    ("obs_shape", _edit_state("obs_shape", (4,)), ValueError, r"obs_shape is \(4,\), this buffer has \(3,\)"),
    ("action_dtype", _edit_state("action_dtype", "int64"), ValueError, "action_dtype is 'int64'"),
    ("size too large", _edit_state("size", 8), ValueError, r"size must be an int in \[0, 7\], got 8"),
    ("size not int", _edit_state("size", 5.0), ValueError, "size must be an int"),
    ("pos out of range", _edit_state("pos", 7), ValueError, r"pos must be an int in \[0, 7\), got 7"),
    (
        "pos inconsistent",
        _edit_state("pos", 2),
        ValueError,
        "inconsistent ring state: pos 2 must equal size 5",
    ),
    (
        "obs rows",
        _edit_state("obs", lambda s: s["obs"][:4]),
        ValueError,
        r"obs has shape \(4, 3\), expected \(5, 3\)",
    ),
    (
        "obs dtype",
        _edit_state("obs", lambda s: plain(s["obs"]).double()),
        TypeError,
        "obs has dtype float64, expected float32",
    ),
    (
        "done dtype",
        _edit_state("done", lambda s: plain(s["done"]).to(torch.uint8)),
        TypeError,
        "done has dtype uint8, expected bool",
    ),
    (
        "nan reward",
        _edit_state("reward", torch.tensor([0.0, 1, float("nan"), 2, 3])),
        ValueError,
        r"reward contains a non-finite value nan \(first at batch row 2",
    ),
    (
        "aux-tagged obs",
        _edit_state("obs", lambda s: aux(plain(s["obs"]).clone(), source="aux-3")),
        TaggingError,
        r"obs is labelled Label\(aux:aux-3\)",
    ),
    (
        "other-primary obs",
        _edit_state("obs", lambda s: primary(plain(s["obs"]).clone(), source="sim")),
        TaggingError,
        "primary:sim",
    ),
    (
        "numpy obs",
        _edit_state("obs", lambda s: plain(s["obs"]).numpy()),
        TypeError,
        "obs must be a tensor, got ndarray",
    ),
    (
        "generator dtype",
        _edit_state("generator_state", lambda s: s["generator_state"].long()),
        ValueError,
        "generator_state must be a plain uint8 CPU tensor",
    ),
    (
        "generator shape",
        _edit_state("generator_state", lambda s: s["generator_state"][:-1]),
        ValueError,
        "generator_state must be a plain uint8 CPU tensor",
    ),
    (
        "generator tagged",
        _edit_state("generator_state", lambda s: primary(s["generator_state"].clone())),
        ValueError,
        "generator_state must be a plain uint8 CPU tensor",
    ),
]


@pytest.mark.parametrize(("name", "edit", "exc", "match"), BAD_STATES, ids=[r[0] for r in BAD_STATES])
def test_bad_state_is_refused_and_buffer_unchanged(
    name: str, edit: Callable[[dict[str, Any]], dict[str, Any]], exc: type[Exception], match: str
) -> None:
    donor = make_primary(capacity=7, seed=1)
    donor.add(**batch_of([10, 11, 12, 13, 14]))
    state = edit(donor.state_dict())
    buf = make_primary(capacity=7, seed=2)
    buf.add(**batch_of([1, 2]))
    buf.sample(3)
    before = snapshot(buf)
    with pytest.raises(exc, match=match) as excinfo:
        buf.load_state_dict(state)
    assert raised_in_buffers(excinfo)
    assert_same(before, snapshot(buf))
    buf.load_state_dict(donor.state_dict())  # the unedited state loads
    assert stored_ids(buf) == [10, 11, 12, 13, 14]


def test_buffer_operations_on_aux_data_record_no_escapes_even_in_strict_mode() -> None:
    """Checking, storing and sampling aux data never turns it into untracked Python values."""
    import amal_verified as av

    before = av.escapes()
    previous = av.set_strict(True)
    try:
        buf = make_aux(source="aux-3")
        data = {f: aux(v, source="aux-3") for f, v in batch_of([1, 2, 3]).items()}
        buf.add(**data)
        buf.add(**one(4))
        for bad in (torch.full((3, 3), float("nan")), torch.zeros(3, 4)):
            with pytest.raises(ValueError, match="obs"):
                buf.add(**{**data, "obs": aux(bad, source="aux-3")})
        with pytest.raises(ValueError, match="done must be bool or 0/1"):
            buf.add(**{**data, "done": aux(torch.tensor([0.0, 1.0, 2.0]), source="aux-3")})
        batch = buf.sample(4)
        other = make_aux(source="aux-3", seed=5)
        other.load_state_dict(buf.state_dict())
        with pytest.raises(TaggingError):
            make_primary().add(**{f: getattr(batch, f) for f in FIELDS})
    finally:
        av.set_strict(previous)
    assert av.escapes() == before


# ---------------------------------------------------------------------------------------- properties


def _nan_obs(t: dict[str, Any]) -> dict[str, Any]:
    return {**t, "obs": t["obs"] * float("nan")}


def _reward_extra_dim(t: dict[str, Any]) -> dict[str, Any]:
    return {**t, "reward": t["reward"].unsqueeze(-1)}


def _aux_action(t: dict[str, Any]) -> dict[str, Any]:
    return {**t, "action": aux(t["action"].clone(), source="aux-1")}


def _done_two(t: dict[str, Any]) -> dict[str, Any]:
    return {**t, "done": torch.full_like(t["reward"], 2.0)}


def _complex_next_obs(t: dict[str, Any]) -> dict[str, Any]:
    return {**t, "next_obs": t["next_obs"].to(torch.complex64)}


CORRUPTIONS = [_nan_obs, _reward_extra_dim, _aux_action, _done_two, _complex_next_obs]


@given(
    capacity=st.integers(1, 6),
    ops=st.lists(
        st.tuples(st.integers(1, 6), st.booleans(), st.sampled_from([None, None, *CORRUPTIONS])),
        max_size=12,
    ),
)
def test_matches_a_reference_ring_buffer(
    capacity: int, ops: list[tuple[int, bool, Callable[[dict[str, Any]], dict[str, Any]] | None]]
) -> None:
    """Random valid and invalid adds against a list-based model: refused adds change nothing."""
    buf = make_primary(capacity=capacity)
    slots: list[int] = [0] * capacity
    pos = size = next_id = 0
    for n, single, corrupt in ops:
        ids = list(range(next_id, next_id + (1 if single else min(n, capacity))))
        next_id += len(ids)
        transition: dict[str, Any] = one(ids[0]) if single else batch_of(ids)
        if corrupt is not None:
            before = snapshot(buf)
            with pytest.raises((ValueError, TypeError)):
                buf.add(**corrupt(transition))
            assert_same(before, snapshot(buf))
            continue
        buf.add(**transition)
        for i in ids:
            slots[pos] = i
            pos = (pos + 1) % capacity
            size = min(size + 1, capacity)
        assert len(buf) == size
        assert stored_ids(buf) == slots[:size]
        assert buf.state_dict()["pos"] == pos


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def transition_batches(draw: st.DrawFn) -> dict[str, np.ndarray[Any, Any]]:
    from hypothesis.extra.numpy import arrays

    n = draw(st.integers(1, 8))
    return {
        "obs": draw(arrays(np.float32, (n, 3), elements=finite32)),
        "action": draw(arrays(np.float32, (n, 2), elements=finite32)),
        "reward": draw(arrays(np.float32, (n,), elements=finite32)),
        "next_obs": draw(arrays(np.float32, (n, 3), elements=finite32)),
        "done": draw(arrays(np.bool_, (n,))),
    }


@given(batches=st.lists(transition_batches(), min_size=1, max_size=4), capacity=st.integers(1, 10))
def test_batch_add_equals_one_by_one_and_stores_values_exactly(
    batches: list[dict[str, np.ndarray[Any, Any]]], capacity: int
) -> None:
    batched, single = make_aux(capacity=capacity), make_aux(capacity=capacity)
    for b in batches:
        n = b["obs"].shape[0]
        if n > capacity:
            with pytest.raises(ValueError, match="larger than the capacity"):
                batched.add(**b)
            continue
        batched.add(**b)
        for i in range(n):
            single.add(**{k: v[i] for k, v in b.items()})
        last = {k: torch.from_numpy(v) for k, v in b.items()}
        state = batched.state_dict()
        rows = [(batched._pos - n + i) % capacity for i in range(n)]
        for f in FIELDS:
            assert torch.equal(plain(state[f])[rows], last[f]), f
    assert_same(snapshot(batched), snapshot(single))
