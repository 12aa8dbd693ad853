"""Escapes: auxiliary-labelled values leaving the tracked world, and ``declassify``.

A value leaves label tracking when it becomes a Python scalar, list or numpy
array (``.item()``, ``float()``, ``bool()``, ``.tolist()``, ``.numpy()``,
``torch.equal`` ...).  What is computed from it afterwards carries no label, so
an escape of auxiliary data is a possible laundering route.  Each escape of an
aux-labelled value is recorded (kind, sources, call site) and warned with
:class:`~amal_verified.isolation.errors.IsolationWarning`; in strict mode it raises
:class:`~amal_verified.isolation.errors.IsolationViolation` instead, unless it happens
inside ``with declassify(reason=...)``, the one explicit escape hatch, which is
itself recorded.

What the dynamic layer cannot see (documented in the README): implicit flows
(``if aux.sum() > 0: ...`` is seen as an escape by ``bool()``, but the branch
taken is not labelled), random-number channels (a global RNG consumed a
number of times that depends on aux data), shapes and counts of aux data, and
operations whose inputs are all plain tensors.  The differential audit covers
those.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from amal_verified.isolation.errors import IsolationViolation, IsolationWarning
from amal_verified.isolation.labels import Label, Source

__all__ = [
    "Declassification",
    "Escape",
    "clear_escapes",
    "declassifications",
    "declassify",
    "declassifying",
    "escapes",
    "is_strict",
    "set_strict",
    "user_call_site",
]

# The tracking machinery itself is this folder; frames in any other module (the demo, a trainer,
# the user's script) are call sites worth reporting.
_CORE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TORCH_DIR: str | None = None


def _torch_dir() -> str:
    global _TORCH_DIR
    if _TORCH_DIR is None:
        import torch

        _TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
    return _TORCH_DIR


_STDLIB_DIR = sysconfig.get_paths()["stdlib"]


def _is_internal(filename: str) -> bool:
    """The tracking machinery, torch and the standard library (``copy.deepcopy`` calls on the user's
    behalf): frames there are not call sites worth reporting."""
    if filename.startswith((_CORE_DIR, _torch_dir(), "<frozen")):
        return True
    return filename.startswith(_STDLIB_DIR) and "-packages" not in filename


def user_call_site(skip: int = 1) -> str:
    """``file:line in function`` of the innermost frame outside torch and amal_verified."""
    frame: FrameType | None = sys._getframe(skip)
    while frame is not None and _is_internal(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


@dataclass(frozen=True, slots=True)
class Escape:
    """One kind of escape at one call site (``count`` times so far)."""

    kind: str
    sources: tuple[Source, ...]
    site: str
    declassified: str | None
    count: int


@dataclass(frozen=True, slots=True)
class Declassification:
    """Entries into ``declassify(reason=...)`` with one reason at one call site, and how many."""

    reason: str
    site: str
    count: int = 1


class _State(threading.local):
    def __init__(self) -> None:
        self.reasons: list[str] = []


_state = _State()
_strict = os.environ.get("AMAL_STRICT", "") not in ("", "0", "false", "False")
_lock = threading.Lock()
_records: dict[tuple[str, str, Label, str | None], Escape] = {}
_declassifications: dict[tuple[str, str], Declassification] = {}


def set_strict(enabled: bool) -> bool:
    """Turn strict mode on or off (also ``AMAL_STRICT=1``); returns the previous setting.

    In strict mode, an escape of an aux-labelled value outside ``declassify``
    raises :class:`IsolationViolation` before the value is returned.
    """
    global _strict
    previous = _strict
    _strict = bool(enabled)
    return previous


def is_strict() -> bool:
    return _strict


@contextmanager
def declassify(*, reason: str) -> Iterator[None]:
    """Allow escapes of aux-labelled values in this block, recording them with ``reason``.

    Inside the block, ``primary()`` and ``PrimaryBuffer.add`` also accept values
    whose memory holds auxiliary-derived data, relabelling them as primary (the
    actions a policy that learns from auxiliary data executed in the real
    environment are primary data: Theorem 1 is about the recorded primary
    stream); each such relabelling is recorded as a declassified escape.

    It never disables the gate: protected parameters refuse aux-derived
    gradients inside ``declassify`` too.
    """
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("declassify needs a non-empty reason=... saying why the escape is acceptable")
    with _lock:
        site = user_call_site(3)
        previous = _declassifications.get((reason, site))
        count = 1 if previous is None else previous.count + 1
        _declassifications[(reason, site)] = Declassification(reason=reason, site=site, count=count)
    _state.reasons.append(reason)
    try:
        yield
    finally:
        _state.reasons.pop()


def declassifying() -> str | None:
    """The reason of the innermost ``declassify`` block this thread is in, if any."""
    return _state.reasons[-1] if _state.reasons else None


def record_escape(kind: str, label: Label) -> None:
    """Record (and warn about, or in strict mode refuse) an escape of ``label``-ed data."""
    if not label.has_aux:
        return
    site = user_call_site(2)
    reason = _state.reasons[-1] if _state.reasons else None
    sources = tuple(sorted(label.aux_sources))
    if reason is None and _strict:
        raise IsolationViolation(
            f"strict mode: {kind} would turn data from {', '.join(map(str, sources))} into an "
            f"untracked Python value at {site}. Compute with tensors instead, or wrap the line in "
            f"`with amal_verified.declassify(reason=...)` if this escape cannot influence the world model.",
            sources=sources,
            operation=f"{kind} at {site}",
        )
    key = (kind, site, label, reason)
    with _lock:
        previous = _records.get(key)
        count = 1 if previous is None else previous.count + 1
        _records[key] = Escape(kind=kind, sources=sources, site=site, declassified=reason, count=count)
    if reason is None and previous is None:
        warnings.warn(
            f"{kind} turned data from {', '.join(map(str, sources))} into an untracked Python value at "
            f"{site}; anything computed from it is no longer labelled (recorded in "
            f"amal_verified.escapes()).",
            IsolationWarning,
            stacklevel=3,
        )


def escapes() -> list[Escape]:
    """Every escape of aux-labelled data recorded so far, in first-seen order."""
    with _lock:
        return list(_records.values())


def declassifications() -> list[Declassification]:
    """Every ``declassify`` reason and call site entered so far (one entry each, with a count)."""
    with _lock:
        return list(_declassifications.values())


def clear_escapes() -> None:
    """Forget recorded escapes and declassifications (e.g. between audit runs)."""
    with _lock:
        _records.clear()
        _declassifications.clear()
