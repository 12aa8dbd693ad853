"""An append-only, hash-chained ledger of world-model updates, and canonical digests.

Theorem 1 says the world-model trajectory is a function of the primary data
stream alone.  The ledger records, for every world-model step, *which* primary
batch went in and *which* parameters came out, chained by SHA-256 so that a
later replay (or an auditor) can certify the run and detect any edit.

File format: ``<run_dir>/ledger.jsonl``
=======================================

UTF-8 JSON Lines.  Every line is the *canonical JSON* of one object --
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
allow_nan=False)`` -- followed by ``"\\n"``.  A line is *complete* exactly when
it ends with ``"\\n"``; the writer emits each line with a single ``write``.

Line 1, the run header::

    {"amal_verified_version": "0.1.0", "config_digest": "<64 hex>", "format": "amal_verified.record.ledger",
     "format_version": 1, "run_id": "<str>", "seed": <int>, "torch_version": "2.13.0+cpu"}

``genesis = sha256(canonical_json(header)).hexdigest()``.

Lines 2, 3, ...: one record per world-model step::

    {"batch_digest": "<64 hex>", "check": {"batch_digest": "<8 hex>", "labels": "<8 hex>",
     "param_digest": "<8 hex>", "prev": "<8 hex>", "step": "<8 hex>"},
     "hash": "<64 hex>", "labels": ["primary:real-env"], "param_digest": "<64 hex>",
     "prev": "<64 hex>", "step": <int>}

- ``prev`` is the ``hash`` of the previous record (``genesis`` for the first).
- ``hash = sha256(canonical_json(body))`` where ``body`` is the record without
  its ``hash`` key (so it covers ``check`` too).  This is the chain.
- ``check[f]`` is the first 8 hex digits of ``sha256(canonical_json(value of
  f))``.  It is *diagnostic only* -- it lets :func:`verify` name the field a
  naive edit changed; integrity rests on ``hash``/``prev``, never on ``check``.
- ``round_end`` (only in runs whose world-model rounds stop early on a held-out
  split of the primary data, :mod:`amal_verified.world_model.learner`) marks the
  last update of a round and lists the round's held-out losses, each as
  ``float.hex()``: the recorded stopping decision, which the replay recomputes.
  ``check`` then has a ``round_end`` entry too.
- ``labels`` are source names (``"primary:<name>"`` / ``"aux:<name>"``), sorted
  and deduplicated.  ``step`` strictly increases.

The *head* of a ledger is the ``hash`` of its last record (``genesis`` when it
has none).  Store the head (and the record count) in every checkpoint: records
missing at the *end* of a ledger are detectable only against such an expected
head or count (``verify(run_dir, expected_head=..., expected_count=...)``).

What is and is not detected
---------------------------
An edit of any field of any record or of the header (given at least one
record, or ``expected_head``), records removed from the middle, reordered or
duplicated records, non-monotonic steps, malformed JSON and a partial last
line are all detected and named by :func:`verify`.  Someone able to rewrite the
file can recompute every hash from the edit onwards: the chain alone proves
internal consistency, and an ``expected_head`` held elsewhere (a checkpoint, a
signed report) is what ties the file to the run.  A run extends this chain with
one seal per checkpoint (:mod:`amal_verified.record.checkpoint_log`), whose last
hash ``amal certify --sign`` signs (:mod:`amal_verified.record.signing`).

Durability and cost
-------------------
Each :meth:`Ledger.append` hands the complete line to the kernel with
unbuffered ``os.write`` before it returns, so killing the *process* never loses
an appended record.  With ``sync_every=1`` (default) it then calls
``os.fsync``: when ``append`` returns, the record survives an OS crash or power
loss.  The fsync dominates the cost of an append (hashing, JSON and ``write``
are cheap next to it) and depends on the storage (none on tmpfs, more on
network storage); in a training run each record follows a world-model update,
which costs far more than an fsync, hence the default (measurements:
``benchmarks/README.md``, "Design measurements quoted by the code").  With
``sync_every=n > 1`` the file is fsync'd after every
``n``-th append, and by :meth:`Ledger.sync` and :meth:`Ledger.close`.
Guarantee: after an OS crash or power loss, every record appended before the
last completed fsync is intact; at most the ``n - 1`` records appended after it
can be lost, and only from the end (possibly leaving a partial last line, which
``Ledger.open(..., repair_partial_tail=True)`` removes).  A filesystem that
fills a lost tail with garbage instead of truncating it shows up as malformed
lines, which are never repaired automatically.

Recovery after a crash mid-append
---------------------------------
``Ledger.open(run_dir)`` refuses a ledger whose last line is incomplete, with a
:class:`LedgerError`.  ``Ledger.open(run_dir, repair_partial_tail=True)``
truncates that incomplete final line (and nothing else: only when the rest of
the file verifies cleanly; a complete, newline-terminated record is never
removed), fsyncs, and opens the ledger for appending.  The step whose record
was cut off was not acknowledged by ``append``; redo it from the latest
checkpoint whose recorded head is in the ledger.

Digests
-------
:func:`batch_digest` and :func:`state_digest` are SHA-256 over a fixed binary
encoding (see their docstrings), bit-exact and independent of platform byte
order.  Tagged tensors are digested through their plain ``elem`` so computing
a digest is not recorded as an escape of auxiliary data.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import re
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import torch

from amal_verified._version import __version__
from amal_verified.common.durable_io import fsync_dir
from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.labels import Label
from amal_verified.record.atomic import name_target

__all__ = [
    "LEDGER_FILENAME",
    "Ledger",
    "LedgerError",
    "LedgerRecord",
    "Problem",
    "ProblemKind",
    "RunHeader",
    "VerificationResult",
    "batch_digest",
    "canonical_json",
    "config_digest",
    "round_end_text",
    "state_digest",
    "verify",
]

LEDGER_FILENAME: Final = "ledger.jsonl"
FORMAT: Final = "amal_verified.record.ledger"
FORMAT_VERSION: Final = 1

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX8 = re.compile(r"[0-9a-f]{8}")
_LABEL = re.compile(r"(primary|aux):.+", re.DOTALL)
_RECORD_FIELDS: Final = ("step", "batch_digest", "param_digest", "labels", "prev")
_RECORD_KEYS: Final = frozenset({*_RECORD_FIELDS, "check", "hash"})
# Present only on the last update of a world-model round that stopped by its held-out loss.
_ROUND_END: Final = "round_end"
_HEX_FLOAT = re.compile(r"-?(0x[01]\.[0-9a-f]{1,13}p[+-]\d{1,4}|inf)|nan")
_HEADER_KEYS: Final = frozenset(
    {
        "format",
        "format_version",
        "run_id",
        "seed",
        "config_digest",
        "amal_verified_version",
        "torch_version",
    }
)


# ---------------------------------------------------------------------------------------- errors


class ProblemKind(enum.Enum):
    """What :func:`verify` found wrong with a ledger."""

    MISSING_FILE = "missing_file"
    BROKEN_HEADER = "broken_header"
    MALFORMED_JSON = "malformed_json"
    MALFORMED_RECORD = "malformed_record"
    TAMPERED = "tampered"
    REORDERED = "reordered"
    BROKEN_LINK = "broken_link"
    NON_MONOTONIC_STEP = "non_monotonic_step"
    PARTIAL_TAIL = "partial_tail"
    MISSING_RECORDS = "missing_records"


@dataclass(frozen=True)
class Problem:
    """One finding: its kind, the 1-based file line (``None`` if not a line), the field, a message."""

    kind: ProblemKind
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"[{self.kind.value}] {where}{self.message}"


class LedgerError(Exception):
    """The ledger is missing, malformed, tampered with or used incorrectly.

    ``path`` is the ledger file; ``problems`` lists what :func:`verify` found
    (empty for misuse such as appending a non-increasing step).
    """

    def __init__(self, message: str, *, path: Path | None = None, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.problems: tuple[Problem, ...] = tuple(problems)


# ---------------------------------------------------------------------------------------- canonical JSON


def round_end_text(losses: Sequence[float]) -> tuple[str, ...]:
    """Held-out losses as the ledger records them: exact ``float.hex()`` strings (NaN kept)."""
    return tuple(float(x).hex() for x in losses)


def canonical_json(obj: Any) -> bytes:
    """The canonical encoding hashed everywhere here: sorted keys, no whitespace, ASCII, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_of(value: Any) -> str:
    return _sha256(canonical_json(value))[:8]


@checked
def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a JSON-serialisable configuration mapping."""
    return _sha256(canonical_json(dict(config)))


# ---------------------------------------------------------------------------------------- digests


def _plain(t: torch.Tensor) -> torch.Tensor:
    from amal_verified.isolation.tagging import TaggedTensor

    if isinstance(t, TaggedTensor):
        return t.elem
    return t


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def _hash_tensor(h: _Hasher, t: torch.Tensor) -> None:
    """Feed ``h`` the dtype, shape and little-endian contiguous bytes of ``t``, length-prefixed.

    The bytes are read in place (a ``memoryview`` of the contiguous tensor): hashing a world model's
    parameters copies nothing.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
    t = _plain(t)
    if t.layout != torch.strided:
        raise TypeError(f"only dense (strided) tensors can be digested, got layout {t.layout}")
    if t.is_quantized:
        raise TypeError("quantized tensors cannot be digested")
    t = t.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
    dtype = str(t.dtype).removeprefix("torch.").encode("ascii")
    h.update(struct.pack("<Q", len(dtype)))
    h.update(dtype)
    h.update(struct.pack(f"<{t.dim() + 1}Q", t.dim(), *t.shape))
    size = t.element_size()
    flat = t.reshape(-1)
    raw = flat.view(torch.uint8) if flat.numel() else torch.empty(0, dtype=torch.uint8)
    if sys.byteorder == "big" and size > 1:  # pragma: no cover - no big-endian CI
        unit = size // 2 if t.dtype.is_complex else size
        raw = raw.reshape(-1, unit).flip(-1).reshape(-1)
    h.update(struct.pack("<Q", raw.numel()))
    h.update(raw.numpy().data)


def _hash_indices(h: _Hasher, indices: torch.Tensor | Sequence[int]) -> None:
    if isinstance(indices, torch.Tensor):
        plain = _plain(indices)
        if plain.dtype.is_floating_point or plain.dtype.is_complex or plain.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor, got dtype {plain.dtype}")
        ints = plain.detach().to("cpu", torch.int64).reshape(-1)
    else:
        values = list(indices)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"indices must be integers, got {v!r}")
        ints = torch.tensor(values, dtype=torch.int64)
    _hash_tensor(h, ints)


@checked
def batch_digest(indices: torch.Tensor | Sequence[int], *tensors: torch.Tensor) -> str:
    """SHA-256 (64 lowercase hex digits) of a sampled batch: its indices and its tensors, in order.

    Encoding (all integers unsigned 64-bit little-endian, ``Q``)::

        b"amal_verified.batch_digest/1\\0"
        Q(number of tensors)
        tensor(indices as a flat int64 tensor)
        tensor(t) for t in tensors

    where ``tensor(t)`` is ``Q(len(dtype)) dtype Q(ndim) Q(dim_0) ... Q(len(data)) data``,
    ``dtype`` the ASCII name without ``torch.`` (``float32``), and ``data`` the
    C-contiguous element bytes, each element little-endian (complex: each part).

    Tagged tensors are read through ``.elem`` (nothing is recorded as an
    escape); ``indices`` may be an integer tensor of any shape or a sequence
    of ints (both encode as the same flat int64 vector).  Equal data give equal
    digests on every platform; any bit change, a dtype or a shape change gives
    a different one.
    """
    h = hashlib.sha256(b"amal_verified.batch_digest/1\0")
    h.update(struct.pack("<Q", len(tensors)))
    _hash_indices(h, indices)
    for t in tensors:
        _hash_tensor(h, t)
    return h.hexdigest()


@checked
def state_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (64 lowercase hex digits) of a ``state_dict``, entries in sorted key order.

    Encoding::

        b"amal_verified.state_digest/1\\0"
        Q(number of entries)
        for name in sorted(state_dict): Q(len(utf8(name))) utf8(name) tensor(state_dict[name])

    with ``tensor`` as in :func:`batch_digest`.  Insertion order does not
    matter; names, dtypes, shapes and every bit of every value do.  Tagged
    tensors are read through ``.elem``.
    """
    h = hashlib.sha256(b"amal_verified.state_digest/1\0")
    h.update(struct.pack("<Q", len(state_dict)))
    for name in sorted(state_dict):
        value = state_dict[name]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        encoded = name.encode("utf-8")
        h.update(struct.pack("<Q", len(encoded)))
        h.update(encoded)
        _hash_tensor(h, value)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- header and records


def _versions() -> tuple[str, str]:
    return __version__, str(torch.__version__)


@dataclass(frozen=True)
class RunHeader:
    """What a run is: its id, seed, configuration digest, and the library and torch versions.

    ``RunHeader.new(run_id, seed, config)`` fills the digest and versions in.
    """

    run_id: str
    seed: int
    config_digest: str
    amal_verified_version: str
    torch_version: str

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not self.run_id:
            raise ValueError(f"run_id must be a non-empty string, got {self.run_id!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if not isinstance(self.config_digest, str) or not _HEX64.fullmatch(self.config_digest):
            raise ValueError(f"config_digest must be 64 lowercase hex digits, got {self.config_digest!r}")

    @classmethod
    def new(cls, run_id: str, seed: int, config: Mapping[str, Any]) -> RunHeader:
        """A header for this process's library and torch versions."""
        lib, tv = _versions()
        return cls(run_id, seed, config_digest(config), lib, tv)

    def to_json(self) -> dict[str, Any]:
        """The header line's object (see the module docstring)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run_id": self.run_id,
            "seed": self.seed,
            "config_digest": self.config_digest,
            "amal_verified_version": self.amal_verified_version,
            "torch_version": self.torch_version,
        }

    @property
    def genesis(self) -> str:
        """``sha256(canonical_json(header))``: the ``prev`` of the first record."""
        return _sha256(canonical_json(self.to_json()))


@dataclass(frozen=True)
class LedgerRecord:
    """One verified world-model step as stored in the ledger."""

    step: int
    batch_digest: str
    param_digest: str
    labels: tuple[str, ...]
    prev: str
    hash: str
    round_end: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The record line's object, ``hash`` included."""
        return _body(
            self.step,
            self.batch_digest,
            self.param_digest,
            list(self.labels),
            self.prev,
            None if self.round_end is None else list(self.round_end),
        )[0]


def _body(
    step: int, batch: str, param: str, labels: list[str], prev: str, round_end: list[str] | None = None
) -> tuple[dict[str, Any], str]:
    body: dict[str, Any] = {
        "step": step,
        "batch_digest": batch,
        "param_digest": param,
        "labels": labels,
        "prev": prev,
    }
    if round_end is not None:
        body[_ROUND_END] = round_end
    body["check"] = {k: _check_of(body[k]) for k in _fields_of(body)}
    h = _sha256(canonical_json(body))
    return {**body, "hash": h}, h


# ---------------------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of :func:`verify`.

    ``ok`` is true exactly when ``problems`` is empty.  ``records`` holds the
    records that parsed (in file order, whether or not they verified);
    ``head`` is the hash of the last record of the longest verified prefix
    (``genesis`` if none); ``partial_tail`` is true when the file ends in an
    incomplete line of ``partial_tail_bytes`` bytes.
    """

    path: Path
    header: RunHeader | None
    genesis: str | None
    records: tuple[LedgerRecord, ...]
    head: str | None
    problems: tuple[Problem, ...]
    partial_tail: bool = False
    partial_tail_bytes: int = 0
    complete_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def kinds(self) -> frozenset[ProblemKind]:
        """The kinds of problem found."""
        return frozenset(p.kind for p in self.problems)

    def raise_if_failed(self) -> None:
        """Raise :class:`LedgerError` listing every problem, unless ``ok``."""
        if self.problems:
            listing = "\n  ".join(str(p) for p in self.problems)
            raise LedgerError(
                f"ledger {self.path} failed verification ({len(self.problems)} problem(s)):\n  {listing}",
                path=self.path,
                problems=self.problems,
            )


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _parse_line(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"), object_pairs_hook=_strict_object, parse_constant=_reject_constant)


def _parse_header(obj: Any) -> tuple[RunHeader | None, str]:
    if not isinstance(obj, dict):
        return None, "the header is not a JSON object"
    if set(obj) != _HEADER_KEYS:
        missing = sorted(_HEADER_KEYS - set(obj))
        extra = sorted(set(obj) - _HEADER_KEYS)
        return None, f"the header has missing keys {missing} / unexpected keys {extra}"
    if obj["format"] != FORMAT or type(obj["format_version"]) is not int or obj["format_version"] != 1:
        return None, (
            f"not an {FORMAT} v{FORMAT_VERSION} header (format={obj['format']!r}, "
            f"format_version={obj['format_version']!r})"
        )
    for key in ("amal_verified_version", "torch_version"):
        if not isinstance(obj[key], str):
            return None, f"header field {key!r} must be a string"
    try:
        header = RunHeader(
            obj["run_id"],
            obj["seed"],
            obj["config_digest"],
            obj["amal_verified_version"],
            obj["torch_version"],
        )
    except (TypeError, ValueError) as e:
        return None, f"invalid header: {e}"
    return header, ""


def _fields_of(obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The record fields ``obj`` holds, in their fixed order (``round_end`` last, where present)."""
    return (*_RECORD_FIELDS, _ROUND_END) if _ROUND_END in obj else _RECORD_FIELDS


def _record_shape_error(obj: Any) -> tuple[str | None, str]:
    """``(field, message)`` of the first schema violation, or ``(None, "")``."""
    if not isinstance(obj, dict):
        return None, "a record must be a JSON object"
    keys = _RECORD_KEYS | {_ROUND_END} if _ROUND_END in obj else _RECORD_KEYS
    if set(obj) != keys:
        missing = sorted(keys - set(obj))
        extra = sorted(set(obj) - keys)
        name = (missing or extra or [None])[0]
        return name, f"missing keys {missing} / unexpected keys {extra}"
    if isinstance(obj["step"], bool) or not isinstance(obj["step"], int):
        return "step", f"step must be an integer, got {obj['step']!r}"
    for key in ("batch_digest", "param_digest", "prev", "hash"):
        if not isinstance(obj[key], str) or not _HEX64.fullmatch(obj[key]):
            return key, f"{key} must be 64 lowercase hex digits, got {obj[key]!r}"
    labels = obj["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) and _LABEL.fullmatch(x) for x in labels):
        return "labels", f"labels must be a list of 'primary:<name>'/'aux:<name>' strings, got {labels!r}"
    if _ROUND_END in obj:
        losses = obj[_ROUND_END]
        if (
            not isinstance(losses, list)
            or not losses
            or not all(isinstance(x, str) and _HEX_FLOAT.fullmatch(x) for x in losses)
        ):
            return _ROUND_END, (
                f"round_end must be a non-empty list of held-out losses as float.hex() strings, got "
                f"{losses!r}"
            )
    check = obj["check"]
    fields = _fields_of(obj)
    if (
        not isinstance(check, dict)
        or set(check) != set(fields)
        or not all(isinstance(v, str) and _HEX8.fullmatch(v) for v in check.values())
    ):
        return "check", f"check must map {list(fields)} to 8 hex digits, got {check!r}"
    return None, ""


def _scan(
    path: Path, data: bytes, expected_head: str | None, expected_count: int | None
) -> VerificationResult:
    problems: list[Problem] = []
    segments = data.split(b"\n")
    tail = segments.pop()  # b"" when the file ends with a newline
    partial = bool(tail)
    complete_bytes = len(data) - len(tail)
    lines = segments

    def add(kind: ProblemKind, line: int | None, fld: str | None, message: str) -> None:
        problems.append(Problem(kind, line, fld, message))

    if not lines:
        what = "is empty" if not data else "has no complete line (a crash while it was created?)"
        add(ProblemKind.BROKEN_HEADER, 1, None, f"the ledger {what}: there is no run header")
        return VerificationResult(path, None, None, (), None, tuple(problems), partial, len(tail), 0)

    header: RunHeader | None = None
    genesis: str | None = None
    try:
        header_obj = _parse_line(lines[0])
    except (ValueError, UnicodeDecodeError) as e:
        add(ProblemKind.BROKEN_HEADER, 1, None, f"the run header is not valid JSON ({e})")
    else:
        header, why = _parse_header(header_obj)
        if header is None:
            add(ProblemKind.BROKEN_HEADER, 1, None, why)
        else:
            genesis = _sha256(canonical_json(header_obj))

    # Pass 1: parse each record, check its schema and its self-consistency.
    parsed: list[tuple[int, dict[str, Any] | None, bool]] = []  # (line, obj, self-consistent)
    records: list[LedgerRecord] = []
    for i, raw in enumerate(lines[1:], start=2):
        try:
            obj = _parse_line(raw)
        except (ValueError, UnicodeDecodeError) as e:
            add(ProblemKind.MALFORMED_JSON, i, None, f"not valid JSON ({e}); {len(raw)} bytes")
            parsed.append((i, None, False))
            continue
        fld, why = _record_shape_error(obj)
        if why:
            add(ProblemKind.MALFORMED_RECORD, i, fld, why)
            parsed.append((i, None, False))
            continue
        body = {k: v for k, v in obj.items() if k != "hash"}
        edited = [k for k in _fields_of(obj) if _check_of(obj[k]) != obj["check"][k]]
        actual = _sha256(canonical_json(body))
        consistent = True
        for k in edited:
            add(
                ProblemKind.TAMPERED,
                i,
                k,
                f"field {k!r} (now {obj[k]!r}) was changed after the record was written: "
                f"it no longer matches the record's check digest",
            )
            consistent = False
        if actual != obj["hash"]:
            consistent = False
            if not edited:
                add(
                    ProblemKind.TAMPERED,
                    i,
                    "hash",
                    f"the record's content hashes to {actual[:16]}... but its 'hash' field says "
                    f"{obj['hash'][:16]}...: the 'hash' field (or the 'check' field) was edited",
                )
        elif edited:
            add(
                ProblemKind.TAMPERED,
                i,
                "hash",
                "the record's 'hash' was recomputed after the edit; the chain link from the next "
                "record (or the expected head) is what exposes it",
            )
        parsed.append((i, obj, consistent))
        records.append(
            LedgerRecord(
                obj["step"],
                obj["batch_digest"],
                obj["param_digest"],
                tuple(obj["labels"]),
                obj["prev"],
                obj["hash"],
                None if _ROUND_END not in obj else tuple(obj[_ROUND_END]),
            )
        )

    # Pass 2: chain links and step order.
    line_of_hash: dict[str, int] = {}
    for i, obj, _ in parsed:
        if obj is not None:
            line_of_hash.setdefault(obj["hash"], i)
    prev_hash: str | None = genesis
    prev_line = 1
    prev_step: int | None = None
    head: str | None = genesis
    chain_ok = genesis is not None
    for i, obj, consistent in parsed:
        if obj is None:
            prev_hash, chain_ok, prev_step = None, False, None
            prev_line = i
            continue
        if prev_hash is not None and obj["prev"] != prev_hash:
            chain_ok = False
            target = line_of_hash.get(obj["prev"])
            if i == 2 and header is not None:
                if target is None:
                    add(
                        ProblemKind.BROKEN_HEADER,
                        1,
                        None,
                        "the run header does not hash to the genesis recorded by the first record "
                        "(line 2 'prev'): the header was edited, or line 2 belongs to another run",
                    )
                else:
                    add(
                        ProblemKind.REORDERED,
                        i,
                        "prev",
                        f"this record chains to line {target}, not to the header: records are out of order",
                    )
            elif target is not None and target != prev_line:
                add(
                    ProblemKind.REORDERED,
                    i,
                    "prev",
                    f"this record chains to line {target}, but follows line {prev_line}: "
                    "records are out of order (or duplicated)",
                )
            elif obj["prev"] == genesis:
                add(
                    ProblemKind.REORDERED,
                    i,
                    "prev",
                    "this record chains to the header (it was the first record) but follows "
                    f"line {prev_line}",
                )
            else:
                add(
                    ProblemKind.BROKEN_LINK,
                    i,
                    "prev",
                    f"'prev' does not match the hash of line {prev_line}: record(s) between lines "
                    f"{prev_line} and {i} are missing, or line {prev_line} was rewritten with a "
                    "recomputed hash",
                )
        if prev_step is not None and obj["step"] <= prev_step:
            add(
                ProblemKind.NON_MONOTONIC_STEP,
                i,
                "step",
                f"step {obj['step']} does not increase (line {prev_line} has step {prev_step})",
            )
            chain_ok = False
        if not consistent:
            chain_ok = False
        if chain_ok:
            head = obj["hash"]
        prev_hash, prev_line, prev_step = obj["hash"], i, obj["step"]

    if partial:
        add(
            ProblemKind.PARTIAL_TAIL,
            len(lines) + 1,
            None,
            f"the file ends in an incomplete line of {len(tail)} bytes (a crash during append); "
            "Ledger.open(run_dir, repair_partial_tail=True) removes it",
        )

    n = len(parsed)
    if expected_count is not None and n < expected_count:
        add(
            ProblemKind.MISSING_RECORDS,
            None,
            None,
            f"the ledger holds {n} complete record(s) but {expected_count} were expected: "
            f"{expected_count - n} record(s) are missing at the end",
        )
    if expected_head is not None:
        all_hashes = {genesis} | set(line_of_hash)
        if expected_head not in all_hashes:
            add(
                ProblemKind.MISSING_RECORDS,
                None,
                None,
                f"the expected head {expected_head[:16]}... is not in the ledger: records are missing at "
                f"the end (the file stops at {n} record(s)), or the ledger was rewritten or belongs to "
                "another run",
            )
    return VerificationResult(
        path, header, genesis, tuple(records), head, tuple(problems), partial, len(tail), complete_bytes
    )


def _ledger_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / LEDGER_FILENAME


@checked
def verify(
    run_dir: str | os.PathLike[str],
    *,
    expected_head: str | None = None,
    expected_count: int | None = None,
) -> VerificationResult:
    """Check every line of ``<run_dir>/ledger.jsonl`` and name every problem found.

    Never raises for a bad ledger (only for bad arguments): inspect
    ``result.ok`` / ``result.problems`` or call ``result.raise_if_failed()``.
    ``expected_head`` (a record hash or the genesis, e.g. kept in a
    checkpoint) and ``expected_count`` (records) detect records missing at the
    end, which the chain alone cannot show.  A ledger that extends *beyond*
    ``expected_head`` is fine: a checkpoint may be older than the last record.
    """
    if expected_head is not None and not _HEX64.fullmatch(expected_head):
        raise ValueError(f"expected_head must be 64 lowercase hex digits, got {expected_head!r}")
    path = _ledger_path(run_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        problem = Problem(ProblemKind.MISSING_FILE, None, None, f"no ledger at {path}")
        return VerificationResult(path, None, None, (), None, (problem,))
    return _scan(path, data, expected_head, expected_count)


# ---------------------------------------------------------------------------------------- the ledger


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        raise LedgerError(f"ledger {path} is open for appending elsewhere (lock held)", path=path) from e


def _open_locked(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        _lock(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _normalise_labels(labels: Label | Iterable[str]) -> list[str]:
    names = [str(s) for s in labels]
    for name in names:
        if not _LABEL.fullmatch(name):
            raise LedgerError(f"label {name!r} is not a source name like 'primary:real-env' or 'aux:aux-3'")
    return sorted(set(names))


class Ledger:
    """An open ledger, appendable.  Use :meth:`create` or :meth:`open`, not the constructor.

    One writer at a time (an advisory ``flock`` enforces it on POSIX).  Use as
    a context manager or call :meth:`close`, which fsyncs.
    """

    def __init__(
        self,
        path: Path,
        fd: int,
        header: RunHeader,
        records: list[LedgerRecord],
        sync_every: int,
        _token: object = None,
    ) -> None:
        if _token is not _TOKEN:
            raise TypeError("use Ledger.create(run_dir, header) or Ledger.open(run_dir)")
        self._path = path
        self._fd: int | None = fd
        self._header = header
        self._records = records
        self._sync_every = sync_every
        self._unsynced = 0

    # -- construction -------------------------------------------------------------------------

    @classmethod
    @checked
    def create(cls, run_dir: str | os.PathLike[str], header: RunHeader, *, sync_every: int = 1) -> Ledger:
        """Create ``<run_dir>/ledger.jsonl`` holding only ``header``, atomically and durably.

        ``run_dir`` is created if needed.  Refuses (``LedgerError``) if a ledger
        already exists there.  The header is written to a temporary file,
        fsync'd and renamed into place, so a crash leaves either no ledger or a
        complete header.
        """
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        directory = Path(run_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LEDGER_FILENAME
        if path.exists():
            raise LedgerError(f"a ledger already exists at {path}; use Ledger.open", path=path)
        tmp = directory / f".{LEDGER_FILENAME}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                _write_all(fd, canonical_json(header.to_json()) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, path)  # fails if the target appeared meanwhile; never overwrites
        except FileExistsError as e:
            raise LedgerError(f"a ledger already exists at {path}; use Ledger.open", path=path) from e
        except OSError as e:  # a full disk, a read-only directory: named by the ledger's path
            name_target(e, path)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(directory)
        return cls(path, _open_locked(path), header, [], sync_every, _TOKEN)

    @classmethod
    @checked
    def open(
        cls,
        run_dir: str | os.PathLike[str],
        *,
        repair_partial_tail: bool = False,
        sync_every: int = 1,
        expected_head: str | None = None,
        expected_count: int | None = None,
    ) -> Ledger:
        """Open an existing ledger for appending, after verifying the whole chain.

        Raises :class:`LedgerError` listing every problem :func:`verify` finds.
        If the only problem is an incomplete final line (a crash during an
        append) and ``repair_partial_tail`` is true, that line -- and nothing
        else -- is truncated away and fsync'd first.
        """
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        path = _ledger_path(run_dir)
        try:
            fd = _open_locked(path)  # lock first: nobody appends between verification and use
        except FileNotFoundError as e:
            raise LedgerError(f"no ledger at {path}", path=path) from e
        try:
            return cls._open_verified(
                path, fd, run_dir, repair_partial_tail, sync_every, expected_head, expected_count
            )
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def _open_verified(
        cls,
        path: Path,
        fd: int,
        run_dir: str | os.PathLike[str],
        repair_partial_tail: bool,
        sync_every: int,
        expected_head: str | None,
        expected_count: int | None,
    ) -> Ledger:
        result = verify(run_dir, expected_head=expected_head, expected_count=expected_count)
        if result.partial_tail and repair_partial_tail:
            others = [p for p in result.problems if p.kind is not ProblemKind.PARTIAL_TAIL]
            if not others:
                os.ftruncate(fd, result.complete_bytes)
                os.fsync(fd)
                result = verify(run_dir, expected_head=expected_head, expected_count=expected_count)
        if result.partial_tail:
            raise LedgerError(
                f"ledger {path} ends in an incomplete line ({result.partial_tail_bytes} bytes), left by a "
                "crash during append. Recover with Ledger.open(run_dir, repair_partial_tail=True), which "
                "removes only that line; then redo the lost step from your latest checkpoint."
                + "".join(f"\n  {p}" for p in result.problems if p.kind is not ProblemKind.PARTIAL_TAIL),
                path=path,
                problems=result.problems,
            )
        result.raise_if_failed()
        assert result.header is not None
        return cls(path, fd, result.header, list(result.records), sync_every, _TOKEN)

    # -- reading ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self._path

    @property
    def header(self) -> RunHeader:
        return self._header

    @property
    def genesis(self) -> str:
        return self._header.genesis

    @property
    def head(self) -> str:
        """The hash of the last record (the genesis if there is none): store it in checkpoints."""
        return self._records[-1].hash if self._records else self.genesis

    @property
    def last_step(self) -> int | None:
        return self._records[-1].step if self._records else None

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> tuple[LedgerRecord, ...]:
        """Every record, oldest first (kept in memory, about 0.5 kB each)."""
        return tuple(self._records)

    # -- writing ------------------------------------------------------------------------------

    @checked
    def append(
        self,
        step: int,
        batch_digest: str,
        param_digest: str,
        labels: Label | Sequence[str],
        round_end: Sequence[float] | None = None,
    ) -> LedgerRecord:
        """Append one world-model step and return its record.

        Contract: ``step`` is greater than the last record's step; both
        digests are 64 lowercase hex digits (:func:`batch_digest`,
        :func:`state_digest`); ``labels`` are source names such as
        ``"primary:real-env"`` (or a :class:`Label`), stored sorted and
        deduplicated; ``round_end``, given for the last update of a round that
        stopped early, holds the round's held-out losses (stored as
        ``float.hex`` strings, exact; non-empty; a diverged model's NaN is kept).  Violations raise
        :class:`LedgerError` and write nothing.
        On return the line is in the kernel (survives a process kill) and, if
        this append completes a ``sync_every`` batch, on disk.
        """
        if self._fd is None:
            raise LedgerError(f"ledger {self._path} is closed", path=self._path)
        if isinstance(step, bool):
            raise TypeError("step must be an int, not a bool")
        last = self.last_step
        if last is not None and step <= last:
            raise LedgerError(
                f"step {step} does not increase (the last record has step {last})", path=self._path
            )
        for name, value in (("batch_digest", batch_digest), ("param_digest", param_digest)):
            if not _HEX64.fullmatch(value):
                raise LedgerError(f"{name} must be 64 lowercase hex digits, got {value!r}", path=self._path)
        if isinstance(labels, str):
            raise TypeError(f"labels must be a list of source names, not the string {labels!r}")
        names = _normalise_labels(labels)
        losses: list[str] | None = None
        if round_end is not None:
            if not round_end or any(isinstance(x, bool) or not isinstance(x, float | int) for x in round_end):
                raise LedgerError(
                    f"round_end must be a non-empty sequence of held-out losses (numbers), got {round_end!r}",
                    path=self._path,
                )
            losses = list(round_end_text(round_end))
        line, h = _body(step, batch_digest, param_digest, names, self.head, losses)
        size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, canonical_json(line) + b"\n")
        except BaseException as exc:
            # A failed write (disk full, interrupted) must not leave a partial line that a later
            # append would continue: cut the file back to the last complete record.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            if isinstance(exc, OSError):
                name_target(exc, self._path)
            raise
        ended = None if losses is None else tuple(losses)
        record = LedgerRecord(step, batch_digest, param_digest, tuple(names), line["prev"], h, ended)
        self._records.append(record)
        self._unsynced += 1
        if self._unsynced >= self._sync_every:
            self.sync()
        return record

    def sync(self) -> None:
        """fsync the ledger: every record appended so far survives an OS crash.  An ``OSError`` names
        the ledger file."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                name_target(exc, self._path)
                raise
            self._unsynced = 0

    def close(self) -> None:
        """fsync and close (idempotent)."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"Ledger({str(self._path)!r}, records={len(self._records)}, head={self.head[:12]}...)"


_TOKEN: Final = object()
