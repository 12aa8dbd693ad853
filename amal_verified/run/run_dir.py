"""A run's directory over its lifetime: created, checkpointed, resumed, marked, kept as evidence.

What it holds (file names in :mod:`amal_verified.run.config`): ``config.json`` (the run's
configuration document, whose digest the ledger's header carries), ``ledger.jsonl`` (one hash-chained
record per world-model update), ``data/`` (the primary transitions, :mod:`~amal_verified.record.primary_log`),
``checkpoint.pt``, ``checkpoints.jsonl`` (one seal per checkpoint, chained to the ledger:
:mod:`~amal_verified.record.checkpoint_log`), ``run.json`` (status and counts), ``metrics.csv`` and
TensorBoard files (written by :mod:`~amal_verified.run.logs`) and, for the ``--unsafe-mix``
ablation, a marker file.

Contracts:

- :meth:`RunDirectory.prepare` makes a new run appear atomically: it is built in a hidden sibling
  directory -- configuration, empty ledger, the checkpoint at step 0 and ``run.json`` -- and renamed
  into place only when complete, so a run killed while it was being created leaves no half-made
  directory behind (at most the hidden one), and every run directory can be resumed.
- :meth:`RunDirectory.save_checkpoint` flushes the primary data and syncs the ledger *before* it
  atomically replaces ``checkpoint.pt``: a checkpoint never refers to data or ledger records that are
  not on disk.  The new checkpoint file is sealed (its SHA-256, step, status, ledger head and data
  manifest digest appended to ``checkpoints.jsonl``) before it replaces the previous one.
- :meth:`RunDirectory.read_for_resume` loads only a checkpoint whose SHA-256 a seal records
  (:func:`sealed_checkpoint`) and whose content agrees with its seal and with ``config.json``
  (:func:`check_sealed_run`, which ``amal certify`` checks too): a checkpoint changed on disk, or a run
  directory edited around it, is refused in one line.
- :meth:`RunDirectory.open_for_resume` checks ``config.json`` against the ledger's header and the
  checkpoint's ledger head against the ledger before anything is changed; the records written after
  the checkpoint are kept to be recomputed, and :meth:`record_update` refuses a recomputation that
  differs (:class:`DeterminismError`).
- :meth:`withdraw_certificate` removes the certificate and its signed envelope of a run that is
  resumed to change, before anything it covers changes: no certificate outlives the run it describes.
- :meth:`keep_evidence_of_failure` leaves, after an error, every update recorded so far checkable.
  A resumed run drops the data chunks written after its checkpoint (the evidence of an attempt that
  failed or was interrupted): it records those transitions again, and recomputes and checks the
  ledger records that depend on them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, final

import torch

from amal_verified._version import __version__
from amal_verified.common.durable_io import fsync_dir
from amal_verified.record.checkpoint import load_checkpoint, save_checkpoint
from amal_verified.record.checkpoint_log import (
    CHECKPOINT_LOG_FILENAME,
    CheckpointLog,
    CheckpointSeal,
    file_digest,
    manifest_digest,
    read_checkpoint_log,
)
from amal_verified.record.files import CERTIFICATE_FILENAME, SIGNED_CERTIFICATE_FILENAME
from amal_verified.record.ledger import Ledger, LedgerRecord, RunHeader, round_end_text, verify
from amal_verified.record.primary_log import PrimaryDataLog
from amal_verified.run.config import (
    CHECKPOINT_FILENAME,
    CONFIG_FILENAME,
    DATA_DIRNAME,
    RUN_FILENAME,
    UNSAFE_MARKER_FILENAME,
    TrainConfig,
    document_digest,
    read_json,
    write_json_atomic,
)

__all__ = ["CHECKPOINT_FORMAT", "DeterminismError", "RunDirectory", "check_sealed_run", "sealed_checkpoint"]

# 2: every checkpoint is sealed in checkpoints.jsonl (format 1 runs had no seals: refused, named).
CHECKPOINT_FORMAT: Final = 2
_UNSAFE_TEXT: Final = (
    "This run is the --unsafe-mix ablation (the paper's 'standard MARL' baseline): its world model was\n"
    "trained on primary AND auxiliary data without the gate. It is for comparison only and cannot be\n"
    "certified.\n"
)
_LEDGER_SYNC_EVERY: Final = 100


class DeterminismError(RuntimeError):
    """A resumed run recomputed a world-model update whose ledger record differs from the recorded one."""


@final
class RunDirectory:
    """The files of one run.  Build it with :meth:`create` or :meth:`open_for_resume`."""

    def __init__(
        self,
        path: Path,
        document: dict[str, Any],
        ledger: Ledger,
        data_log: PrimaryDataLog,
        seals: CheckpointLog,
    ) -> None:
        self.path: Final = path
        self.document: Final = document
        self.ledger = ledger
        self.data_log = data_log
        self.seals = seals
        self.checkpoint_step: int | None = None
        self._redo: dict[int, LedgerRecord] = {}

    # ------------------------------------------------------------------ opening

    @classmethod
    def prepare(
        cls,
        path: str | Path,
        document: dict[str, Any],
        seed: int,
        initialise: Callable[[RunDirectory], None],
    ) -> Path:
        """Create the run directory ``path`` (it must not exist, or be empty) atomically.

        ``initialise`` receives the directory while it is still hidden, and must write the
        configuration, the checkpoint at step 0 and the status; the ledger is closed afterwards and
        the directory renamed to ``path``.  On any failure nothing is left at ``path``.
        """
        target = Path(path)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise FileExistsError(
                f"{target} is not empty: choose a new --out directory, or resume the run in it with --resume"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        hidden = target.parent / f".{target.name}.creating-{os.getpid()}"
        shutil.rmtree(hidden, ignore_errors=True)
        files = cls.create(hidden, document, seed)
        try:
            initialise(files)
            files.close()
            if target.exists():
                target.rmdir()  # empty, checked above
            os.replace(hidden, target)
        except BaseException:
            files.discard()
            raise
        return target

    @classmethod
    def create(cls, path: str | Path, document: dict[str, Any], seed: int) -> RunDirectory:
        """A new run directory at ``path``, which must not exist yet (see :meth:`prepare`)."""
        path = Path(path)
        path.mkdir()
        try:
            digest = document_digest(document)
            header = RunHeader(digest[:16], seed, digest, __version__, str(torch.__version__))
            ledger = Ledger.create(path, header, sync_every=_LEDGER_SYNC_EVERY)
            seals = CheckpointLog.open(path, ledger.genesis)
            return cls(path, document, ledger, PrimaryDataLog(path), seals)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def write_config(self, *, unsafe_mix: bool) -> None:
        """Write ``config.json`` (and the ablation's marker): the run now exists on disk."""
        write_json_atomic(self.path / CONFIG_FILENAME, self.document)
        if unsafe_mix:
            (self.path / UNSAFE_MARKER_FILENAME).write_text(_UNSAFE_TEXT, encoding="utf-8")

    def discard(self) -> None:
        """Remove a run directory whose run could not be built (only right after :meth:`create`)."""
        with contextlib.suppress(Exception):
            self.ledger.close()
        shutil.rmtree(self.path, ignore_errors=True)

    @staticmethod
    def read_for_resume(path: str | Path, total_steps: int | None) -> tuple[TrainConfig, dict[str, Any]]:
        """The configuration and checkpoint of the run in ``path``, checked; nothing is changed.

        ``total_steps`` may extend (never shorten below the checkpoint) the run's length.
        """
        path = Path(path)
        document = read_json(path / CONFIG_FILENAME, "run configuration")
        config = TrainConfig.from_json(document["train"])
        if total_steps is not None:
            config = TrainConfig.from_json({**config.to_json(), "total_steps": total_steps})
        header = verify(path).header
        if header is None:
            raise ValueError(_config_refusal(path))
        state = check_sealed_run(path, document, header)
        if total_steps is not None and total_steps < state["step"]:
            raise ValueError(f"total_steps={total_steps} is below the checkpoint's step {state['step']}")
        return config, state

    @classmethod
    def open_for_resume(
        cls, path: str | Path, document: dict[str, Any], state: Mapping[str, Any]
    ) -> RunDirectory:
        """The run directory at the checkpoint ``state`` (from :meth:`read_for_resume`).

        Repairs a ledger record cut by a crash mid-write; refuses a checkpoint from another
        configuration, or whose ledger head the ledger does not contain.
        """
        path = Path(path)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(_format_refusal(path, state))
        if state["config"]["world_model"] != document["world_model"]:
            raise ValueError("the checkpoint belongs to a different run configuration")
        ledger = Ledger.open(path, repair_partial_tail=True, sync_every=_LEDGER_SYNC_EVERY)
        try:
            seals = CheckpointLog.open(path, ledger.genesis, repair_partial_tail=True)
            records = ledger.records()
            count, head = int(state["ledger"]["count"]), state["ledger"]["head"]
            if count > len(records) or (records[count - 1].hash if count else ledger.genesis) != head:
                raise ValueError(
                    "the ledger does not contain the checkpoint's head record: it was cut or replaced"
                )
            data_log = PrimaryDataLog(path, manifest=list(state["data_manifest"]))
            run_dir = cls(path, document, ledger, data_log, seals)
            run_dir.checkpoint_step = int(state["step"])
        except BaseException:
            ledger.close()
            raise
        # Records written after the checkpoint are recomputed and must come out identical.
        run_dir._redo = {r.step: r for r in records[count:]}
        run_dir.data_log.drop_chunks_after_manifest()
        run_dir._drop_unfinished_writes()
        return run_dir

    def _drop_unfinished_writes(self) -> None:
        """Delete the temporary files of atomic writes that a killed process left (``.NAME[.x].tmp``):
        none of them was renamed into place, so nothing refers to them."""
        for directory in (self.path, self.path / DATA_DIRNAME):
            for leftover in directory.glob(".*.tmp"):
                if leftover.is_file():
                    leftover.unlink()

    def withdraw_certificate(self) -> list[Path]:
        """Remove the run's ``certificate.dsse.json`` and ``certificate.json`` (in that order), then
        fsync the directory; returns the files removed (none if the run has no certificate).

        A resumed run calls this before it changes anything a certificate covers, so a certificate
        in the run directory always describes the run as it is; a process stopped in between leaves
        a certificate that still does.  An ``OSError`` names the file it could not remove.
        """
        removed: list[Path] = []
        for name in (SIGNED_CERTIFICATE_FILENAME, CERTIFICATE_FILENAME):
            certificate = self.path / name
            try:
                certificate.unlink()
            except FileNotFoundError:
                continue
            removed.append(certificate)
        if removed:
            fsync_dir(self.path)
        return removed

    def is_marked_complete(self) -> bool:
        """Whether ``run.json`` marks the run ``complete``."""
        try:
            status = read_json(self.path / RUN_FILENAME, "run status")
        except ValueError:
            return False
        return isinstance(status, dict) and status.get("status") == "complete"

    def rewrite_config(self) -> None:
        """Write ``config.json`` again (a resumed run whose length was changed)."""
        write_json_atomic(self.path / CONFIG_FILENAME, self.document)

    # ------------------------------------------------------------------ while running

    def record_update(
        self,
        index: int,
        batch: str,
        params: str,
        labels: tuple[str, ...],
        round_end: tuple[float, ...] | None = None,
    ) -> None:
        """Append world-model update ``index`` to the ledger, or check it against the record it redoes
        (``round_end``: the round's held-out losses, on the last update of a round with a held-out split)."""
        redo = self._redo.pop(index, None)
        if redo is None:
            self.ledger.append(index, batch, params, list(labels), round_end)
            return
        ended = None if round_end is None else round_end_text(round_end)
        recorded = (redo.batch_digest, redo.param_digest, redo.labels, redo.round_end)
        if recorded != (batch, params, labels, ended):
            raise DeterminismError(
                f"world-model update {index} was recomputed after resuming and differs from its ledger "
                "record: the run is not reproducible on this machine (thread count, library versions?)"
            )

    def save_checkpoint(self, step: int, run_state: Mapping[str, Any], *, status: str = "running") -> None:
        """Flush the primary data, sync the ledger, then atomically replace ``checkpoint.pt`` with the
        run's state at ``step`` and what it refers to (ledger head, data manifest), sealed first in
        ``checkpoints.jsonl`` with ``status`` (``running``, ``interrupted`` or ``complete``)."""
        self.data_log.flush()
        self.ledger.sync()
        head, count = self.ledger.head, len(self.ledger.records())
        manifest = self.data_log.manifest

        def seal(digest: str) -> None:
            self.seals.append(
                step=step,
                status=status,
                ledger_head=head,
                ledger_count=count,
                manifest=manifest,
                primary_transitions=self.data_log.flushed,
                checkpoint_digest=digest,
            )

        payload = {
            "format": CHECKPOINT_FORMAT,
            "amal_verified_version": __version__,
            "config": self.document,
            "step": step,
            "ledger": {"head": head, "count": count},
            "data_manifest": manifest,
            **run_state,
        }
        save_checkpoint(self.path / CHECKPOINT_FILENAME, payload, before_replace=seal)
        self.checkpoint_step = step

    def write_status(
        self, status: str, *, step: int, total_steps: int, updates: int, unsafe_mix: bool
    ) -> None:
        """Atomically replace ``run.json``: the status and the counts an observer reads.

        ``status`` is ``running``, ``complete``, ``interrupted`` (stopped by a signal) or ``failed``
        (stopped by an error); an interrupted or failed run resumes from ``checkpoint_step``.
        """
        write_json_atomic(
            self.path / RUN_FILENAME,
            {
                "status": status,
                "step": step,
                "checkpoint_step": self.checkpoint_step,
                "total_steps": total_steps,
                "ledger_head": self.ledger.head,
                "ledger_count": len(self.ledger.records()),
                "primary_transitions": self.data_log.flushed,
                "world_model_updates": updates,
                "unsafe_mix": unsafe_mix,
            },
        )

    def keep_evidence_of_failure(
        self, status: str, *, step: int, total_steps: int, updates: int, unsafe_mix: bool
    ) -> None:
        """After an error or a second interrupt: flush the primary data and sync the ledger, so every
        world-model update recorded so far stays checkable, and mark the run ``status`` (resumable
        from its last checkpoint).  Errors here are secondary and must not hide the one being raised."""
        with contextlib.suppress(Exception):
            self.data_log.flush()
            self.ledger.sync()
            self.write_status(
                status, step=step, total_steps=total_steps, updates=updates, unsafe_mix=unsafe_mix
            )

    def close(self) -> None:
        self.ledger.close()


def sealed_checkpoint(path: str | Path, genesis: str) -> CheckpointSeal:
    """The seal of the run's ``checkpoint.pt``: the seal in ``checkpoints.jsonl`` (verified against the
    ledger's ``genesis``; an incomplete last line is ignored) that records the file's SHA-256.

    ``ValueError`` (one line, naming the file and what to do) if the log is missing or damaged, or if
    no seal records the checkpoint's digest: the file was changed after it was written.
    """
    path = Path(path)
    checkpoint = path / CHECKPOINT_FILENAME
    if not checkpoint.is_file():
        raise ValueError(f"no checkpoint at {checkpoint}")
    log = read_checkpoint_log(path, genesis)
    if not log.path.exists():
        state: Mapping[str, Any] = {"format": CHECKPOINT_FORMAT}
        with contextlib.suppress(Exception):
            state = load_checkpoint(checkpoint, restore=False)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(_format_refusal(path, state))
        raise ValueError(f"{path}: {log.problems[0]}")
    if log.problems and not (log.partial_tail and len(log.problems) == 1):
        raise ValueError(f"{path}: {log.problems[0]}")
    seal = log.sealing(file_digest(checkpoint))
    if seal is None:
        raise ValueError(
            f"{checkpoint}: its SHA-256 is recorded by no seal in {CHECKPOINT_LOG_FILENAME}: the file was "
            "changed after it was written (a bit flip or an edit); restore it from a copy"
        )
    return seal


def check_sealed_run(
    path: str | Path, document: Mapping[str, Any], header: RunHeader, *, restore: bool = True
) -> dict[str, Any]:
    """The content of the run's ``checkpoint.pt`` (``restore`` as for
    :func:`~amal_verified.record.checkpoint.load_checkpoint`), checked against the run directory: what
    :meth:`RunDirectory.read_for_resume` and ``amal certify`` require before they trust a run.

    ``document`` (``config.json``) has the configuration digest and the seed of the ledger ``header``; a
    seal records the checkpoint's SHA-256 (:func:`sealed_checkpoint`); the checkpoint is a trainer
    checkpoint of format :data:`CHECKPOINT_FORMAT` whose step, ledger head and count and data manifest
    are its seal's, and whose recorded configuration has ``document``'s digest.  A run directory whose
    chains were recomputed after an edit (``config.json``, the ledger header) fails the last two: the
    sealed checkpoint still holds the original ledger head and configuration.

    ``ValueError`` (one line, naming the file) otherwise; ``CheckpointError`` for an unreadable checkpoint.
    """
    path = Path(path)
    if document_digest(document) != header.config_digest:
        raise ValueError(_config_refusal(path))
    train = document.get("train")
    if not isinstance(train, Mapping) or train.get("seed") != header.seed:
        raise ValueError(
            f"{path / CONFIG_FILENAME}: its seed is not the seed {header.seed} in the run's ledger header: "
            "the run directory was edited; restore it from a copy"
        )
    seal = sealed_checkpoint(path, header.genesis)
    state = load_checkpoint(path / CHECKPOINT_FILENAME, restore=restore)
    if not isinstance(state.get("step"), int):
        raise ValueError(f"{path / CHECKPOINT_FILENAME} is not a trainer checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(_format_refusal(path, state))
    _check_sealed_state(path, seal, state)
    recorded = state.get("config")
    if not isinstance(recorded, Mapping) or document_digest(recorded) != header.config_digest:
        raise ValueError(
            f"{path / CHECKPOINT_FILENAME} (seal {seal.index}) records another configuration than "
            f"{CONFIG_FILENAME}: the run directory was edited; restore it from a copy"
        )
    return state


def _config_refusal(path: Path) -> str:
    return (
        f"{path / CONFIG_FILENAME} does not match the configuration digest in the run's ledger: it "
        "was edited after the run started; restore it (only the run length may change, with --steps)"
    )


def _check_sealed_state(path: Path, seal: CheckpointSeal, state: Mapping[str, Any]) -> None:
    """A sealed checkpoint's content agrees with its seal (step, ledger head and count, manifest)."""
    ledger = state.get("ledger")
    manifest = state.get("data_manifest")
    if (
        state.get("step") != seal.step
        or not isinstance(ledger, Mapping)
        or (ledger.get("head"), ledger.get("count")) != (seal.ledger_head, seal.ledger_count)
        or not isinstance(manifest, list)
        or manifest_digest(manifest) != seal.manifest_digest
    ):
        raise ValueError(
            f"{path / CHECKPOINT_FILENAME} disagrees with its seal {seal.index} in {CHECKPOINT_LOG_FILENAME} "
            "(step, ledger head or data manifest): the run directory was edited; restore it from a copy"
        )


def _format_refusal(path: Path, state: Mapping[str, Any]) -> str:
    return (
        f"{path / CHECKPOINT_FILENAME}: checkpoint format {state.get('format')!r} is not supported: this "
        f"version resumes and certifies checkpoint format {CHECKPOINT_FORMAT} (checkpoints sealed in "
        f"{CHECKPOINT_LOG_FILENAME}); train the run again with this version"
    )
