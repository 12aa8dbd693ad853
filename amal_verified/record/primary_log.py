"""The recorded primary data stream of a run: what ``amal certify`` replays the world model from.

Every primary transition is appended, in collection order, to a :class:`PrimaryDataLog`.  At each
checkpoint the transitions collected since the previous one are written as one *chunk*,
``data/primary-<first>-<end>.pt`` (a :func:`~amal_verified.record.checkpoint.save_checkpoint` file: atomic,
``weights_only``-loadable) holding plain tensors ``obs``, ``action``, ``reward``, ``next_obs``,
``terminated`` for transitions ``[first, end)`` (0-based), and ``data/manifest.json`` is rewritten
atomically with every chunk's file name, range, row count and SHA-256.  Chunks are written before the
checkpoint that refers to them, so a checkpoint never points to missing data; chunks written after
the checkpoint a run resumes from are dropped and written again by the resumed run
(:meth:`PrimaryDataLog.drop_chunks_after_manifest`).

:func:`load_primary_stream` reads the chunks back for a replay and names every problem it finds: a
file missing, changed (SHA-256 differs from the manifest), unreadable, or out of order (ranges not
contiguous from 0).  The manifest alone is not a trust anchor — someone who rewrites a chunk can
rewrite the manifest too — but the replay compares every batch digest against the hash-chained
ledger, so changed data still fail certification, at the first update that sampled a changed row; and
every checkpoint seal (:mod:`~amal_verified.record.checkpoint_log`) records the digest of the chunk
list, so rows that no update sampled cannot be rewritten either.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import numpy as np
import numpy.typing as npt
import torch

from amal_verified.record.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from amal_verified.record.files import DATA_DIRNAME, MANIFEST_FILENAME, read_json, write_json_atomic

__all__ = ["DataProblem", "PrimaryDataLog", "PrimaryStream", "load_primary_stream"]

_FIELDS: Final = ("obs", "action", "reward", "next_obs", "terminated")
_CHUNK_NAME: Final = re.compile(r"primary-(\d{10})-(\d{10})\.pt")
_MANIFEST_FORMAT: Final = "amal_verified.record.primary_log/1"


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@final
class PrimaryDataLog:
    """Append-only record of the primary transitions of a run, flushed to ``run_dir/data`` in chunks."""

    def __init__(self, run_dir: str | Path, *, manifest: list[dict[str, Any]] | None = None) -> None:
        self._dir: Final = Path(run_dir) / DATA_DIRNAME
        self._dir.mkdir(parents=True, exist_ok=True)
        self._chunks: list[dict[str, Any]] = list(manifest or [])
        self._pending: list[tuple[npt.NDArray[Any], ...]] = []

    @property
    def flushed(self) -> int:
        """Transitions already written to chunk files."""
        return int(self._chunks[-1]["end"]) if self._chunks else 0

    @property
    def count(self) -> int:
        """Transitions recorded so far (flushed or pending)."""
        return self.flushed + len(self._pending)

    @property
    def manifest(self) -> list[dict[str, Any]]:
        """The chunk list (what ``manifest.json`` holds), for checkpoints."""
        return [dict(c) for c in self._chunks]

    def append(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool) -> None:
        """Record one transition (copied)."""
        self._pending.append(
            (
                np.array(obs, dtype=np.float32),
                np.array(action),
                np.array(reward, dtype=np.float32),
                np.array(next_obs, dtype=np.float32),
                np.array(terminated, dtype=np.bool_),
            )
        )

    def drop_chunks_after_manifest(self) -> None:
        """Continue from this log's manifest (a checkpoint's): delete the chunk files that start at or
        after its end -- written by an attempt that failed or was interrupted after that checkpoint,
        and recorded again by the resumed run -- and rewrite ``manifest.json`` to match.  Chunk files
        before its end that it does not list are left for ``amal certify`` to name."""
        listed = {str(c["file"]) for c in self._chunks}
        for path in sorted(self._dir.glob("primary-*.pt")):
            match = _CHUNK_NAME.fullmatch(path.name)
            if path.name not in listed and match is not None and int(match[1]) >= self.flushed:
                path.unlink()
        write_json_atomic(
            self._dir / MANIFEST_FILENAME, {"format": _MANIFEST_FORMAT, "chunks": self.manifest}
        )

    def flush(self) -> None:
        """Write the pending transitions as one chunk and rewrite the manifest (both atomically)."""
        if not self._pending:
            return
        first, end = self.flushed, self.count
        columns = list(zip(*self._pending, strict=True))
        payload = {name: torch.from_numpy(np.stack(col)) for name, col in zip(_FIELDS, columns, strict=True)}
        name = f"primary-{first:010d}-{end:010d}.pt"
        save_checkpoint(self._dir / name, {"first": first, "end": end, **payload})
        entry = {"file": name, "first": first, "end": end, "sha256": _sha256_file(self._dir / name)}
        write_json_atomic(
            self._dir / MANIFEST_FILENAME, {"format": _MANIFEST_FORMAT, "chunks": [*self._chunks, entry]}
        )
        self._chunks.append(entry)
        self._pending.clear()


@final
@dataclass(frozen=True)
class DataProblem:
    """One problem with the recorded data: the file concerned and what is wrong."""

    file: str
    message: str


@final
@dataclass(frozen=True)
class PrimaryStream:
    """The recorded primary transitions ``[0, count)`` as plain tensors, or the problems found."""

    tensors: Mapping[str, torch.Tensor]
    count: int
    problems: tuple[DataProblem, ...]


def load_primary_stream(run_dir: str | Path) -> PrimaryStream:
    """Read every chunk listed in ``run_dir/data/manifest.json``, checking names, ranges and SHA-256.

    Never raises for bad data: problems are returned (each naming its file), and the tensors hold
    the contiguous prefix of good chunks.
    """
    directory = Path(run_dir) / DATA_DIRNAME
    problems: list[DataProblem] = []
    try:
        manifest = read_json(directory / MANIFEST_FILENAME, "primary data manifest")
    except ValueError as exc:
        return PrimaryStream({}, 0, (DataProblem(MANIFEST_FILENAME, str(exc)),))
    chunks = manifest.get("chunks") if isinstance(manifest, dict) else None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != _MANIFEST_FORMAT
        or not isinstance(chunks, list)
    ):
        return PrimaryStream({}, 0, (DataProblem(MANIFEST_FILENAME, "not a primary-data manifest"),))
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in _FIELDS}
    expected_first = 0
    for entry in chunks:
        name = str(entry.get("file", "?")) if isinstance(entry, dict) else "?"
        problem = _check_chunk(directory, entry, expected_first)
        if problem is not None:
            problems.append(DataProblem(name, problem))
            break
        try:
            data = load_checkpoint(directory / name)
        except CheckpointError as exc:
            problems.append(DataProblem(name, f"unreadable: {exc}"))
            break
        rows = entry["end"] - entry["first"]
        bad = _check_payload(data, entry, rows)
        if bad is not None:
            problems.append(DataProblem(name, bad))
            break
        for field in _FIELDS:
            parts[field].append(data[field])
        expected_first = entry["end"]
    else:
        on_disk = {p.name for p in directory.glob("primary-*.pt")}
        listed = {str(c.get("file")) for c in chunks if isinstance(c, dict)}
        for extra in sorted(on_disk - listed):
            problems.append(DataProblem(extra, "chunk file not listed in the manifest"))
    tensors = {k: torch.cat(v) for k, v in parts.items() if v}
    return PrimaryStream(tensors, expected_first, tuple(problems))


def _check_chunk(directory: Path, entry: Any, expected_first: int) -> str | None:
    if not isinstance(entry, dict) or set(entry) != {"file", "first", "end", "sha256"}:
        return "malformed manifest entry"
    match = _CHUNK_NAME.fullmatch(str(entry["file"]))
    if match is None or (int(match[1]), int(match[2])) != (entry["first"], entry["end"]):
        return "file name does not match its manifest range"
    if entry["first"] != expected_first:
        return (
            f"chunk starts at transition {entry['first']}, expected {expected_first} "
            "(chunks missing or out of order)"
        )
    if entry["end"] <= entry["first"]:
        return "empty or reversed range"
    path = directory / str(entry["file"])
    if not path.is_file():
        return "file missing"
    if _sha256_file(path) != entry["sha256"]:
        return "contents changed: SHA-256 differs from the manifest"
    return None


def _check_payload(data: Mapping[str, Any], entry: Mapping[str, Any], rows: int) -> str | None:
    if data.get("first") != entry["first"] or data.get("end") != entry["end"]:
        return "the range stored in the file differs from the manifest"
    for field in _FIELDS:
        value = data.get(field)
        if not isinstance(value, torch.Tensor) or value.shape[:1] != (rows,):
            return f"field {field!r} is missing or does not hold {rows} rows"
    return None
