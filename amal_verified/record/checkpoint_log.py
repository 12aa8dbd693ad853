"""The checkpoint log: the ledger's hash chain extended by one *seal* per checkpoint.

The ledger (:mod:`~amal_verified.record.ledger`) chains the world-model updates.  What else a run's
certificate speaks for -- how far the run got, its status, the primary data it recorded and the
checkpoint (hence the world model and policy) a user takes from it -- is bound to that chain here:
every checkpoint a run writes is *sealed* by one record of ``<run_dir>/checkpoints.jsonl`` that names
the ledger head it follows, the digest of the data manifest's chunk list and the SHA-256 of the
checkpoint file itself, and chains to the previous seal (the first to the ledger's genesis).  The
hash of the last seal, the *run head*, therefore fixes every update, every recorded primary
transition, the step count, the status and the checkpoint bytes: it is what ``amal certify`` puts in
the certificate and what ``amal certify --sign`` signs.

File format: ``<run_dir>/checkpoints.jsonl``
============================================

UTF-8 JSON Lines, each line the canonical JSON
(:func:`~amal_verified.record.ledger.canonical_json`) of one seal followed by ``"\\n"``::

    {"checkpoint_digest": "<64 hex>", "format": "amal_verified.checkpoint_seal/1", "hash": "<64 hex>",
     "index": <1, 2, ...>, "ledger_count": <int>, "ledger_head": "<64 hex>", "manifest_digest": "<64 hex>",
     "prev": "<64 hex>", "primary_transitions": <int>, "status": "running" | "interrupted" | "complete",
     "step": <int>}

- ``prev`` is the ``hash`` of the previous seal, the ledger's genesis for the first;
- ``hash = sha256(canonical_json(seal without "hash"))``;
- ``manifest_digest`` is :func:`manifest_digest` of the chunk list (``data/manifest.json``'s
  ``chunks``) at the checkpoint; ``checkpoint_digest`` the SHA-256 of the checkpoint file's bytes.

Order of writing (:meth:`CheckpointLog.append` is called by
:func:`~amal_verified.record.checkpoint.save_checkpoint`'s ``before_replace``): the checkpoint is
written to a temporary file, its seal is appended and fsync'd, then the file is renamed into place.
A process killed in between leaves a seal whose checkpoint never replaced the previous one; the
checkpoint on disk then matches an earlier seal, from which the run resumes.  A checkpoint that
matches no seal was changed after it was written and is refused.  A process killed during an append
leaves an incomplete last line, which :meth:`CheckpointLog.open` with ``repair_partial_tail`` removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

from amal_verified.common.durable_io import fsync_dir
from amal_verified.record.atomic import name_target
from amal_verified.record.files import CHECKPOINT_LOG_FILENAME
from amal_verified.record.ledger import canonical_json

__all__ = [
    "CHECKPOINT_LOG_FILENAME",
    "SEAL_FORMAT",
    "SEAL_STATUSES",
    "CheckpointLog",
    "CheckpointLogError",
    "CheckpointSeal",
    "SealedLog",
    "file_digest",
    "manifest_digest",
    "read_checkpoint_log",
]

SEAL_FORMAT: Final = "amal_verified.checkpoint_seal/1"
SEAL_STATUSES: Final = ("running", "interrupted", "complete")

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_INT_FIELDS: Final = ("index", "step", "ledger_count", "primary_transitions")
_HEX_FIELDS: Final = ("ledger_head", "manifest_digest", "checkpoint_digest", "prev", "hash")
_KEYS: Final = frozenset({"format", "status", *_INT_FIELDS, *_HEX_FIELDS})


class CheckpointLogError(ValueError):
    """The checkpoint log is missing, malformed or does not chain; the message names the line."""


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (64 lowercase hex digits) of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest_digest(chunks: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of the canonical JSON of a primary-data manifest's chunk list (file, range, SHA-256)."""
    return hashlib.sha256(canonical_json([dict(c) for c in chunks])).hexdigest()


@final
@dataclass(frozen=True)
class CheckpointSeal:
    """One checkpoint as sealed in the log (see the module docstring for the fields)."""

    index: int
    step: int
    status: str
    ledger_head: str
    ledger_count: int
    manifest_digest: str
    primary_transitions: int
    checkpoint_digest: str
    prev: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        """The seal's line object, ``hash`` included."""
        body = _body(self)
        return {**body, "hash": self.hash}


def _body(seal: CheckpointSeal | Mapping[str, Any]) -> dict[str, Any]:
    get = (lambda k: getattr(seal, k)) if isinstance(seal, CheckpointSeal) else seal.__getitem__
    body: dict[str, Any] = {"format": SEAL_FORMAT, "status": get("status")}
    for key in (*_INT_FIELDS, *_HEX_FIELDS):
        if key != "hash":
            body[key] = get(key)
    return body


def _hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(body))).hexdigest()


@final
@dataclass(frozen=True)
class SealedLog:
    """What :func:`read_checkpoint_log` found: the seals that verified (in order), the problems
    (each a one-line string naming the file and line), and an incomplete last line, if any."""

    path: Path
    seals: tuple[CheckpointSeal, ...]
    problems: tuple[str, ...]
    partial_tail: bool
    complete_bytes: int

    @property
    def head(self) -> str | None:
        """The hash of the last verified seal (the run head), ``None`` if there is none."""
        return self.seals[-1].hash if self.seals else None

    def sealing(self, digest: str) -> CheckpointSeal | None:
        """The last seal recording a checkpoint of SHA-256 ``digest``, or ``None``."""
        return next((s for s in reversed(self.seals) if s.checkpoint_digest == digest), None)


def _shape_error(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return "a seal must be a JSON object"
    if set(obj) != _KEYS:
        return f"missing keys {sorted(_KEYS - set(obj))} / unexpected keys {sorted(set(obj) - _KEYS)}"
    if obj["format"] != SEAL_FORMAT:
        return f"format {obj['format']!r} is not {SEAL_FORMAT!r}, the seal format this version reads"
    for key in _INT_FIELDS:
        if type(obj[key]) is not int or obj[key] < 0:
            return f"{key} must be a non-negative integer, got {obj[key]!r}"
    for key in _HEX_FIELDS:
        if not isinstance(obj[key], str) or not _HEX64.fullmatch(obj[key]):
            return f"{key} must be 64 lowercase hex digits, got {obj[key]!r}"
    if obj["status"] not in SEAL_STATUSES:
        return f"status must be one of {list(SEAL_STATUSES)}, got {obj['status']!r}"
    return None


def read_checkpoint_log(run_dir: str | os.PathLike[str], genesis: str) -> SealedLog:
    """Read and verify ``<run_dir>/checkpoints.jsonl`` against the ledger's ``genesis``.

    Never raises for a bad log: the seals up to the first problem are returned with that problem
    (a missing file, a malformed line, an edited seal, a broken link, an index out of order, or an
    incomplete last line).  ``OSError`` only if the file exists but cannot be read.
    """
    path = Path(run_dir) / CHECKPOINT_LOG_FILENAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return SealedLog(
            path,
            (),
            (
                f"{CHECKPOINT_LOG_FILENAME}: missing -- the run's checkpoints are not sealed (deleted, or a "
                "run written before checkpoint format 2, which this version neither resumes nor certifies)",
            ),
            False,
            0,
        )
    lines = data.split(b"\n")
    tail = lines.pop()
    seals: list[CheckpointSeal] = []
    problems: list[str] = []
    prev = genesis
    for number, raw in enumerate(lines, start=1):
        where = f"{CHECKPOINT_LOG_FILENAME} line {number}"
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{where}: not valid JSON ({exc})")
            break
        why = _shape_error(obj)
        if why is not None:
            problems.append(f"{where}: {why}")
            break
        if _hash(_body(obj)) != obj["hash"]:
            problems.append(f"{where}: the seal was edited after it was written (its hash does not match)")
            break
        if obj["prev"] != prev:
            what = "the ledger's genesis" if number == 1 else f"the hash of line {number - 1}"
            problems.append(
                f"{where}: 'prev' is not {what}: seals are missing, reordered, or from another run"
            )
            break
        if obj["index"] != number:
            problems.append(f"{where}: index {obj['index']} out of order (expected {number})")
            break
        seals.append(CheckpointSeal(**{k: obj[k] for k in obj if k != "format"}))
        prev = obj["hash"]
    partial = bool(tail)
    if partial and not problems:
        problems.append(
            f"{CHECKPOINT_LOG_FILENAME}: ends in an incomplete line of {len(tail)} bytes (a process killed "
            "while sealing a checkpoint); resuming the run removes it"
        )
    return SealedLog(path, tuple(seals), tuple(problems), partial, len(data) - len(tail))


@final
class CheckpointLog:
    """The checkpoint log of a run, open for appending seals.  Build it with :meth:`open`."""

    def __init__(self, path: Path, genesis: str, seals: list[CheckpointSeal]) -> None:
        self.path: Final = path
        self._genesis: Final = genesis
        self._seals = seals

    @classmethod
    def open(
        cls, run_dir: str | os.PathLike[str], genesis: str, *, repair_partial_tail: bool = False
    ) -> CheckpointLog:
        """The log of the run in ``run_dir`` (empty if it has none yet), verified against ``genesis``.

        :class:`CheckpointLogError` (one line) for any problem, except a missing file (a new run)
        and, with ``repair_partial_tail``, an incomplete last line, which is truncated away first.
        """
        path = Path(run_dir) / CHECKPOINT_LOG_FILENAME
        if not path.exists():
            return cls(path, genesis, [])
        found = read_checkpoint_log(run_dir, genesis)
        if found.partial_tail and repair_partial_tail and len(found.problems) == 1:
            with open(path, "r+b") as f:
                f.truncate(found.complete_bytes)
                f.flush()
                os.fsync(f.fileno())
            found = read_checkpoint_log(run_dir, genesis)
        if found.problems:
            raise CheckpointLogError(f"{path}: {found.problems[0]}")
        return cls(path, genesis, list(found.seals))

    @property
    def seals(self) -> tuple[CheckpointSeal, ...]:
        """Every seal, oldest first."""
        return tuple(self._seals)

    @property
    def head(self) -> str:
        """The hash of the last seal (the ledger's genesis while there is none)."""
        return self._seals[-1].hash if self._seals else self._genesis

    def append(
        self,
        *,
        step: int,
        status: str,
        ledger_head: str,
        ledger_count: int,
        manifest: Sequence[Mapping[str, Any]],
        primary_transitions: int,
        checkpoint_digest: str,
    ) -> CheckpointSeal:
        """Seal one checkpoint: append its line with one write and fsync it before returning.

        A failed write is cut back, so the log never keeps a partial line it could continue; its
        ``OSError`` names the log file.
        """
        if status not in SEAL_STATUSES:
            raise ValueError(f"status must be one of {list(SEAL_STATUSES)}, got {status!r}")
        fields: dict[str, Any] = {
            "format": SEAL_FORMAT,
            "index": len(self._seals) + 1,
            "step": step,
            "status": status,
            "ledger_head": ledger_head,
            "ledger_count": ledger_count,
            "manifest_digest": manifest_digest(manifest),
            "primary_transitions": primary_transitions,
            "checkpoint_digest": checkpoint_digest,
            "prev": self.head,
        }
        digest = _hash(fields)
        why = _shape_error({**fields, "hash": digest})
        if why is not None:
            raise ValueError(f"cannot seal the checkpoint: {why}")
        line = canonical_json({**fields, "hash": digest}) + b"\n"
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                if isinstance(exc, OSError):
                    name_target(exc, self.path)
                raise
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
        seal = CheckpointSeal(**{k: v for k, v in fields.items() if k != "format"}, hash=digest)
        self._seals.append(seal)
        return seal
