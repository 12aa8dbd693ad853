"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)`` only.

File format
===========
A checkpoint is an ordinary ``torch.save`` file (zip container, pickle
protocol 2) of a ``dict`` whose values are restricted to what
``torch.load(weights_only=True)`` accepts, checked before anything is written.
It is pickled without the memo, so its bytes depend on the payload's values
only, never on which of its objects happen to be shared in memory: the same
state gives the same file (and SHA-256) in any process.  Files pickled with the
memo (written before) load alike.  The values allowed:

- ``None``, ``bool``, ``int`` (any size), ``float``, ``complex``, ``str``, ``bytes``;
- plain ``torch.Tensor`` (any dtype, dense or sparse; ``torch.nn.Parameter``
  too), ``torch.Size``, ``torch.dtype``, ``torch.device``;
- ``dict`` / ``collections.OrderedDict`` (keys: ``str``, ``int``, ``float``,
  ``bool``, ``None`` or tuples of these), ``list``, ``tuple``, ``set``.

RNG states fit as they are: ``torch.Generator.get_state()`` is a ``uint8``
tensor, ``numpy.random.Generator.bit_generator.state`` for PCG64 (numpy's
default) is a dict of ints and strings.

:func:`to_checkpointable` (applied by :func:`save_checkpoint`) rewrites two
other kinds of value into *marker dicts*, and :func:`from_checkpointable`
(applied by :func:`load_checkpoint`) restores them:

- a tagged tensor (``amal_verified.TaggedTensor``) becomes
  ``{"__amal_verified_tagged__": 1, "data": <plain tensor>, "sources":
  ["primary:real-env", ...]}`` (its ``elem`` and its label's source names,
  sorted) and is restored as a tagged tensor with the same label;
- a ``numpy.ndarray`` (e.g. the ``key`` of an MT19937 state) becomes
  ``{"__amal_verified_ndarray__": 1, "data": <tensor>}`` and is restored as an
  ndarray of the same dtype and shape.

User dicts may not use those two marker keys.

Atomicity
=========
:func:`save_checkpoint` writes a temporary file ``.<name>.<random>.tmp`` in the
target's directory, flushes and fsyncs it, optionally loads it back with
``weights_only=True``, renames it over the target with ``os.replace`` (atomic
on POSIX and Windows), then fsyncs the directory so the rename itself is
durable.  At every instant the target path holds either the complete previous
checkpoint or the complete new one.  On any exception the temporary file is
removed and the first error is raised (an ``OSError`` naming the target: a
failed flush while closing never replaces it); only a process killed outright
(SIGKILL, power loss) can leave a ``.*.tmp`` file behind, which is never read
and may be deleted.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import pickle
import secrets
import shutil
import types
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final

import torch

from amal_verified.common.runtime_checks import checked
from amal_verified.record.atomic import replace_atomically

__all__ = [
    "CheckpointError",
    "from_checkpointable",
    "load_checkpoint",
    "save_checkpoint",
    "to_checkpointable",
]

TAGGED_MARKER: Final = "__amal_verified_tagged__"
NDARRAY_MARKER: Final = "__amal_verified_ndarray__"
_MARKERS: Final = frozenset({TAGGED_MARKER, NDARRAY_MARKER})

_ATOMS: Final = (type(None), bool, int, float, complex, str, bytes)
# Free space below which a failed write is reported as a full disk.
_FULL_BELOW: Final = 1 << 20
_SIMPLE: Final = frozenset({*_ATOMS, torch.Size, torch.dtype, torch.device})


class _ValuePickler(pickle.Pickler):
    """A pickler without the memo (pickle's "fast" mode): equal values are written alike whichever
    objects happen to be shared in memory, so a checkpoint's bytes are a function of its values.  The
    payload holds no reference cycle (:func:`to_checkpointable` refuses them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = True


# What torch.save takes as its ``pickle_module``: it only subclasses ``Pickler`` and reads ``__name__``.
_VALUE_PICKLE: Final = types.SimpleNamespace(Pickler=_ValuePickler, __name__=__name__)


class CheckpointError(Exception):
    """A checkpoint could not be saved or loaded; ``path`` names the file."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------------------------------- conversion


def _is_tagged(obj: object) -> bool:
    import sys

    tagged = sys.modules.get("amal_verified.isolation.tagging")
    return tagged is not None and isinstance(obj, tagged.TaggedTensor)


def _convert(obj: Any, where: str, seen: set[int]) -> Any:
    if type(obj) in _SIMPLE:
        return obj
    if _is_tagged(obj):
        from amal_verified.isolation.tagging import TaggedTensor, label_of

        assert isinstance(obj, TaggedTensor)
        return {TAGGED_MARKER: 1, "data": obj.elem, "sources": [str(s) for s in label_of(obj)]}
    if type(obj) is torch.Tensor or type(obj) is torch.nn.Parameter:
        return obj
    if isinstance(obj, torch.Tensor):
        raise CheckpointError(
            f"{where}: tensor subclass {type(obj).__name__} cannot be loaded with weights_only=True; "
            "save a plain tensor (t.as_subclass(torch.Tensor)) instead"
        )
    import numpy as np

    if type(obj) is np.ndarray:
        if obj.dtype.hasobject or not obj.dtype.isnative:
            raise CheckpointError(f"{where}: numpy array of dtype {obj.dtype} cannot be checkpointed")
        try:
            # np.array, not np.ascontiguousarray: the latter makes a 0-d array 1-d.
            data = torch.from_numpy(np.array(obj, order="C", copy=True))
        except TypeError as e:
            raise CheckpointError(f"{where}: numpy array of dtype {obj.dtype}: {e}") from e
        return {NDARRAY_MARKER: 1, "data": data}
    if isinstance(obj, np.generic):
        raise CheckpointError(
            f"{where}: numpy scalar {type(obj).__name__} is not loadable with weights_only=True; "
            "convert it with .item()"
        )
    if type(obj) in (dict, collections.OrderedDict, list, tuple, set):
        if id(obj) in seen:
            raise CheckpointError(f"{where}: the payload contains a reference cycle")
        seen.add(id(obj))
        try:
            if isinstance(obj, dict):
                if _MARKERS & {k for k in obj if isinstance(k, str)}:
                    raise CheckpointError(f"{where}: keys {sorted(_MARKERS)} are reserved by amal_verified")
                out: dict[Any, Any] = {} if type(obj) is dict else collections.OrderedDict()
                for k, v in obj.items():
                    _check_key(k, where)
                    out[k] = _convert(v, f"{where}[{k!r}]", seen)
                return out
            if isinstance(obj, set):
                for i, v in enumerate(obj):
                    if type(v) not in _ATOMS:
                        raise CheckpointError(f"{where}: set element #{i} ({v!r}) must be a plain scalar")
                return set(obj)
            items = [_convert(v, f"{where}[{i}]", seen) for i, v in enumerate(obj)]
            return items if type(obj) is list else tuple(items)
        finally:
            seen.discard(id(obj))
    hint = ""
    if isinstance(obj, torch.Generator):
        hint = "; save generator.get_state() and restore it with generator.set_state(...)"
    elif isinstance(obj, torch.nn.Module | torch.optim.Optimizer):
        hint = "; save its .state_dict() instead"
    raise CheckpointError(
        f"{where}: {type(obj).__module__}.{type(obj).__qualname__} cannot be loaded with "
        f"weights_only=True{hint}"
    )


def _check_key(k: Any, where: str) -> None:
    if type(k) in _ATOMS and type(k) not in (complex, bytes):
        return
    if type(k) is tuple:
        for part in k:
            _check_key(part, where)
        return
    raise CheckpointError(f"{where}: dict key {k!r} of type {type(k).__name__} is not allowed")


@checked
def to_checkpointable(obj: Any) -> Any:
    """A copy of ``obj`` (containers rebuilt, tensors shared) that ``weights_only`` loading accepts.

    Tagged tensors and numpy arrays become marker dicts (see the module
    docstring).  Raises :class:`CheckpointError` naming the offending path
    (``payload['opt']['state'][0]``) for anything else ``weights_only`` could
    not load: arbitrary objects, tensor subclasses, numpy scalars, generators,
    modules, reference cycles, unsupported dict keys.
    """
    return _convert(obj, "payload", set())


def _restore(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.keys() == {TAGGED_MARKER, "data", "sources"}:
            return _restore_tagged(obj["data"], obj["sources"])
        if obj.keys() == {NDARRAY_MARKER, "data"}:
            data = obj["data"]
            if not isinstance(data, torch.Tensor):
                raise CheckpointError("an ndarray marker does not hold a tensor")
            return data.numpy()
        out: dict[Any, Any] = {} if type(obj) is dict else collections.OrderedDict()
        for k, v in obj.items():
            out[k] = _restore(v)
        return out
    if type(obj) is list:
        return [_restore(v) for v in obj]
    if type(obj) is tuple:
        return tuple(_restore(v) for v in obj)
    return obj


def _restore_tagged(data: Any, sources: Any) -> torch.Tensor:
    from amal_verified.isolation.labels import EMPTY
    from amal_verified.isolation.tagging import aux, label_of, primary

    if not isinstance(data, torch.Tensor) or not isinstance(sources, list):
        raise CheckpointError("a tagged-tensor marker must hold a tensor and a list of source names")
    parsed: list[tuple[str, str]] = []
    for s in sources:
        kind, sep, name = s.partition(":") if isinstance(s, str) else ("", "", "")
        if not sep or kind not in ("primary", "aux") or not name:
            raise CheckpointError(f"bad source name {s!r} in a tagged-tensor marker")
        parsed.append((kind, name))
    out: torch.Tensor = data
    # The marker's sources are authoritative: the memory may already carry labels from the file.
    if not label_of(data).is_empty:
        from amal_verified.isolation._engine import label_store as _label_store

        _label_store.set_label(data, EMPTY)
    # Primary first: tagging memory that already holds aux data as primary is refused.
    for kind, name in sorted(parsed, key=lambda p: p[0] != "primary"):
        out = primary(out, source=name) if kind == "primary" else aux(out, source=name)
    return out


@checked
def from_checkpointable(obj: Any) -> Any:
    """Undo :func:`to_checkpointable`: marker dicts become tagged tensors and ndarrays again."""
    return _restore(obj)


# ---------------------------------------------------------------------------------------- files


def _damaged_entry(path: Path) -> str | None:
    """The first entry of the checkpoint's zip archive whose CRC-32 does not match its data (a bit
    flipped on disk; ``torch.load`` does not check them), or ``None``.  Files that are not readable
    zip archives are left to ``torch.load``, whose error names them."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def _load_raw(path: Path, shown: Path) -> Any:
    from amal_verified.isolation._engine import global_hooks  # noqa: F401  (registers the rebuilding of labelled tensors)

    damaged = _damaged_entry(path)
    if damaged is not None:
        raise CheckpointError(
            f"checkpoint {shown} is damaged: {damaged} does not match the checksum stored with it; restore "
            "the file from a copy (a run resumes only from an intact checkpoint)",
            path=shown,
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"no checkpoint at {shown}", path=shown) from e
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {shown} is corrupt or holds objects that weights_only=True refuses to load "
            f"(it is never loaded any other way): {first}",
            path=shown,
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint {shown} is corrupt or truncated ({type(e).__name__}: {str(e)[:200]})", path=shown
        ) from e


@checked
def save_checkpoint(
    path: str | os.PathLike[str],
    payload: Mapping[str, Any],
    *,
    verify: bool = True,
    before_replace: Callable[[str], object] | None = None,
) -> None:
    """Atomically replace ``path`` with a checkpoint of ``payload``.

    Contract: ``payload`` is first passed through :func:`to_checkpointable`;
    anything ``weights_only`` loading would refuse raises
    :class:`CheckpointError` *before any file is created*.  Then the data go to
    a temporary file in the same directory, which is flushed, fsync'd, (with
    ``verify``) loaded back with ``weights_only=True``, renamed over ``path``
    with ``os.replace`` and made durable by an fsync of the directory.  On any
    failure the temporary file is removed and ``path`` is untouched; the first
    error is raised, and an ``OSError`` of the write, flush, fsync, close or
    rename (a full disk, a read-only directory) keeps its errno and names
    ``path`` (:func:`~amal_verified.record.atomic.replace_atomically`).

    ``before_replace``, if given, is called with the SHA-256 (hex) of the complete new file just
    before the rename (the run seals its checkpoints there); if it raises, nothing is replaced.
    """
    target = Path(path)
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    converted = to_checkpointable(dict(payload))
    directory = target.parent
    if not directory.is_dir():
        raise CheckpointError(f"cannot save {target}: directory {directory} does not exist", path=target)
    tmp = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"

    def write(f: BinaryIO) -> None:
        try:
            torch.save(converted, f, pickle_module=_VALUE_PICKLE)
        except RuntimeError as exc:  # torch's writer reports a failed write without its cause
            raise _write_failure(directory, target, exc) from exc

    def check(written: Path) -> None:
        if verify:
            _load_raw(written, written)
        if before_replace is not None:
            with open(written, "rb") as f:
                before_replace(hashlib.file_digest(f, "sha256").hexdigest())

    replace_atomically(tmp, target, write, check=check, exclusive=True)


def _write_failure(directory: Path, target: Path, exc: RuntimeError) -> OSError:
    """The ``OSError`` a failed ``torch.save`` stands for, naming ``target``: the failed write's own
    (which torch leaves as the context of its ``RuntimeError``), else a full disk or another I/O error."""
    cause: BaseException | None = exc.__context__
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno is not None:
            return OSError(cause.errno, cause.strerror, str(target))
        seen.add(id(cause))
        cause = cause.__context__
    if shutil.disk_usage(directory).free < _FULL_BELOW:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    return OSError(errno.EIO, f"{os.strerror(errno.EIO)} ({exc})", str(target))


@checked
def load_checkpoint(path: str | os.PathLike[str], *, restore: bool = True) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(..., weights_only=True)`` (never otherwise), onto the CPU.

    With ``restore`` (default) the result is passed through
    :func:`from_checkpointable`, so tagged tensors come back tagged (which,
    like any tagging, activates label tracking in the process).  Raises
    :class:`CheckpointError` naming the file if it is missing, truncated,
    corrupt, holds objects ``weights_only`` refuses, or is not a dict.
    """
    target = Path(path)
    raw = _load_raw(target, target)
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"checkpoint {target} holds a {type(raw).__name__}, not a dict: not written by save_checkpoint",
            path=target,
        )
    if not restore:
        return raw
    try:
        restored: dict[str, Any] = _restore(raw)
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {target}: {e}", path=target) from e
    return restored
