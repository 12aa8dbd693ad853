"""The world-model learner of a run in a process of its own (``TrainConfig.wm_learner_process``).

The learner reads only the primary buffer, so it can train on another core while the trainer goes
on collecting data and updating the policy.  Contract, for a round due at primary step ``n``:

- :meth:`LearnerProcess.start_round` hands the process the primary transitions stored since the
  previous round (its own copy of the primary buffer then holds exactly the trainer's rows
  ``[0, n)``) and returns at once; the process runs the round as the in-process learner would
  (:meth:`~amal_verified.world_model.learner.WorldModelLearner.begin_round`, then updates while
  the round lasts), with the same streams, thread count and deterministic kernels, so its updates
  -- and the ledger records made of them -- are the in-process learner's, bit for bit;
- :meth:`LearnerProcess.finish_round` waits for the round and returns its updates, in order, and
  the model's parameters after it; the trainer appends the records to the ledger then;
- one round at a time: a round starts only after the previous one finished.

The process is a fresh interpreter running this module (``python -m``: neither a fork of a process
whose torch holds threads, nor a ``multiprocessing`` child, which would import the user's main script
again), with the same copy of the library, started from a learner state and a primary-buffer state.
Messages are pickled over two pipes with the standard pickler, which copies tensors and keeps their
labels: the process's primary buffer refuses anything that is not primary data, and its optimizer is
gated as in the trainer.  An error in the process (a refused update included) is raised in the
trainer as the exception the process raised; a process that dies is reported with its exit code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, final

import torch

import amal_verified
from amal_verified.common.rng_streams import RunStreams
from amal_verified.isolation.buffers import Batch, PrimaryBuffer
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec, WorldModelUpdate

__all__ = ["LearnerProcess", "LearnerProcessError", "RoundResult"]


class LearnerProcessError(RuntimeError):
    """The learner's process died, or failed in a way that cannot be re-raised as it was."""


@dataclass(frozen=True)
class RoundResult:
    """One finished round: its updates in order, and the model's ``state_dict`` after it."""

    updates: tuple[WorldModelUpdate, ...]
    model_state: dict[str, Any]


@dataclass(frozen=True)
class _Setup:
    spec: dict[str, Any]
    seed: int
    threads: int
    learner_state: Mapping[str, Any]
    buffer: dict[str, Any]  # PrimaryBuffer's constructor arguments
    buffer_state: Mapping[str, Any]


_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL


@final
class LearnerProcess:
    """A world-model learner serving rounds from its own process (see the module docstring)."""

    def __init__(
        self,
        spec: WorldModelSpec,
        *,
        seed: int,
        threads: int,
        learner_state: Mapping[str, Any],
        primary: PrimaryBuffer,
    ) -> None:
        buffer = {
            "capacity": primary.capacity,
            "obs_shape": primary.obs_shape,
            "action_shape": primary.action_shape,
            "obs_dtype": primary.obs_dtype,
            "action_dtype": primary.action_dtype,
            "source": primary.source.name,
        }
        setup = _Setup(spec.to_json(), seed, threads, learner_state, buffer, primary.state_dict())
        child_reads, parent_writes = os.pipe()
        parent_reads, child_writes = os.pipe()
        library = str(Path(amal_verified.__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [library, os.environ.get("PYTHONPATH")])),
        }
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(child_reads), str(child_writes)],
                pass_fds=(child_reads, child_writes),
                stdin=subprocess.DEVNULL,
                env=env,
                # Its own session: a Ctrl-C at the terminal reaches the trainer alone, which then
                # checkpoints (finishing the running round) before it stops.
                start_new_session=True,
            )
        except BaseException:
            for fd in (child_reads, parent_writes, parent_reads, child_writes):
                os.close(fd)
            raise
        os.close(child_reads)
        os.close(child_writes)
        self._to_child = Connection(parent_writes, readable=False)
        self._from_child = Connection(parent_reads, writable=False)
        self._in_round = False
        try:
            self._send(("setup", setup))
            self._receive()  # the process is ready (or raises what stopped it)
        except BaseException:
            self.close()
            raise

    @property
    def in_round(self) -> bool:
        """Whether a round was started and not yet finished."""
        return self._in_round

    def start_round(self, rows: Batch | None, updates: int | None) -> None:
        """Add ``rows`` (the primary transitions stored since the previous round) to the process's
        buffer and start a round of at most ``updates`` updates; returns at once."""
        if self._in_round:
            raise RuntimeError("a world-model round is running: finish_round() before starting the next")
        self._send(("round", rows, updates))
        self._in_round = True

    def finish_round(self) -> RoundResult:
        """Wait for the running round; its updates in order and the model after it."""
        if not self._in_round:
            raise RuntimeError("no world-model round is running: start_round() first")
        self._in_round = False
        updates, model_state = self._receive()
        return RoundResult(tuple(updates), model_state)

    def learner_state(self) -> dict[str, Any]:
        """The learner's :meth:`~WorldModelLearner.state_dict` (between rounds)."""
        if self._in_round:
            raise RuntimeError("the learner's state is read between rounds: finish_round() first")
        self._send(("state",))
        state: dict[str, Any] = self._receive()
        return state

    def close(self) -> None:
        """Stop the process (a running round is abandoned)."""
        if self._process.poll() is None:
            with contextlib.suppress(OSError):
                self._to_child.send_bytes(pickle.dumps(("stop",), protocol=_PROTOCOL))
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._to_child.close()
        self._from_child.close()

    def _send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=_PROTOCOL)
        try:
            self._to_child.send_bytes(data)
        except OSError as exc:
            raise self._died() from exc

    def _receive(self) -> Any:
        try:
            kind, value = pickle.loads(self._from_child.recv_bytes())
        except (EOFError, OSError) as exc:
            raise self._died() from exc
        if kind == "error":
            error, text = value
            if isinstance(error, BaseException):
                raise error from LearnerProcessError(f"in the world-model learner's process:\n{text}")
            raise LearnerProcessError(f"the world-model learner's process failed:\n{text}")
        return value

    def _died(self) -> LearnerProcessError:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return LearnerProcessError(
            f"the world-model learner's process stopped (exit code {code}); the run can resume from its "
            "last checkpoint"
        )


def _serve(receive: Connection, send: Connection) -> None:
    """The process: build the learner and its buffer, then serve rounds until told to stop."""

    def reply(kind: str, value: Any) -> None:
        send.send_bytes(pickle.dumps((kind, value), protocol=_PROTOCOL))

    try:
        _, setup = pickle.loads(receive.recv_bytes())
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(setup.threads)
        learner = WorldModelLearner(WorldModelSpec.from_json(setup.spec), RunStreams(setup.seed))
        learner.load_state_dict(setup.learner_state)
        primary = PrimaryBuffer(seed=0, **setup.buffer)
        primary.load_state_dict(setup.buffer_state)
    except BaseException as exc:
        _report(reply, exc)
        return
    reply("ready", None)
    while True:
        try:
            message = pickle.loads(receive.recv_bytes())
        except EOFError:
            return  # the trainer went away
        try:
            if message[0] == "stop":
                return
            if message[0] == "state":
                reply("state", learner.state_dict())
                continue
            _, rows, limit = message
            if rows is not None:
                primary.add(rows.obs, rows.action, rows.reward, rows.next_obs, rows.done)
            learner.begin_round(primary, limit)
            updates = []
            while learner.in_round:
                updates.append(learner.update(primary))
            reply("round", (updates, learner.model.state_dict()))
        except BaseException as exc:
            _report(reply, exc)


def _report(reply: Callable[[str, Any], None], exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    sent: BaseException | None = exc
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # an exception that does not survive pickling: its text still reaches the trainer
        sent = None
    reply("error", (sent, text))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
