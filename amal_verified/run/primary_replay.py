"""A run's world-model updates replayed from its recorded primary data alone: in this process, or split
over processes by ensemble member.

:class:`PrimaryReplay` rebuilds the run's gated :class:`WorldModelLearner` from the run seed and runs its
updates one after the other.  :class:`MemberSplitReplay` computes the same updates with several
processes: the members of a full-member ensemble share nothing in an update (each draws its own
bootstrap rows from the shared batch and has its own loss term, and Adam and SGD act element-wise), so
a worker process that replays members ``start .. stop - 1`` for every update computes those members of
the whole learner (``WorldModelLearner(members=...)``).  After each update every worker writes its
members' parameters into one of two shared state buffers; :meth:`MemberSplitReplay.update` hashes the
assembled ``state_dict`` (the digest the trainer recorded) once every worker has written it.  With two
buffers the workers compute update ``u + 1`` while update ``u`` is hashed, and never run further ahead.

The split is exact only where torch's kernels take the same paths for a range of members as for the
whole ensemble (vectorised and scalar transcendental functions differ in the last bit, and which one
runs depends on shapes): :func:`split_is_exact` checks it on the run's first update, bit for bit,
before a split is used, and a caller that finds a split replay disagreeing with its record replays
sequentially before concluding anything (``certify`` does).  A split that matches the ledger is itself
a replay from the primary data alone, so it can only certify what is true.

Workers are fresh Python processes (``python -c``, never a re-import of the caller's ``__main__``) that
import only this module's dependencies (no auxiliary-side code).  They receive the run's configuration,
specification and recorded primary data through a pipe from the certifying process (never from files
they read themselves), write parameters into a file mapping shared with it, and return batch digests
and labels.  A worker that fails or dies ends the replay with :class:`ReplayWorkerError`;
:meth:`MemberSplitReplay.close` stops every worker.  :func:`replay_processes` chooses how many to use.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, final

import torch

from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.record.ledger import state_digest
from amal_verified.run.config import TrainConfig, primary_count_at_round
from amal_verified.world_model.ensemble import EnsembleWorldModel
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec, WorldModelUpdate

__all__ = [
    "MemberSplitReplay",
    "PrimaryReplay",
    "ReplayWorkerError",
    "member_ranges",
    "replay_processes",
    "split_is_exact",
]

# A replay is split only when it is long enough to repay the workers' start (each imports torch:
# seconds): about 10 s of arithmetic at a single core's rate (benchmarks/README.md, flop_budget.py).
_SPLIT_MIN_FLOP: Final = 4e11
_STOP_S: Final = 10.0


class ReplayWorkerError(RuntimeError):
    """A replay worker process failed or died; the message names the worker and the cause."""


@final
class PrimaryReplay:
    """A run's world-model learner rebuilt from its seed and trained on its recorded primary data alone.

    This is the replay :func:`~amal_verified.run.certify.certify_run` checks against the ledger, and the
    "without auxiliary agents" world model of :mod:`amal_tools.bench.isolation`.  Construction sets the
    process up as the trainer does (``torch.use_deterministic_algorithms(True)``, ``config.threads``
    threads) and builds, from ``RunStreams(config.seed)``, the gated :class:`WorldModelLearner` (never the
    unsafe ablation's) and the primary buffer with the trainer's seed.  :meth:`update` runs the learner's
    next update ``u`` after filling the buffer, in recorded order, with exactly the
    :func:`~amal_verified.run.config.primary_count_at_update` transitions the trainer had stored before
    it, beginning a round (:meth:`WorldModelLearner.begin_round`) before each round's first update as the
    trainer does.  Nothing here reads auxiliary data, an environment or a policy.  ``members`` restricts the
    learner to a range of the ensemble's members (see :class:`WorldModelLearner`).
    """

    @checked
    def __init__(
        self,
        config: TrainConfig,
        spec: WorldModelSpec,
        data: Mapping[str, torch.Tensor],
        available: int,
        members: tuple[int, int] | None = None,
    ) -> None:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(config.threads)
        streams = RunStreams(config.seed)
        self.config: Final = config
        # gated, as in the trainer; never unsafe
        self.learner: Final = WorldModelLearner(spec, streams, members=members)
        discrete = spec.discrete
        self.buffer: Final = PrimaryBuffer(
            config.buffer_size,
            obs_shape=(spec.obs_dim,),
            action_shape=() if discrete else (spec.action_dim,),
            seed=streams.int_seed("primary/buffer"),
            action_dtype=torch.int64 if discrete else torch.float32,
        )
        self._data: Final = data
        self.available: Final = available
        self._stored = 0
        self._rounds = 0

    def update(self) -> WorldModelUpdate:
        """Run the next update; before a round's first update, store the primary transitions the round
        saw and begin it as the trainer does.  ``ValueError`` if the recorded data end before that
        count.  Where a round ends is the learner's own decision (its update limit, or its held-out
        loss), recomputed here: the update's ``round_end`` is what the ledger must hold."""
        if not self.learner.in_round:
            needed = primary_count_at_round(self.config, self._rounds + 1)
            if needed > self.available:
                raise ValueError(
                    f"update {self.learner.updates + 1} needs {needed} primary transitions, the recorded "
                    f"data hold {self.available} (data missing from the end)"
                )
            if needed > self._stored:
                rows = slice(self._stored, needed)
                data = self._data
                self.buffer.add(
                    data["obs"][rows],
                    data["action"][rows],
                    data["reward"][rows],
                    data["next_obs"][rows],
                    data["terminated"][rows],
                )
                self._stored = needed
            self.learner.begin_round(self.buffer, self.config.wm_updates_per_round)
            self._rounds += 1
        return self.learner.update(self.buffer)


def _splittable(spec: WorldModelSpec) -> bool:
    # With a held-out split, the whole ensemble's held-out loss ends each round.
    return spec.model == "ensemble" and not spec.shared_trunk and spec.members > 1 and not spec.holdout


def replay_processes(spec: WorldModelSpec, updates: int, jobs: int | None = None) -> int:
    """How many processes replay ``updates`` updates of ``spec``: 1 (here) or a member split.

    ``jobs``: at most this many (``None``: the CPUs this process may use).  A split needs full members
    and is used only when the replay is long enough to repay starting the workers.
    """
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    limit = jobs if jobs is not None else _usable_cpus()
    if limit < 2 or not _splittable(spec):
        return 1
    if jobs is None:
        member = _sized_like(spec, members=1)
        per_update = 6.0 * sum(p.numel() for p in member.parameters()) * spec.members * spec.batch_size
        if per_update * updates < _SPLIT_MIN_FLOP:
            return 1
    return min(limit, spec.members)


def _sized_like(spec: WorldModelSpec, members: int) -> EnsembleWorldModel:
    """A model of ``spec``'s architecture with ``members`` members, for its sizes only (its values are
    not the run's)."""
    return EnsembleWorldModel(
        spec.obs_dim,
        spec.action_dim,
        members=members,
        generator=torch.Generator().manual_seed(0),
        encoder_sizes=spec.encoder_sizes,
        gru_hidden=spec.gru_hidden,
        decoder_sizes=spec.decoder_sizes,
        normalise=spec.normalise,
    )


def _usable_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every CPU counts
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def member_ranges(members: int, processes: int) -> list[tuple[int, int]]:
    """``processes`` contiguous ranges covering ``0 .. members - 1``, sizes differing by at most one."""
    bounds = [i * members // processes for i in range(processes + 1)]
    return list(itertools.pairwise(bounds))


def split_is_exact(
    config: TrainConfig,
    spec: WorldModelSpec,
    data: Mapping[str, torch.Tensor],
    available: int,
    processes: int,
) -> bool:
    """Whether the first update, computed for each of :func:`member_ranges` ``(spec.members, processes)``
    here, is the whole learner's first update restricted to those members, bit for bit (``False`` when
    the recorded data hold too few transitions for it).  Costs about two updates."""
    if primary_count_at_round(config, 1) > available:
        return False
    whole = PrimaryReplay(config, spec, data, available)
    whole.update()
    state = {k: _plain(v) for k, v in whole.learner.model.state_dict().items()}
    for start, stop in member_ranges(spec.members, processes):
        part = PrimaryReplay(config, spec, data, available, members=(start, stop))
        part.update()
        for name, value in part.learner.model.state_dict().items():
            if not torch.equal(_plain(value), state[name][start:stop]):
                return False
    return True


_WORKER_CODE: Final = "from amal_verified.run.primary_replay import _worker_main; _worker_main()"
_ALIGN: Final = 64


def _layout(shapes: Mapping[str, torch.Tensor]) -> tuple[list[tuple[str, str, list[int], int]], int]:
    """Where each entry of a ``state_dict`` lies in one slot: (name, dtype, shape, byte offset), and the
    slot's size in bytes (entries aligned to 64 bytes)."""
    entries: list[tuple[str, str, list[int], int]] = []
    offset = 0
    for name, value in shapes.items():
        entries.append((name, str(value.dtype).removeprefix("torch."), list(value.shape), offset))
        offset += -(-value.numel() * value.element_size() // _ALIGN) * _ALIGN
    return entries, max(offset, _ALIGN)


def _slot_views(
    flat: torch.Tensor, entries: list[tuple[str, str, list[int], int]], start: int
) -> dict[str, torch.Tensor]:
    views: dict[str, torch.Tensor] = {}
    for name, dtype_name, shape, offset in entries:
        dtype = getattr(torch, dtype_name)
        count = math.prod(shape)
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        views[name] = flat.narrow(0, start + offset, nbytes).view(dtype).view(shape)
    return views


def _read_exactly(stream: Any, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError("the certifying process closed the pipe")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _worker_main() -> None:
    """A worker process: read the replay's inputs from standard input, replay a range of members.

    Protocol: standard input carries an 8-byte little-endian length and a ``torch.save`` payload (the
    configuration, specification, recorded data, member range, update count and shared-slot layout),
    then one byte per credit: ``1`` lets the worker write its next update into a slot, ``0`` or the end
    of input stops it.  Standard output carries one JSON line per update (its batch digest, labels and
    loss), or one ``error`` line; anything else the process prints goes to standard error.  A worker
    with a module of ``certify.FORBIDDEN_MODULES`` loaded reports an error instead of replaying.
    """
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever else writes to standard output, Python or C, goes to standard error
    sys.stdout = sys.stderr
    source = sys.stdin.buffer
    try:
        size = int.from_bytes(_read_exactly(source, 8), "little")
        job = torch.load(io.BytesIO(_read_exactly(source, size)), weights_only=True)
        config = TrainConfig.from_json(json.loads(job["config"]))
        spec = WorldModelSpec.from_json(json.loads(job["spec"]))
        start, stop = job["members"]
        replay = PrimaryReplay(config, spec, job["data"], job["available"], members=(start, stop))
        entries = json.loads(job["layout"])
        flat = torch.from_file(job["slots"], shared=True, size=2 * job["slot_bytes"], dtype=torch.uint8)
        slots = [_slot_views(flat, entries, k * job["slot_bytes"]) for k in range(2)]
        from amal_verified.run.certify import FORBIDDEN_MODULES

        loaded = [m for m in FORBIDDEN_MODULES if m in sys.modules]
        if loaded:
            raise RuntimeError(f"the replay worker had auxiliary-side modules loaded: {', '.join(loaded)}")
        for u in range(1, job["count"] + 1):
            update = replay.update()
            if source.read(1) != b"\x01":  # stopped by the certifying process
                return
            slot = slots[u % 2]
            with torch.no_grad():
                for name, value in replay.learner.model.state_dict().items():
                    slot[name][start:stop].copy_(_plain(value))
            line = {"update": u, "batch": update.batch_digest, "labels": update.labels, "loss": update.loss}
            protocol.write(json.dumps(line) + "\n")
            protocol.flush()
    except BaseException as exc:  # reported to the certifying process, which decides
        protocol.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        protocol.flush()


def _plain(t: torch.Tensor) -> torch.Tensor:
    from amal_verified.isolation.tagging import TaggedTensor

    return t.elem if isinstance(t, TaggedTensor) else t


@final
@dataclass
class _Worker:
    name: str
    process: subprocess.Popen[bytes]
    stdin: IO[bytes]
    stdout: IO[bytes]
    errors: IO[bytes]


@final
class MemberSplitReplay:
    """The updates of :class:`PrimaryReplay`, computed by ``processes`` worker processes, each for a
    contiguous range of the ensemble's members (see the module docstring).

    ``count``: how many updates the workers replay (:meth:`update` may be called that many times).
    Use as a context manager, or call :meth:`close`.
    """

    @checked
    def __init__(
        self,
        config: TrainConfig,
        spec: WorldModelSpec,
        data: Mapping[str, torch.Tensor],
        available: int,
        count: int,
        processes: int,
    ) -> None:
        if not _splittable(spec):
            raise ValueError(
                "a member split needs an ensemble of at least two full members (model='ensemble', "
                "shared_trunk=False): replay it with PrimaryReplay"
            )
        if not 2 <= processes <= spec.members:
            raise ValueError(f"processes must lie in [2, {spec.members}] (the members), got {processes}")
        if count < 0:
            raise ValueError(f"count must be at least 0, got {count}")
        self.count: Final = count
        self.updates = 0
        self._workers: Final[list[_Worker]] = []
        shm = Path("/dev/shm")
        self._directory: Final = Path(
            tempfile.mkdtemp(
                prefix="amal-replay-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None
            )
        )
        try:
            shapes = _sized_like(spec, members=spec.members).state_dict()
            entries, slot_bytes = _layout(shapes)
            path = self._directory / "slots"
            with path.open("wb") as f:
                f.truncate(2 * slot_bytes)
            flat = torch.from_file(str(path), shared=True, size=2 * slot_bytes, dtype=torch.uint8)
            self._slots: Final = [_slot_views(flat, entries, k * slot_bytes) for k in range(2)]
            package_root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
            payloads: list[bytes] = []
            for start, stop in member_ranges(spec.members, processes):
                job = io.BytesIO()
                torch.save(
                    {
                        "config": json.dumps(config.to_json()),
                        "spec": json.dumps(spec.to_json()),
                        "data": {name: _plain(value).contiguous() for name, value in data.items()},
                        "available": available,
                        "count": count,
                        "members": [start, stop],
                        "slots": str(path),
                        "slot_bytes": slot_bytes,
                        "layout": json.dumps(entries),
                    },
                    job,
                )
                payloads.append(job.getvalue())
                # open while the worker lives; closed by close()
                errors = tempfile.TemporaryFile(dir=self._directory)  # noqa: SIM115
                process = subprocess.Popen(
                    [sys.executable, "-c", _WORKER_CODE],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    env=env,
                )
                if process.stdin is None or process.stdout is None:  # pragma: no cover - PIPE requested
                    raise RuntimeError("subprocess.Popen returned no pipes")
                self._workers.append(
                    _Worker(f"members {start}-{stop - 1}", process, process.stdin, process.stdout, errors)
                )
            # Every worker is started before any is written to: a worker reads its job only once it has
            # imported torch, and a job larger than the pipe would hold the next worker's start back.
            for worker, payload in zip(self._workers, payloads, strict=True):
                worker.stdin.write(len(payload).to_bytes(8, "little") + payload + b"\x01\x01")
                worker.stdin.flush()
        except BaseException:
            self.close()
            raise

    def update(self) -> WorldModelUpdate:
        """The next update: every worker's part of it, and the digest of the assembled parameters.

        :class:`ReplayWorkerError` if a worker failed, died, or drew a batch that differs from the others'.
        """
        if self.updates >= self.count:
            raise ValueError(f"the workers replay {self.count} updates; all have been taken")
        u = self.updates + 1
        parts = [self._receive(worker, u) for worker in self._workers]
        batch, labels = parts[0][0], parts[0][1]
        if any((b, lab) != (batch, labels) for b, lab, _ in parts):
            raise ReplayWorkerError(f"update {u}: the replay workers drew different batches")
        digest = state_digest(self._slots[u % 2])
        for worker in self._workers:
            try:
                worker.stdin.write(b"\x01")  # slot u % 2 is free for update u + 2
                worker.stdin.flush()
            except BrokenPipeError:  # it died after sending update u
                raise self._ended(worker, u + 1) from None
        self.updates = u
        return WorldModelUpdate(
            index=u,
            loss=sum(loss for _, _, loss in parts),
            batch_digest=batch,
            param_digest=digest,
            labels=labels,
        )

    @staticmethod
    def _receive(worker: _Worker, u: int) -> tuple[str, tuple[str, ...], float]:
        line = worker.stdout.readline()
        if not line:
            raise MemberSplitReplay._ended(worker, u)
        message = json.loads(line)
        if "error" in message:
            raise ReplayWorkerError(f"replay worker ({worker.name}): {message['error']}")
        if message["update"] != u:
            raise ReplayWorkerError(
                f"replay worker ({worker.name}) sent update {message['update']}, expected {u}"
            )
        return str(message["batch"]), tuple(message["labels"]), float(message["loss"])

    @staticmethod
    def _ended(worker: _Worker, u: int) -> ReplayWorkerError:
        """The error for a worker that ended before update ``u``, with the last line it wrote."""
        worker.process.wait()
        worker.errors.seek(0)
        text = worker.errors.read().decode(errors="replace")
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return ReplayWorkerError(
            f"replay worker ({worker.name}) ended with exit code {worker.process.returncode} before "
            f"update {u}" + (f": {tail[-1]}" if tail else "")
        )

    def close(self) -> None:
        """Stop and reap every worker and remove the shared slots (idempotent)."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.stdin.close()  # end of input: the worker stops
        for worker in self._workers:
            try:
                worker.process.wait(timeout=_STOP_S)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            worker.stdout.close()
            worker.errors.close()
        self._workers.clear()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> MemberSplitReplay:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
