"""Training logs: ``metrics.csv``, TensorBoard scalars and a live progress bar.

Every logged row has the same columns (:data:`COLUMNS`); a value not measured yet is left empty in
the CSV and skipped in TensorBoard.  An ``--unsafe-mix`` run says so everywhere: an ``unsafe_mix``
column in every CSV row, the TensorBoard tag prefix ``UNSAFE-MIX/``, and the progress bar's
isolation field.  On resume, CSV rows written after the checkpoint are dropped (they are redone).
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Final, final

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["COLUMNS", "RunLogger"]

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
CSV_FILENAME: Final = "metrics.csv"
TENSORBOARD_DIRNAME: Final = "tensorboard"


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


@final
class RunLogger:
    """Writes rows to CSV and TensorBoard, and drives the progress bar (if ``progress``)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        total_steps: int,
        unsafe_mix: bool,
        progress: bool,
        resume_step: int | None = None,
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
        self._progress: Progress | None = None
        self._task = None
        self._start = time.perf_counter()
        self._start_step = resume_step or 0
        self.isolation = "UNSAFE-MIX (ablation, no gate)" if unsafe_mix else "gated"
        if progress:
            self._progress = Progress(
                TextColumn("[bold]amal train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
                refresh_per_second=4,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=total_steps, completed=self._start_step, info=""
            )

    @staticmethod
    def _truncate_after(path: Path, step: int) -> None:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def steps_per_s(self, step: int) -> float:
        """Primary environment steps per second since this logger started."""
        elapsed = time.perf_counter() - self._start
        return (step - self._start_step) / elapsed if elapsed > 0 else 0.0

    def advance(self, step: int) -> None:
        """Move the progress bar to ``step``."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=step)

    def log(self, step: int, metrics: Mapping[str, float | None]) -> None:
        """Write one row (missing columns empty) and refresh the progress bar's summary."""
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
            if value is not None and math.isfinite(value) and name != "step":
                self._tb.add_scalar(self._prefix + name, value, step)
        if self._progress is not None and self._task is not None:
            info = (
                f"{_fmt(metrics.get('steps_per_s'), '.0f')} steps/s · "
                f"return {_fmt(metrics.get('episode_return'), '.1f')} "
                f"(eval {_fmt(metrics.get('eval_return'), '.1f')}) · "
                f"WM loss {_fmt(metrics.get('wm_loss'), '.3f')} · "
                f"IG {_fmt(metrics.get('info_gain'), '.3f')} · {self.isolation}"
            )
            self._progress.update(self._task, completed=step, info=info)

    def close(self) -> None:
        """Flush and close everything (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self._tb.close()
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
