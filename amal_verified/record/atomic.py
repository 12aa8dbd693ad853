"""Atomic replacement of a file: a reader sees the old file or the new one, never a part, also after a
crash or power loss, and a failed replacement leaves nothing behind.

:func:`replace_atomically` writes the new content to a temporary file in the target's directory,
flushes, fsyncs and closes it, runs an optional check on it, renames it over the target
(``os.replace``) and fsyncs the directory.  On any failure the temporary file is removed, the target
is untouched, and the first error is the one raised: a second failure while cleaning up (closing a
file whose buffered data cannot be written either) never replaces it.  An ``OSError`` of the write or
the rename keeps its errno and names the target (its ``filename``), so a full disk or a read-only
directory reads ``<target>: No space left on device``.  Only a process killed outright (SIGKILL,
power loss) can leave a temporary file ``.<name>[.<x>].tmp``, which nothing reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from amal_verified.common.durable_io import fsync_dir

__all__ = ["name_target", "replace_atomically"]


def name_target(exc: OSError, target: Path) -> OSError:
    """``exc`` itself, naming ``target`` as the file concerned (its errno and message kept); an
    ``OSError`` without an errno (not a file-system error) is left as it is."""
    if exc.errno is not None:
        exc.filename = str(target)
        if exc.filename2 is not None:
            del exc.filename2  # the rename's second path: ``target`` alone is named
    return exc


def replace_atomically(
    tmp: Path,
    target: Path,
    write: Callable[[BinaryIO], object],
    *,
    check: Callable[[Path], object] | None = None,
    exclusive: bool = False,
) -> None:
    """Replace ``target`` with what ``write`` writes to the new file ``tmp`` (in ``target``'s directory).

    ``write`` receives the open file; afterwards it is flushed, fsync'd and closed.  ``check``, if
    given, is called with ``tmp`` (complete and closed) before the rename; an exception from it
    cancels the replacement and is raised unchanged.  With ``exclusive``, ``tmp`` must not exist yet.
    Failures: see the module docstring (``tmp`` removed, ``target`` untouched, first error raised).
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(tmp, flags, 0o666)
    except OSError as exc:
        name_target(exc, target)
        raise
    try:
        try:
            f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        try:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                f.close()  # flushes what is still buffered, which may fail again: the first error counts
            raise
        f.close()
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError):
            name_target(exc, target)
        raise
    try:
        if check is not None:
            check(tmp)
    except BaseException:
        _remove(tmp)
        raise
    try:
        os.replace(tmp, target)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError):
            name_target(exc, target)
        raise
    fsync_dir(target.parent)


def _remove(tmp: Path) -> None:
    """Remove the temporary file; a failure to do so never hides the error being raised."""
    with contextlib.suppress(OSError):
        tmp.unlink()
