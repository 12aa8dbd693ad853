"""One example of a property run as the first thing its process labels.

The library keeps process-wide switches that only ever turn on (something was labelled, an auxiliary
label was written, plain state was labelled) and takes cheaper paths while they are off; a user's
training script starts with all of them off, while a property's examples after its first run with
them on.  :func:`run_at_process_start` runs a function in a child forked from a ``multiprocessing``
forkserver that imported the property modules which asked for it (:func:`preload`) and torch's
lazily imported compiler (which constructing the first optimizer would import in every child), and
labelled nothing.

The function, its arguments and its result travel by pickle: results should hold plain Python values
(a labelled tensor unpickled here would switch tracking on in the test process): :func:`portable`
turns a tensor into them.  An exception in the
child is returned as the string ``"raised <type>: <message>"``; a child that dies is an assertion
failure naming its exit code.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch

_CONTEXT = multiprocessing.get_context("forkserver")
_PRELOAD: list[str] = ["torch._dynamo"]


def portable(t: torch.Tensor) -> tuple[str, Any]:
    """``t`` as plain Python values (its dtype's name and its nested list), for a result to send."""
    return str(t.dtype), t.tolist()


def from_portable(value: tuple[str, Any]) -> torch.Tensor:
    """The tensor :func:`portable` described."""
    dtype, values = value
    return torch.tensor(values, dtype=getattr(torch, dtype.removeprefix("torch.")))


def preload(module: str) -> None:
    """Have the forkserver import ``module`` (a property module's ``__name__``) before it forks."""
    if module not in _PRELOAD:
        _PRELOAD.insert(0, module)
        _CONTEXT.set_forkserver_preload(list(_PRELOAD))


def _child(connection: Connection, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        connection.send(function(*args))
    except BaseException as error:  # reported to the test, not lost with the child's stderr
        connection.send(f"raised {type(error).__name__}: {error}")
    finally:
        connection.close()


def run_at_process_start(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a fresh child process (see the module docstring)."""
    receive, send = _CONTEXT.Pipe(duplex=False)
    child = _CONTEXT.Process(target=_child, args=(send, function, args))
    child.start()
    send.close()
    try:
        result, received = receive.recv(), True
    except EOFError:
        result, received = None, False
    child.join()
    name = getattr(function, "__name__", repr(function))
    assert child.exitcode == 0 and received, f"{name}: the child process exited with {child.exitcode}"
    return result
