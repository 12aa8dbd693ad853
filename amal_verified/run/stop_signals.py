"""SIGINT and SIGTERM as a request to stop at the next safe point, and what a stopped run reports.

While :class:`StopSignals` is active (in the main thread; elsewhere it does nothing), the first
SIGINT (Ctrl-C) or SIGTERM (what schedulers and ``docker stop`` send) only records the request:
the training loop finishes its current step, checkpoints and raises :class:`RunInterrupted`.  A
second signal raises ``KeyboardInterrupt`` at once, so a second Ctrl-C still exits promptly (the run
then resumes from its previous checkpoint).  A signal the process ignores (``SIG_IGN``: a job started
in the background by a non-interactive shell, or under ``nohup``, ignores SIGINT) stays ignored, as
Python's own Ctrl-C handling leaves it.  The handlers that were installed before are restored on exit.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, final

__all__ = ["RunInterrupted", "StopSignals"]

_HANDLED: Final = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(KeyboardInterrupt):
    """The run stopped at a safe point after SIGINT or SIGTERM; its checkpoint is at :attr:`step`.

    A ``KeyboardInterrupt``, so that code which handles Ctrl-C handles it too.
    """

    def __init__(self, step: int, signal_name: str, run_dir: Path) -> None:
        super().__init__(step, signal_name, run_dir)
        self.step = step
        self.signal_name = signal_name
        self.run_dir = run_dir

    def __str__(self) -> str:
        return (
            f"interrupted by {self.signal_name} at step {self.step} (checkpointed); "
            f"resume with: amal train --resume --out {self.run_dir}"
        )

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal: 128 + its number."""
        return 128 + int(signal.Signals[self.signal_name])


@final
class StopSignals:
    """Context manager: while active, SIGINT/SIGTERM set :attr:`requested` instead of interrupting."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt  # the second signal: stop now
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in _HANDLED:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
