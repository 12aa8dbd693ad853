"""Where the benchmark's cells run: worker processes on this machine, or Ray tasks.

:func:`run_unordered` runs one function over many argument tuples and yields each result as it
finishes, in whatever order they finish; the caller writes each result as it arrives, so an
interrupted sitting keeps everything finished.  The function must be importable by name (module
level) and return plain data.

- ``local``: a ``spawn`` process pool of ``jobs`` workers, one call per process (a fresh interpreter
  per cell: no global state crosses cells).
- ``ray``: one Ray task per call, at most ``jobs`` in flight, one CPU each (every cell trains on one
  torch thread), no retries
  (a cell that fails is reported as failed, as locally); attached to ``RAY_ADDRESS`` when it is set,
  else a local Ray instance (:class:`~amal_verified.agents.ray_population.RaySession`).  Ray starts a
  fresh worker process per task (``max_calls=1``), as the pool does.

A call that raises, or whose worker dies, yields the exception in place of a result.

``amal bench`` chooses with :func:`choose_backend`: ``auto`` (its default) is Ray where Ray is
installed and ``RAY_ADDRESS`` names a cluster to use, the local pool otherwise (on one machine a
local Ray instance only adds its start-up and its own processes to the same cores).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

__all__ = ["BACKEND_CHOICES", "Backend", "choose_backend", "run_unordered"]

Backend = Literal["local", "ray"]
BACKEND_CHOICES = ("auto", "local", "ray")


def choose_backend(choice: str, environ: Mapping[str, str] | None = None) -> Backend:
    """``local`` or ``ray`` as asked; ``auto``: ``ray`` if Ray is installed and ``RAY_ADDRESS`` is set."""
    named: dict[str, Backend] = {"local": "local", "ray": "ray"}
    if choice in named:
        return named[choice]
    if choice != "auto":
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {choice!r}")
    env = os.environ if environ is None else environ
    if env.get("RAY_ADDRESS") and importlib.util.find_spec("ray") is not None:
        return "ray"
    return "local"


def run_unordered(
    fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], *, backend: Backend, jobs: int
) -> Iterator[tuple[tuple[Any, ...], Any, BaseException | None]]:
    """``(args, result, None)`` or ``(args, None, exception)`` for each ``fn(*args)``, as they finish."""
    if not calls:
        return
    if backend == "ray":
        yield from _ray_unordered(fn, calls, jobs)
        return
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
    ) as pool:
        futures = {pool.submit(fn, *args): args for args in calls}
        for future in concurrent.futures.as_completed(futures):
            try:
                yield futures[future], future.result(), None
            except Exception as exc:  # the worker raised, or died (e.g. out of memory)
                yield futures[future], None, exc


def _ray_unordered(
    fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], jobs: int
) -> Iterator[tuple[tuple[Any, ...], Any, BaseException | None]]:
    from amal_verified.agents.ray_population import RaySession

    try:
        ray = RaySession.open(cpus=jobs)
    except ImportError:
        raise ImportError(
            "amal bench --backend ray needs Ray, which is not installed: "
            "pip install 'amal_verified[distributed]'"
        ) from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0, max_calls=1)(fn)
        waiting = list(calls)
        pending: dict[Any, tuple[Any, ...]] = {}
        while waiting or pending:
            while waiting and len(pending) < jobs:  # at most `jobs` cells in flight, as locally
                args = waiting.pop(0)
                pending[remote.remote(*args)] = args
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            args = pending.pop(ready)
            try:
                yield args, ray.get(ready), None
            except Exception as exc:  # RayTaskError (the call raised) or a lost worker
                yield args, None, exc
    finally:
        RaySession.close()
