"""What one benchmark run produces: its evaluation curve and facts, as canonical JSON.

A :class:`RunRecord` is one (method, task, seed) cell of the benchmark grid.  Every method runner
(AMAL, the ``--unsafe-mix`` ablation, Stable-Baselines3 PPO/SAC/TD3, CEM-RL, PBT) returns one, and
the report reads nothing else: the numbers in ``benchmarks/RESULTS.md`` are computed from these files.

Contracts:

- ``curve`` holds the evaluations made during training, in increasing ``step`` order, where ``step``
  counts *primary* environment steps consumed so far (auxiliary and imagined steps are not samples of
  the real environment).  The last point is the evaluation at the end of training.
- ``returns`` are undiscounted episode returns of the deterministic (greedy / mean) policy on fresh
  episodes of the task's own environment, seeded from the evaluation seed, never the training seed.
- ``success`` is the fraction of those episodes the task counts as solved, or ``None`` where the task
  has no notion of success.
- ``extras`` holds method-specific JSON values (isolation distances, the shifted-environment returns,
  steps per second, ...); keys are documented by the code that writes them.
- ``provenance`` says what produced the record (``git_commit``, ``finished`` as UTC time): a full run
  spreads over several sittings, possibly on different commits, so the run's metadata alone cannot.
  Empty in records written before it existed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

__all__ = ["RECORD_FORMAT", "EvalPoint", "RunRecord", "load_records"]

RECORD_FORMAT: Final = 1


@final
@dataclass(frozen=True)
class EvalPoint:
    """One evaluation: ``returns`` of the deterministic policy after ``step`` primary steps."""

    step: int
    returns: tuple[float, ...]
    success: float | None = None

    def __post_init__(self) -> None:
        if self.step < 0:
            raise ValueError(f"EvalPoint.step must be >= 0, got {self.step}")
        if not self.returns:
            raise ValueError("EvalPoint.returns must hold at least one episode return")
        if not all(math.isfinite(r) for r in self.returns):
            raise ValueError(f"EvalPoint.returns must be finite, got {self.returns}")
        if self.success is not None and not 0.0 <= self.success <= 1.0:
            raise ValueError(f"EvalPoint.success must lie in [0, 1], got {self.success}")

    @property
    def mean_return(self) -> float:
        """Mean of :attr:`returns`."""
        return math.fsum(self.returns) / len(self.returns)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        return {"step": self.step, "returns": list(self.returns), "success": self.success}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvalPoint:
        """Inverse of :meth:`to_json`; ``ValueError``/``KeyError`` for a malformed dict."""
        success = data["success"]
        return cls(
            step=int(data["step"]),
            returns=tuple(float(r) for r in data["returns"]),
            success=None if success is None else float(success),
        )


@final
@dataclass(frozen=True)
class RunRecord:
    """One (method, task, seed) cell of the benchmark grid (see the module docstring)."""

    method: str
    task: str
    seed: int
    budget: int
    curve: tuple[EvalPoint, ...]
    train_seconds: float
    extras: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.method or not self.task:
            raise ValueError("RunRecord.method and RunRecord.task must be non-empty")
        if self.budget < 1:
            raise ValueError(f"RunRecord.budget must be >= 1, got {self.budget}")
        if not self.curve:
            raise ValueError("RunRecord.curve must hold at least the final evaluation")
        steps = [p.step for p in self.curve]
        if steps != sorted(steps) or len(set(steps)) != len(steps):
            raise ValueError(f"RunRecord.curve steps must increase strictly, got {steps}")
        if not (math.isfinite(self.train_seconds) and self.train_seconds >= 0.0):
            raise ValueError(f"RunRecord.train_seconds must be finite and >= 0, got {self.train_seconds}")

    @property
    def final(self) -> EvalPoint:
        """The evaluation at the end of training."""
        return self.curve[-1]

    @property
    def key(self) -> str:
        """``method/task/seed``: the cell's name, also its file name (with ``/`` → ``__``)."""
        return f"{self.method}/{self.task}/{self.seed}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (see :meth:`from_json`)."""
        return {
            "format": RECORD_FORMAT,
            "method": self.method,
            "task": self.task,
            "seed": self.seed,
            "budget": self.budget,
            "curve": [p.to_json() for p in self.curve],
            "train_seconds": self.train_seconds,
            "extras": dict(self.extras),
            "provenance": dict(self.provenance),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
        """Inverse of :meth:`to_json`; ``ValueError`` for a malformed or other-format dict."""
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"run record format {data.get('format')!r}, expected {RECORD_FORMAT}")
        try:
            return cls(
                method=str(data["method"]),
                task=str(data["task"]),
                seed=int(data["seed"]),
                budget=int(data["budget"]),
                curve=tuple(EvalPoint.from_json(p) for p in data["curve"]),
                train_seconds=float(data["train_seconds"]),
                extras=dict(data["extras"]),
                provenance={str(k): str(v) for k, v in data.get("provenance", {}).items()},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed run record: {type(exc).__name__}: {exc}") from None

    def write(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``<directory>/<method>__<task>__<seed>.json`` atomically; returns the path."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / (self.key.replace("/", "__") + ".json")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True, allow_nan=False) + "\n")
        os.replace(tmp, path)
        return path


def load_records(paths: Sequence[str | os.PathLike[str]]) -> list[RunRecord]:
    """Every ``*.json`` record in the given files or directories, sorted by :attr:`RunRecord.key`.

    Raises ``ValueError`` naming the file for one that is not a run record.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("*.json")) if p.is_dir() else [p])
    records = []
    for f in files:
        try:
            records.append(RunRecord.from_json(json.loads(f.read_text())))
        except (ValueError, OSError) as exc:
            raise ValueError(f"{f}: not a benchmark run record ({exc})") from None
    return sorted(records, key=lambda r: (r.method, r.task, r.seed))
