"""Training logs: ``metrics.csv``, TensorBoard scalars and progress reports.

Every logged row has the same columns (:data:`COLUMNS`); a value not measured yet is left empty in
the CSV and skipped in TensorBoard.  TensorBoard tags are grouped by what they measure
(:data:`TENSORBOARD_TAGS`): ``train/`` (the primary agent: returns, speed, SAC losses), ``eval/``
(evaluation episodes), ``world_model/`` (its loss, updates and information gain) and ``aux/`` (the
auxiliary population).  An ``--unsafe-mix`` run says so everywhere: an ``unsafe_mix`` column in every
CSV row, the TensorBoard tag prefix ``UNSAFE-MIX/`` before the group, and the progress report's
isolation field.  On resume, CSV rows written after the checkpoint are dropped (they are redone).

Progress goes to standard error.  On a terminal it is a live bar; anywhere else (``tee``, ``nohup``,
a batch scheduler, a notebook) it is plain timestamped lines, one at the first report, then at most one
every ``line_interval`` seconds, and one at the end, each with the step, the rate, the elapsed time,
the ETA and (for training) the latest returns.  :class:`ConsoleProgress` is the same report for any
``progress(done, total)`` callback, such as :func:`~amal_verified.run.certify.certify_run`'s.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Protocol, cast, final, runtime_checkable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from amal_verified.common.runtime_checks import checked
from amal_verified.record.atomic import replace_atomically
from amal_verified.record.files import METRICS_FILENAME, TENSORBOARD_DIRNAME

__all__ = ["COLUMNS", "TENSORBOARD_TAGS", "WALL_CLOCK_COLUMNS", "ConsoleProgress", "RunLogger", "TextStream"]

COLUMNS: Final = (
    "step",
    "wall_time",
    "steps_per_s",
    "episode_return",
    "eval_return",
    "wm_loss",
    "wm_updates",
    "info_gain",
    "imagined_info_gain",
    "critic_loss",
    "actor_loss",
    "alpha",
    "aux_fitness",
    "aux_dropped_nonfinite",
    "isolation",
    "unsafe_mix",
)
WALL_CLOCK_COLUMNS: Final = frozenset({"wall_time", "steps_per_s"})
"""The columns measured by the clock, which differ between two runs of one seed: they are logged
only, never checkpointed, sealed or signed (a run's record is reproducible bit for bit from its seed)."""
TENSORBOARD_TAGS: Final = {
    "steps_per_s": "train/steps_per_s",
    "episode_return": "train/episode_return",
    "critic_loss": "train/critic_loss",
    "actor_loss": "train/actor_loss",
    "alpha": "train/alpha",
    "eval_return": "eval/return",
    "wm_loss": "world_model/loss",
    "wm_updates": "world_model/updates",
    "info_gain": "world_model/info_gain",
    "imagined_info_gain": "world_model/imagined_info_gain",
    "aux_fitness": "aux/fitness",
    "aux_dropped_nonfinite": "aux/dropped_nonfinite",
}
"""The TensorBoard tag of each numeric column (an ``--unsafe-mix`` run prefixes ``UNSAFE-MIX/``)."""
CSV_FILENAME: Final = METRICS_FILENAME
DEFAULT_LINE_INTERVAL: Final = 10.0
"""Seconds between two plain progress lines (the first and the last are always written)."""


@runtime_checkable
class TextStream(Protocol):
    """Where progress is reported: anything with ``write(str)`` and ``flush()`` (``sys.stderr``, a file)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


def _fmt(value: float | None, spec: str, missing: str = "—") -> str:
    return missing if value is None or not math.isfinite(value) else format(value, spec)


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _is_terminal(stream: TextStream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


@final
class _Lines:
    """Plain progress lines for ``label``: ``done/total`` with rate, elapsed time and ETA, rate-limited."""

    def __init__(
        self,
        stream: TextStream,
        label: str,
        unit: str,
        total: int,
        start_done: int,
        interval: float,
        start: float | None = None,
    ) -> None:
        self._stream: Final = stream
        self._label: Final = label
        self._unit: Final = unit
        self.total = total
        self._start_done: Final = start_done
        self._interval: Final = interval
        self._start: Final = time.perf_counter() if start is None else start
        self._last: float | None = None
        self._last_done: int | None = None

    def report(self, done: int, details: str = "", *, force: bool = False) -> None:
        now = time.perf_counter()
        finished = done >= self.total
        due = self._last is None or now - self._last >= self._interval
        if not (force or finished or due) or (finished and self._last_done == done):
            return
        elapsed = now - self._start
        rate = (done - self._start_done) / elapsed if elapsed > 0 else math.nan
        eta = (self.total - done) / rate if rate > 0 else (0.0 if finished else None)
        percent = 100.0 * done / self.total if self.total > 0 else 100.0
        line = (
            f"{self._label} {time.strftime('%Y-%m-%d %H:%M:%S')} {self._unit} {done}/{self.total} "
            f"({percent:.0f}%) | {_fmt(rate, '.1f', '-')} {self._unit}/s | elapsed {_clock(elapsed)} "
            f"| ETA {_clock(eta)}"
        )
        self._stream.write(line + (f" | {details}" if details else "") + "\n")
        self._stream.flush()
        self._last, self._last_done = now, done


def _bar(label: str, stream: TextStream, total: int, completed: int) -> tuple[Progress, TaskID]:
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(file=cast(IO[str], stream)),
        refresh_per_second=4,
    )
    progress.start()
    return progress, progress.add_task(label, total=total, completed=completed, info="")


@final
class RunLogger:
    """Writes rows to CSV and TensorBoard and, if ``progress``, reports progress on ``stream``.

    ``stream`` (standard error when ``None``) gets a live bar when it is a terminal and plain lines
    (see the module docstring) otherwise.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        total_steps: int,
        unsafe_mix: bool,
        progress: bool,
        resume_step: int | None = None,
        stream: TextStream | None = None,
        line_interval: float = DEFAULT_LINE_INTERVAL,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._run_dir: Final = Path(run_dir)
        self._unsafe: Final = unsafe_mix
        self._prefix: Final = "UNSAFE-MIX/" if unsafe_mix else ""
        path = self._run_dir / CSV_FILENAME
        if resume_step is not None and path.exists():
            self._truncate_after(path, resume_step)
        new = not path.exists()
        self._file = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS)
        if new:
            self._csv.writeheader()
            self._file.flush()
        self._tb = SummaryWriter(str(self._run_dir / TENSORBOARD_DIRNAME), purge_step=resume_step)
        self._bar: tuple[Progress, TaskID] | None = None
        self._lines: _Lines | None = None
        self._latest: dict[str, float | None] = {}
        self._start = time.perf_counter()
        self._start_step = resume_step or 0
        self.isolation = "UNSAFE-MIX (ablation, no gate)" if unsafe_mix else "gated"
        if progress:
            out = sys.stderr if stream is None else stream
            if _is_terminal(out):
                self._bar = _bar("amal train", out, total_steps, self._start_step)
            else:
                self._lines = _Lines(out, "amal train", "steps", total_steps, self._start_step, line_interval)

    @staticmethod
    def _truncate_after(path: Path, step: int) -> None:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in kept)
        data = text.getvalue().encode("utf-8")
        replace_atomically(path.with_name(f".{path.name}.tmp"), path, lambda f: f.write(data))

    def steps_per_s(self, step: int) -> float:
        """Primary environment steps per second since this logger started."""
        elapsed = time.perf_counter() - self._start
        return (step - self._start_step) / elapsed if elapsed > 0 else 0.0

    def advance(self, step: int) -> None:
        """Report progress at ``step`` (the bar moves; a plain line is written if one is due)."""
        if self._bar is not None:
            self._bar[0].update(self._bar[1], completed=step)
        if self._lines is not None:
            self._lines.report(step, self._summary(plain=True))

    def _summary(self, *, plain: bool) -> str:
        m = self._latest
        missing = "-" if plain else "—"
        sep = " | " if plain else " · "
        parts = [
            f"return {_fmt(m.get('episode_return'), '.1f', missing)} "
            f"(eval {_fmt(m.get('eval_return'), '.1f', missing)})",
            f"WM loss {_fmt(m.get('wm_loss'), '.3f', missing)}",
            f"IG {_fmt(m.get('info_gain'), '.3f', missing)}",
            self.isolation,
        ]
        if not plain:
            parts.insert(0, f"{_fmt(m.get('steps_per_s'), '.0f')} steps/s")
        return sep.join(parts)

    def log(self, step: int, metrics: Mapping[str, float | None]) -> None:
        """Write one row (missing columns empty) and report progress with its values."""
        unknown = set(metrics) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metric columns {sorted(unknown)}")
        row: dict[str, object] = {k: "" for k in COLUMNS}
        row.update({k: ("" if v is None else v) for k, v in metrics.items()})
        row["step"] = step
        row["wall_time"] = round(time.perf_counter() - self._start, 3)
        row["isolation"] = self.isolation
        row["unsafe_mix"] = int(self._unsafe)
        self._csv.writerow(row)
        self._file.flush()
        for name, value in metrics.items():
            tag = TENSORBOARD_TAGS.get(name)
            if tag is not None and value is not None and math.isfinite(value):
                self._tb.add_scalar(self._prefix + tag, value, step)
        self._latest = dict(metrics)
        if self._bar is not None:
            self._bar[0].update(self._bar[1], completed=step, info=self._summary(plain=False))
        if self._lines is not None:
            self._lines.report(step, self._summary(plain=True))

    def close(self) -> None:
        """Flush and close everything (idempotent)."""
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None
        self._lines = None
        self._tb.close()
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@checked
@final
class ConsoleProgress:
    """A ``progress(done, total)`` callback that reports on ``stream`` (standard error when ``None``).

    A live bar when ``stream`` is a terminal, plain lines otherwise (see the module docstring), under
    ``label``, counting ``unit``.  :meth:`close` (or leaving a ``with`` block) ends the report; it is
    idempotent.
    """

    def __init__(
        self,
        label: str,
        unit: str,
        *,
        stream: TextStream | None = None,
        line_interval: float = DEFAULT_LINE_INTERVAL,
    ) -> None:
        if not (math.isfinite(line_interval) and line_interval >= 0.0):
            raise ValueError(f"line_interval must be a finite number of seconds >= 0, got {line_interval}")
        self._label: Final = label
        self._unit: Final = unit
        self._stream: Final = sys.stderr if stream is None else stream
        self._interval: Final = line_interval
        self._terminal: Final = _is_terminal(self._stream)
        self._bar: tuple[Progress, TaskID] | None = None
        self._lines: _Lines | None = None
        self._closed = False
        self._created: Final = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total``."""
        if self._closed:
            return
        if self._terminal:
            if self._bar is None:
                self._bar = _bar(self._label, self._stream, total, 0)
            self._bar[0].update(self._bar[1], total=total, completed=done)
            return
        if self._lines is None:
            self._lines = _Lines(
                self._stream, self._label, self._unit, total, 0, self._interval, self._created
            )
        self._lines.total = total
        self._lines.report(done)

    def close(self) -> None:
        """End the report: the bar stops (plain lines need no ending)."""
        self._closed = True
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
