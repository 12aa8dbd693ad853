"""Replay buffers that keep primary and auxiliary transitions apart (paper, Definition 2).

The paper keeps one primary buffer ``D_P`` and one buffer ``D_A^i`` per auxiliary
agent ``i``.  Here those are :class:`PrimaryBuffer` and :class:`AuxBuffer`.  A
buffer is where data gets its label: it accepts untagged tensors, NumPy arrays
and Python scalars, and data already labelled with *its own* source, and it
refuses (with :class:`~amal_verified.isolation.errors.TaggingError`) anything labelled
with another source.  :meth:`sample` hands the data back tagged with the
buffer's source, so a world-model update fed from an :class:`AuxBuffer` is
visibly auxiliary.

Contract shared by both buffers:

- Storage is preallocated at construction (``torch.zeros``, ``capacity`` rows
  per field) and never reallocated; when full, new transitions overwrite the
  oldest (a ring buffer).
- :meth:`add` validates *every* field (type, dtype, shape, batch size, finite
  values, label) before writing anything.  A refused ``add`` leaves the buffer
  exactly as it was: size, write position, stored bytes and generator state.
- Each buffer owns a ``torch.Generator`` seeded from ``seed``.  Sampling draws
  from that generator only: it never reads or advances the global torch RNG,
  and sampling one buffer never changes what another buffer samples.
- :meth:`sample` costs O(batch_size): one ``torch.randint`` over ``[0, len)``
  and one ``index_select`` per field.
- :meth:`state_dict` / :meth:`load_state_dict` capture and restore contents,
  write position, size and generator state, so a resumed buffer samples bit for
  bit what an uninterrupted one would.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias, final

import numpy as np
import numpy.typing as npt
import torch

from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.errors import TaggingError
from amal_verified.isolation.escapes import declassifying, record_escape
from amal_verified.isolation.labels import Label, Source, SourceKind
from amal_verified.isolation.tagging import TaggedTensor, aux, label_of, primary

__all__ = ["AuxBuffer", "Batch", "PrimaryBuffer"]

ArrayLike: TypeAlias = torch.Tensor | npt.NDArray[Any] | np.generic | bool | int | float
"""What :meth:`add` accepts for each field: a tensor, a NumPy array or scalar, or a Python scalar."""

_FLOAT_DTYPES: Final = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_OBS_DTYPES: Final = (*_FLOAT_DTYPES, torch.uint8)
_ACTION_DTYPES: Final = (*_FLOAT_DTYPES, torch.int64)
_REWARD_DTYPE: Final = torch.float32
_DONE_DTYPE: Final = torch.bool
# Integer tensors accepted as input (wider unsigned types have too few torch kernels).
_INT_INPUT_DTYPES: Final = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_FIELDS: Final = ("obs", "action", "reward", "next_obs", "done")
_STATE_FORMAT: Final = 1
_STATE_KEYS: Final = frozenset(
    {
        "format",
        "kind",
        "source",
        "capacity",
        "obs_shape",
        "action_shape",
        "obs_dtype",
        "action_dtype",
        "size",
        "pos",
        "generator_state",
        *_FIELDS,
    }
)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_SEED_LIMIT: Final = 2**64


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shape_str(shape: tuple[int, ...] | torch.Size) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@final
@dataclass(frozen=True, slots=True, eq=False)
class Batch:
    """A sample of ``B`` transitions.

    ``obs``, ``action``, ``reward``, ``next_obs`` and ``done`` are fresh tensors
    (never views into the buffer's storage) tagged with the buffer's source:
    ``PrimaryData`` from a :class:`PrimaryBuffer`, ``AuxData`` from an
    :class:`AuxBuffer`.  Shapes: ``obs``/``next_obs`` ``(B, *obs_shape)``,
    ``action`` ``(B, *action_shape)``, ``reward`` ``(B,)`` float32, ``done``
    ``(B,)`` bool.  ``indices`` is a plain (untagged) int64 tensor ``(B,)`` of
    the storage rows drawn, in ``[0, len(buffer))``.
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    done: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    row_shape: tuple[int, ...]
    dtype: torch.dtype


@checked
class _TransitionBuffer(abc.ABC):
    """Shared implementation of :class:`PrimaryBuffer` and :class:`AuxBuffer` (private)."""

    _KIND: ClassVar[SourceKind]

    def __init__(
        self,
        capacity: int,
        *,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        source: str,
        seed: int,
        obs_dtype: torch.dtype,
        action_dtype: torch.dtype,
    ) -> None:
        cls = type(self).__name__
        if isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"{cls}: capacity must be a positive int, got {capacity!r}")
        for what, shape in (("obs_shape", obs_shape), ("action_shape", action_shape)):
            if any(isinstance(d, bool) or d < 1 for d in shape):
                raise ValueError(f"{cls}: {what} must be a tuple of positive ints, got {tuple(shape)!r}")
        if obs_dtype not in _OBS_DTYPES:
            raise TypeError(
                f"{cls}: obs_dtype must be one of {[_dtype_name(d) for d in _OBS_DTYPES]}, got {obs_dtype}"
            )
        if action_dtype not in _ACTION_DTYPES:
            raise TypeError(
                f"{cls}: action_dtype must be one of {[_dtype_name(d) for d in _ACTION_DTYPES]}, "
                f"got {action_dtype}"
            )
        if isinstance(seed, bool) or not 0 <= seed < _SEED_LIMIT:
            raise ValueError(f"{cls}: seed must be an int in [0, 2**64), got {seed!r}")
        if not source:
            raise ValueError(f"{cls}: source must be a non-empty string, got {source!r}")

        self._source: Final = Source(self._KIND, source)
        self._label: Final = Label((self._source,))
        self._capacity: Final = int(capacity)
        obs_row = tuple(int(d) for d in obs_shape)
        self._fields: Final = (
            _Field("obs", obs_row, obs_dtype),
            _Field("action", tuple(int(d) for d in action_shape), action_dtype),
            _Field("reward", (), _REWARD_DTYPE),
            _Field("next_obs", obs_row, obs_dtype),
            _Field("done", (), _DONE_DTYPE),
        )
        # Preallocated once; zero-filled so the memory is committed up front and
        # never holds uninitialised bytes.  Keyed by field name, in _FIELDS order.
        self._storage: Final[dict[str, torch.Tensor]] = {
            f.name: torch.zeros((self._capacity, *f.row_shape), dtype=f.dtype) for f in self._fields
        }
        self._generator: Final = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)
        self._pos = 0  # next row written
        self._size = 0  # rows holding transitions: [0, size)

    # ------------------------------------------------------------------ properties

    @abc.abstractmethod
    def _tag(self, t: torch.Tensor) -> torch.Tensor:
        """Wrap a fresh plain tensor with this buffer's label."""

    def __len__(self) -> int:
        """Number of transitions held (at most ``capacity``)."""
        return self._size

    @property
    def capacity(self) -> int:
        """Maximum number of transitions held; older ones are overwritten beyond it."""
        return self._capacity

    @property
    def source(self) -> Source:
        """The source this buffer's data is labelled with."""
        return self._source

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self._fields[0].row_shape

    @property
    def action_shape(self) -> tuple[int, ...]:
        return self._fields[1].row_shape

    @property
    def obs_dtype(self) -> torch.dtype:
        return self._fields[0].dtype

    @property
    def action_dtype(self) -> torch.dtype:
        return self._fields[1].dtype

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(source={self._source.name!r}, size={self._size}, "
            f"capacity={self._capacity}, obs_shape={self.obs_shape}, action_shape={self.action_shape}, "
            f"obs_dtype={self.obs_dtype}, action_dtype={self.action_dtype})"
        )

    # ------------------------------------------------------------------ add

    def add(
        self,
        obs: ArrayLike,
        action: ArrayLike,
        reward: ArrayLike,
        next_obs: ArrayLike,
        done: ArrayLike,
    ) -> None:
        """Store one transition, or a batch of them along a leading dimension.

        One transition: ``obs``/``next_obs`` of shape ``obs_shape``, ``action``
        of shape ``action_shape``, ``reward`` and ``done`` scalars.  A batch of
        ``n``: the same with a leading ``n`` on every field (``reward``/``done``
        of shape ``(n,)``); ``obs`` decides which form is meant.  Values are cast
        to the storage dtypes: integer data may fill float fields, float data
        never fills an integer field, ``done`` takes bools or exact 0/1.

        Raises :class:`~amal_verified.isolation.errors.TaggingError` for data labelled
        with a source other than this buffer's, ``TypeError`` (one line naming the
        argument, what it received and what to pass) for unsupported types such as
        lists, tuples, ``None`` or dicts, or unsupported dtypes, ``ValueError`` for
        wrong shapes, disagreeing batch sizes, batches larger than ``capacity``,
        NaN/Inf, and out-of-range values.  Every check runs before anything is
        written: a refused call leaves the buffer exactly unchanged.
        """
        values = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "done": done}
        plain = {f.name: self._to_plain(f.name, values[f.name]) for f in self._fields}
        n, batched = self._batch_size(plain["obs"])
        rows = {f.name: self._rows(f, plain[f.name], n, batched) for f in self._fields}
        # ---- nothing above this line writes; nothing below can fail ----
        self._write(rows, n)

    def _declassified(self, field: str, label: Label) -> bool:
        """Inside ``declassify``, the primary buffer records auxiliary-derived values as primary data."""
        if self._KIND is not SourceKind.PRIMARY or label.primary_sources - self._label.sources:
            return False
        if declassifying() is None:
            return False
        record_escape(f"{type(self).__name__}.add({field}) of auxiliary-derived data", label)
        return True

    def _to_plain(self, field: str, value: object) -> torch.Tensor:
        """Type and label checks; returns a plain CPU tensor (bool, int64/uint8... or float)."""
        cls = type(self).__name__
        if isinstance(value, torch.Tensor):
            label = label_of(value)
            if not label.flows_to(self._label) and not self._declassified(field, label):
                foreign = ", ".join(str(s) for s in sorted(label.sources - self._label.sources))
                raise TaggingError(
                    f"{cls}(source={self._source.name!r}) refuses {field}: it is labelled {label!r}, "
                    f"which includes {foreign}; this buffer accepts only untagged data or data "
                    f"labelled {self._source}"
                )
            t = _untag(value)
            if t.layout != torch.strided:
                raise TypeError(f"{cls}.add: {field} must be a dense tensor, got layout {t.layout}")
            if t.device.type != "cpu":
                raise TypeError(f"{cls}.add: {field} must be on the CPU, got device {t.device}")
            if not (t.dtype is torch.bool or t.dtype in _FLOAT_DTYPES or t.dtype in _INT_INPUT_DTYPES):
                raise TypeError(
                    f"{cls}.add: {field} must hold real numbers or bools, got dtype {_dtype_name(t.dtype)}"
                )
            return t.detach()
        if isinstance(value, np.ndarray | np.generic):
            return _numpy_to_tensor(cls, field, value)
        if isinstance(value, bool):
            return torch.tensor(value, dtype=torch.bool)
        if isinstance(value, int):
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"{cls}.add: {field} = {value} does not fit in int64")
            return torch.tensor(value, dtype=torch.int64)
        if isinstance(value, float):
            return torch.tensor(value, dtype=torch.float64)
        raise TypeError(
            f"{cls}.add: {field} must be a torch.Tensor, numpy array or Python scalar, "
            f"got {type(value).__name__}"
        )

    def _batch_size(self, obs: torch.Tensor) -> tuple[int, bool]:
        """``(n, batched)`` as decided by ``obs``; validates the batch size."""
        cls = type(self).__name__
        row = self.obs_shape
        if tuple(obs.shape) == row:
            return 1, False
        if obs.dim() == len(row) + 1 and tuple(obs.shape[1:]) == row:
            n = int(obs.shape[0])
            if n == 0:
                raise ValueError(f"{cls}.add: empty batch (obs has shape {_shape_str(obs.shape)})")
            if n > self._capacity:
                raise ValueError(
                    f"{cls}.add: batch of {n} transitions is larger than the capacity {self._capacity}"
                )
            return n, True
        raise ValueError(
            f"{cls}.add: obs has shape {_shape_str(obs.shape)}; expected {_shape_str(row)} for one "
            f"transition or (n, {', '.join(str(d) for d in row)}) for a batch of n"
        )

    def _rows(self, f: _Field, t: torch.Tensor, n: int, batched: bool) -> torch.Tensor:
        """Shape, dtype and value checks for one field; returns ``(n, *row)`` in the storage dtype."""
        cls = type(self).__name__
        expected = (n, *f.row_shape) if batched else f.row_shape
        if tuple(t.shape) != expected:
            if (
                batched
                and t.dim() == len(f.row_shape) + 1
                and tuple(t.shape[1:]) == f.row_shape
                and f.name != "obs"
            ):
                raise ValueError(
                    f"{cls}.add: batch sizes disagree: obs has {n} transitions but {f.name} has "
                    f"{t.shape[0]} (shape {_shape_str(t.shape)}, expected {_shape_str(expected)})"
                )
            form = f"a batch of {n}" if batched else "one transition"
            raise ValueError(
                f"{cls}.add: {f.name} has shape {_shape_str(t.shape)}; expected {_shape_str(expected)} "
                f"(obs is {form})"
            )
        rows = t.reshape(n, *f.row_shape)
        src = t.dtype
        what = f"{cls}.add: {f.name}"

        if f.dtype is torch.bool:  # done
            if src is torch.bool:
                return rows
            ok = (rows == 0) | (rows == 1)
            if not bool(ok.all()):
                bad = int((~ok).reshape(n).nonzero()[0, 0])
                raise ValueError(
                    f"{what} must be bool or 0/1, got {rows.reshape(n)[bad].item()!r}"
                    + (f" at batch row {bad}" if batched else "")
                )
            return rows.to(torch.bool)

        if src is torch.bool:
            raise TypeError(f"{what} must be numeric ({_dtype_name(f.dtype)} storage), got dtype bool")

        if f.dtype.is_floating_point:
            if src.is_floating_point:
                _check_finite(what, rows, n, batched, "")
            cast = rows.to(f.dtype)
            _check_finite(what, cast, n, batched, f" after conversion to {_dtype_name(f.dtype)}")
            return cast

        # integer storage (int64 action, uint8 obs)
        if src.is_floating_point:
            raise TypeError(
                f"{what} must hold integers ({_dtype_name(f.dtype)} storage), got dtype "
                f"{_dtype_name(src)}; refusing to truncate floating-point data"
            )
        info = torch.iinfo(f.dtype)
        if rows.numel() > 0:
            lo, hi = int(rows.min()), int(rows.max())
            if lo < info.min or hi > info.max:
                raise ValueError(
                    f"{what} holds values in [{lo}, {hi}], outside the {_dtype_name(f.dtype)} "
                    f"range [{info.min}, {info.max}]"
                )
        return rows.to(f.dtype)

    def _write(self, rows: Mapping[str, torch.Tensor], n: int) -> None:
        first = min(n, self._capacity - self._pos)
        with torch.no_grad():
            for name, storage in self._storage.items():
                src = rows[name]
                storage[self._pos : self._pos + first].copy_(src[:first])
                if first < n:
                    storage[: n - first].copy_(src[first:])
        self._pos = (self._pos + n) % self._capacity
        self._size = min(self._size + n, self._capacity)

    # ------------------------------------------------------------------ sample

    def sample(self, batch_size: int, *, generator: torch.Generator | None = None) -> Batch:
        """Draw ``batch_size`` transitions uniformly, with replacement.

        Draws from ``generator`` if given, else from this buffer's own
        generator; nothing else is read or advanced.  A consumer that must be
        reproducible on its own (the world-model learner, replayed by
        ``amal certify`` without the policy that also samples this buffer)
        passes the generator it owns.  Costs O(batch_size).  Returns a
        :class:`Batch` of fresh tensors tagged with this buffer's source.
        Raises ``ValueError`` if the buffer is empty or ``batch_size < 1``.
        """
        cls = type(self).__name__
        if isinstance(batch_size, bool):
            raise TypeError(f"{cls}.sample: batch_size must be an int, got bool {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"{cls}.sample: batch_size must be at least 1, got {batch_size}")
        if self._size == 0:
            raise ValueError(
                f"{cls}(source={self._source.name!r}).sample: the buffer is empty; add transitions first"
            )
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"{cls}.sample: generator must be a CPU torch.Generator, got {generator.device}")
        source = self._generator if generator is None else generator
        return self._gather(torch.randint(0, self._size, (batch_size,), generator=source, dtype=torch.int64))

    def take(self, indices: torch.Tensor) -> Batch:
        """The stored transitions at rows ``indices`` (a 1-D int64 tensor of rows in ``[0, len)``), as a
        :class:`Batch` of fresh tensors tagged like :meth:`sample`'s; nothing is read or advanced.
        ``ValueError`` naming the problem for another shape, dtype or a row outside the stored ones;
        :class:`~amal_verified.isolation.errors.TaggingError` if the rows were chosen from auxiliary data
        (the batch would depend on it while carrying this buffer's label only)."""
        cls = type(self).__name__
        if isinstance(indices, torch.Tensor) and label_of(indices).has_aux:
            raise TaggingError(
                f"{cls}.take: the rows {label_of(indices)} were chosen from auxiliary data; choose rows "
                "from this buffer's own data or the learner's generator"
            )
        if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int64 or indices.dim() != 1:
            what = f"{type(indices).__name__} {getattr(indices, 'dtype', '')}"
            raise ValueError(
                f"{cls}.take: indices must be a 1-D int64 tensor of rows, got {what} "
                f"{tuple(getattr(indices, 'shape', ()))}"
            )
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= self._size):
            raise ValueError(
                f"{cls}(source={self._source.name!r}).take: rows must lie in [0, {self._size}) (the stored "
                f"transitions), got rows from {int(indices.min())} to {int(indices.max())}"
            )
        return self._gather(_untag(indices))

    def _gather(self, indices: torch.Tensor) -> Batch:
        s = self._storage
        return Batch(
            obs=self._tag(torch.index_select(s["obs"], 0, indices)),
            action=self._tag(torch.index_select(s["action"], 0, indices)),
            reward=self._tag(torch.index_select(s["reward"], 0, indices)),
            next_obs=self._tag(torch.index_select(s["next_obs"], 0, indices)),
            done=self._tag(torch.index_select(s["done"], 0, indices)),
            indices=indices,
        )

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit for bit.

        Holds copies (never views of the storage) of the stored rows
        ``[0, len)``, *tagged with this buffer's source* like :meth:`sample`'s
        output, so a state dict cannot launder auxiliary data into a primary
        buffer; the write position, the size, the generator state (a plain
        uint8 tensor), and the configuration and source the state belongs to
        (str, int and tuple values).
        """
        state: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "kind": self._KIND.value,
            "source": self._source.name,
            "capacity": self._capacity,
            "obs_shape": self.obs_shape,
            "action_shape": self.action_shape,
            "obs_dtype": _dtype_name(self.obs_dtype),
            "action_dtype": _dtype_name(self.action_dtype),
            "size": self._size,
            "pos": self._pos,
            "generator_state": self._generator.get_state(),
        }
        for name, storage in self._storage.items():
            state[name] = self._tag(storage[: self._size].clone())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from a buffer with the same configuration and source.

        Raises :class:`~amal_verified.isolation.errors.TaggingError` if the state belongs
        to another source (or holds tensors labelled with one; plain tensors are
        accepted, as by :meth:`add`), ``ValueError``
        or ``TypeError`` for anything malformed (missing or extra keys, wrong
        configuration, shapes, dtypes, sizes, non-finite values, an invalid
        generator state).  Everything is checked first: on error the buffer is
        unchanged.
        """
        cls = type(self).__name__
        what = f"{cls}.load_state_dict"
        keys = set(state.keys())
        if keys != _STATE_KEYS:
            missing, extra = sorted(_STATE_KEYS - keys), sorted(keys - _STATE_KEYS)
            raise ValueError(f"{what}: malformed state (missing keys {missing}, unexpected keys {extra})")
        if type(state["format"]) is not int or state["format"] != _STATE_FORMAT:
            raise ValueError(
                f"{what}: unsupported state format {state['format']!r}, expected {_STATE_FORMAT}"
            )
        if state["kind"] != self._KIND.value or state["source"] != self._source.name:
            raise TaggingError(
                f"{what}: the state holds data of source {state['kind']}:{state['source']}; "
                f"this buffer holds {self._source} and refuses it"
            )
        expected_config = {
            "capacity": self._capacity,
            "obs_shape": self.obs_shape,
            "action_shape": self.action_shape,
            "obs_dtype": _dtype_name(self.obs_dtype),
            "action_dtype": _dtype_name(self.action_dtype),
        }
        for key, want in expected_config.items():
            got = state[key]
            if isinstance(want, tuple) and isinstance(got, list | tuple):
                got = tuple(got)
            if type(got) is not type(want) or got != want:
                raise ValueError(f"{what}: {key} is {state[key]!r}, this buffer has {want!r}")
        size, pos = state["size"], state["pos"]
        if type(size) is not int or not 0 <= size <= self._capacity:
            raise ValueError(f"{what}: size must be an int in [0, {self._capacity}], got {size!r}")
        if type(pos) is not int or not 0 <= pos < self._capacity:
            raise ValueError(f"{what}: pos must be an int in [0, {self._capacity}), got {pos!r}")
        if size < self._capacity and pos != size:
            raise ValueError(
                f"{what}: inconsistent ring state: pos {pos} must equal size {size} until the buffer is full"
            )

        contents: dict[str, torch.Tensor] = {}
        for f in self._fields:
            value = state[f.name]
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{what}: {f.name} must be a tensor, got {type(value).__name__}")
            label = label_of(value)
            if not label.flows_to(self._label):
                raise TaggingError(
                    f"{what}: {f.name} is labelled {label!r}; this buffer holds {self._source} and refuses it"
                )
            t = _untag(value)
            expected = (size, *f.row_shape)
            if t.layout != torch.strided or t.device.type != "cpu":
                raise TypeError(f"{what}: {f.name} must be a dense CPU tensor, got {t.layout} on {t.device}")
            if t.dtype != f.dtype:
                raise TypeError(
                    f"{what}: {f.name} has dtype {_dtype_name(t.dtype)}, expected {_dtype_name(f.dtype)}"
                )
            if tuple(t.shape) != expected:
                raise ValueError(
                    f"{what}: {f.name} has shape {_shape_str(t.shape)}, expected {_shape_str(expected)}"
                )
            if f.dtype.is_floating_point:
                _check_finite(f"{what}: {f.name}", t, size, True, "")
            contents[f.name] = t

        gen_state = state["generator_state"]
        reference = self._generator.get_state()
        if (
            not isinstance(gen_state, torch.Tensor)
            or type(gen_state) is not torch.Tensor
            or gen_state.dtype != torch.uint8
            or tuple(gen_state.shape) != tuple(reference.shape)
            or gen_state.device.type != "cpu"
        ):
            desc = (
                f"{type(gen_state).__name__} {_dtype_name(gen_state.dtype)} {_shape_str(gen_state.shape)}"
                if isinstance(gen_state, torch.Tensor)
                else type(gen_state).__name__
            )
            raise ValueError(
                f"{what}: generator_state must be a plain uint8 CPU tensor of shape "
                f"{_shape_str(reference.shape)} (torch.Generator.get_state()), got {desc}"
            )
        scratch = torch.Generator(device="cpu")
        try:
            scratch.set_state(gen_state)
        except RuntimeError as exc:
            raise ValueError(f"{what}: generator_state is not a valid CPU generator state ({exc})") from None

        # ---- nothing above this line writes; nothing below can fail ----
        with torch.no_grad():
            for name, storage in self._storage.items():
                storage[:size].copy_(contents[name])
        self._generator.set_state(scratch.get_state())
        self._size = size
        self._pos = pos


def _argument_fix(field: str, value: object) -> str:
    """What to pass instead of ``value`` (not a tensor, NumPy array or Python scalar) for ``field``."""
    if value is None:
        return f"pass a number, NumPy array or tensor for {field}"
    if isinstance(value, tuple) and field == "done" and len(value) == 2:
        return (
            "pass one bool per transition, not a (terminated, truncated) pair, "
            "e.g. torch.as_tensor(terminated)"
        )
    if isinstance(value, Mapping):
        return "pass the array itself, not a dict (flatten dict observations first)"
    if isinstance(value, list | tuple):
        return f"convert it first, e.g. torch.as_tensor({field}) or numpy.asarray({field})"
    return f"convert it to a tensor, e.g. torch.as_tensor({field})"


def _describe(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, list | tuple):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__module__}.{type(value).__qualname__}".replace("builtins.", "")


_ADD_ARGUMENT_TYPES: Final = (torch.Tensor, np.ndarray, np.generic, bool, int, float)


def _one_line_argument_errors(add: Callable[..., None]) -> Callable[..., None]:
    """Wrap the (beartype-checked) ``add``: an argument of a type ``add`` does not take gets a one-line
    ``TypeError`` naming it, what was received and what to pass, before beartype sees it."""

    @functools.wraps(add)
    def checked_add(
        self: _TransitionBuffer,
        obs: ArrayLike,
        action: ArrayLike,
        reward: ArrayLike,
        next_obs: ArrayLike,
        done: ArrayLike,
    ) -> None:
        values = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "done": done}
        for field, value in values.items():
            if not isinstance(value, _ADD_ARGUMENT_TYPES):
                raise TypeError(
                    f"{type(self).__name__}.add: {field} must be a torch.Tensor, NumPy array or Python "
                    f"scalar, got {_describe(value)}; {_argument_fix(field, value)}"
                )
        add(self, obs, action, reward, next_obs, done)

    return checked_add


# The public add: the one-line argument check first, then beartype's check and the body.
_TransitionBuffer.add = _one_line_argument_errors(_TransitionBuffer.add)  # type: ignore[method-assign]


def _check_finite(what: str, t: torch.Tensor, n: int, batched: bool, when: str) -> None:
    finite = torch.isfinite(t)
    if bool(finite.all()):
        return
    bad_rows = (~finite).reshape(n, -1).any(dim=1).nonzero().reshape(-1)
    first = int(bad_rows[0])
    bad_value = t.reshape(n, -1)[first][~finite.reshape(n, -1)[first]][0].item()
    where = f" (first at batch row {first}; {bad_rows.numel()} row(s) affected)" if batched else ""
    raise ValueError(f"{what} contains a non-finite value {bad_value!r}{when}{where}")


def _numpy_to_tensor(cls: str, field: str, value: npt.NDArray[Any] | np.generic) -> torch.Tensor:
    arr = np.asarray(value)
    kind = arr.dtype.kind
    target: type[np.generic]
    if kind == "b":
        target = np.bool_
    elif kind == "i":
        target = np.int64
    elif kind == "u":
        if arr.dtype.itemsize == 1:
            target = np.uint8
        else:
            if arr.size and int(arr.max()) > _INT64_MAX:
                raise ValueError(f"{cls}.add: {field} holds {int(arr.max())}, which does not fit in int64")
            target = np.int64
    elif kind == "f":
        # float16/32 keep their width; longdouble becomes float64 (overflow -> inf, refused later).
        target = (
            np.float16 if arr.dtype.itemsize == 2 else np.float32 if arr.dtype.itemsize == 4 else np.float64
        )
    else:
        raise TypeError(f"{cls}.add: {field} must hold real numbers or bools, got numpy dtype {arr.dtype}")
    # A native-endian, C-contiguous, writable copy: torch.from_numpy accepts it without warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        copy = arr.astype(target, order="C", copy=True)
    return torch.from_numpy(copy)


def _untag(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor behind ``t`` (``t`` itself if untagged), sharing memory.

    Only for the buffer's own checks and copies of data whose label it has
    already accepted; what leaves the buffer is tagged again.
    """
    return t.elem if isinstance(t, TaggedTensor) else t


@final
@checked
class PrimaryBuffer(_TransitionBuffer):
    """The primary buffer ``D_P``: transitions of the real environment stream.

    Accepts untagged data and data labelled ``primary:<source>`` (default
    source ``"real-env"``); refuses auxiliary data, mixed data and data of a
    differently named primary source with :class:`~amal_verified.isolation.errors.TaggingError`.
    :meth:`sample` returns ``PrimaryData``.  See the module docstring for the
    shared contract (preallocation, atomic ``add``, private generator, O(batch)
    sampling, bit-exact ``state_dict``).

    Arguments: ``capacity`` (rows preallocated, >= 1); ``obs_shape`` and
    ``action_shape`` (per-transition shapes, ``()`` for a scalar such as a
    discrete action); ``seed`` (in ``[0, 2**64)``, seeds this buffer's own
    ``torch.Generator``); ``obs_dtype`` (float16/bfloat16/float32/float64, or
    uint8 for images; default float32); ``action_dtype`` (a float dtype or
    int64 for discrete actions; default float32); ``source`` (the primary
    source name).  Rewards are stored as float32, ``done`` as bool.
    """

    _KIND: ClassVar[SourceKind] = SourceKind.PRIMARY

    def __init__(
        self,
        capacity: int,
        *,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        seed: int,
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.float32,
        source: str = "real-env",
    ) -> None:
        super().__init__(
            capacity,
            obs_shape=obs_shape,
            action_shape=action_shape,
            source=source,
            seed=seed,
            obs_dtype=obs_dtype,
            action_dtype=action_dtype,
        )

    def _tag(self, t: torch.Tensor) -> torch.Tensor:
        return primary(t, source=self._source.name)


@final
@checked
class AuxBuffer(_TransitionBuffer):
    """The buffer ``D_A^i`` of one auxiliary agent ``i`` (one buffer per agent).

    ``source`` names the agent (e.g. ``"aux-3"``) and is required.  Accepts
    untagged data and data labelled ``aux:<source>``; refuses primary data,
    data of any other auxiliary agent and mixed data with
    :class:`~amal_verified.isolation.errors.TaggingError`.  :meth:`sample` returns
    ``AuxData``.  See the module docstring for the shared contract and
    :class:`PrimaryBuffer` for the other arguments.
    """

    _KIND: ClassVar[SourceKind] = SourceKind.AUX

    def __init__(
        self,
        capacity: int,
        *,
        source: str,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        seed: int,
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(
            capacity,
            obs_shape=obs_shape,
            action_shape=action_shape,
            source=source,
            seed=seed,
            obs_dtype=obs_dtype,
            action_dtype=action_dtype,
        )

    def _tag(self, t: torch.Tensor) -> torch.Tensor:
        return aux(t, source=self._source.name)
