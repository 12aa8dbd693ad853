"""The replay certificate: Theorem 1 checked for one run, from its recorded primary data alone.

``amal certify RUN_DIR`` (:func:`certify_run`) runs in a fresh process and uses nothing but the run
directory's configuration, ledger and recorded primary data — no auxiliary agent, auxiliary
environment, policy or gymnasium (the certificate records that none of those modules was loaded).
It rebuilds the world-model learner from the run seed and replays every world-model update in the
ledger: before update ``u`` the replay buffer holds exactly the primary transitions the trainer had
stored (:func:`~amal_verified.run.config.primary_counts_of_records`), the update samples its batch
with its own stream, and the batch digest, parameter digest and labels must equal the ledger's
record bit for bit; with a held-out split (``wm_holdout``), so must the held-out losses with which a
round ended (``round_end``): the replay recomputes every stopping decision.  Equality for every
update certifies that the world-model trajectory of the run is a function of the primary data alone
(Theorem 1, Eq. 8).

Checks, each failure named in the result:

- ``config.json`` matches the ledger header's ``config_digest`` (the configuration was not edited);
- the ledger verifies (hash chain, order, no edits) and holds at least the records ``run.json``
  says were written (records cut from the end are found);
- every data chunk matches the manifest (missing, changed, reordered or extra files are named);
- the number of updates in the ledger is the number the configuration implies for the recorded steps
  (with a held-out split: the number of rounds, each at most ``wm_updates_per_round`` long);
- the checkpoint log (:mod:`~amal_verified.record.checkpoint_log`) verifies and its last seal is the
  complete run: its step, status, ledger head and count are those of ``run.json`` and of the ledger,
  its manifest digest is that of ``data/manifest.json`` (primary data rewritten with a consistent
  manifest are found even where no update sampled them), and its checkpoint digest is the SHA-256 of
  ``checkpoint.pt``;
- what ``amal train --resume`` checks (:func:`~amal_verified.run.run_dir.check_sealed_run`): the sealed
  checkpoint's own recorded configuration, ledger head and count and data manifest are the run
  directory's, and the ledger header's seed is ``config.json``'s (an edit of ``config.json`` or of the
  ledger header with every digest, chain and seal recomputed around the untouched checkpoint is found);
- every replayed update reproduces its record, and the final checkpoint's world model is the one the
  last update produced.

The certificate names the *run head* (the last seal's hash), which fixes all of the above;
:func:`run_statement` turns a certificate into the in-toto statement that ``amal certify --sign``
signs (:mod:`~amal_verified.record.signing`), and :func:`statement_mismatches` compares a signed
statement with a run directory.

An ``--unsafe-mix`` run is replayed too, and fails at its first update: its world model saw
auxiliary data, which the primary data alone cannot reproduce.

The replay itself is :class:`~amal_verified.run.primary_replay.PrimaryReplay` (which
:mod:`amal_tools.bench.isolation` also uses to build a run's primary-only world model), or, for long
replays, :class:`~amal_verified.run.primary_replay.MemberSplitReplay`: the same updates computed by
several processes, each for a range of the ensemble's members.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

import torch

from amal_verified._version import __version__
from amal_verified.common.durable_io import fsync_dir
from amal_verified.common.runtime_checks import checked
from amal_verified.record.checkpoint import CheckpointError, load_checkpoint
from amal_verified.record.checkpoint_log import (
    CHECKPOINT_LOG_FILENAME,
    CheckpointSeal,
    file_digest,
    manifest_digest,
    read_checkpoint_log,
)
from amal_verified.record.files import (
    DATA_DIRNAME,
    MANIFEST_FILENAME,
    RUN_DIRECTORY_ENTRIES,
    SIGNED_CERTIFICATE_FILENAME,
)
from amal_verified.record.ledger import (
    LEDGER_FILENAME,
    LedgerRecord,
    RunHeader,
    VerificationResult,
    round_end_text,
    state_digest,
    verify,
)
from amal_verified.record.primary_log import load_primary_stream
from amal_verified.record.signing import PREDICATE_TYPE, STATEMENT_TYPE
from amal_verified.run.config import (
    CERTIFICATE_FILENAME,
    CHECKPOINT_FILENAME,
    CONFIG_FILENAME,
    RUN_FILENAME,
    TrainConfig,
    document_digest,
    primary_counts_of_records,
    read_json,
    rounds_completed_by,
    updates_completed_by,
    write_json_atomic,
)
from amal_verified.run.primary_replay import (
    MemberSplitReplay,
    PrimaryReplay,
    replay_processes,
    split_is_exact,
)
from amal_verified.run.run_dir import check_sealed_run
from amal_verified.world_model.learner import WorldModelSpec

__all__ = [
    "CERTIFICATE_FORMAT",
    "Certificate",
    "PrimaryReplay",
    "certify_run",
    "not_a_run",
    "process_has_run_state",
    "run_statement",
    "signed_path",
    "statement_mismatches",
    "write_certificate",
]

CERTIFICATE_FORMAT: Final = "amal_verified.certificate/3"

# A directory holding none of these is no run directory.
_RUN_MARKS: Final = (CONFIG_FILENAME, LEDGER_FILENAME, RUN_FILENAME)

# Modules whose presence in the certifying process would mean the replay could have used them.
FORBIDDEN_MODULES: Final = (
    "amal_verified.agents.aux_env",
    "amal_verified.agents.aux_population",
    "amal_verified.agents.cem",
    "amal_verified.agents.sac",
    "amal_verified.run.trainer",
    "amal_verified.envs",
    "gymnasium",
)


@final
@dataclass(frozen=True)
class Certificate:
    """The outcome of :func:`certify_run`; ``ok`` only if every check passed."""

    run_dir: str
    ok: bool
    updates_checked: int
    updates_in_ledger: int
    primary_transitions: int
    unsafe_mix: bool
    problems: tuple[str, ...]
    forbidden_modules_loaded: tuple[str, ...]
    seconds: float
    environment: Mapping[str, str] = field(default_factory=dict)
    ledger_head: str | None = None
    config_digest: str | None = None
    checked_at: str | None = None
    run_head: str | None = None
    checkpoint_digest: str | None = None

    def _relative(self, problem: str) -> str:
        """``problem`` naming the run directory's files relative to it (``$RUN_DIR`` for the directory
        itself) when the run directory was given as an absolute path: a certificate names no path of
        the machine that checked it."""
        if not os.path.isabs(self.run_dir):
            return problem
        return problem.replace(self.run_dir + os.sep, "").replace(self.run_dir, "$RUN_DIR")

    def to_json(self) -> dict[str, Any]:
        """The content of ``certificate.json`` (paths of the run's files relative to the run
        directory): what was checked (the run head -- the last checkpoint
        seal, which fixes the ledger head, data manifest, step count, status and checkpoint -- the
        ledger's head, the checkpoint's SHA-256 and the configuration's digest, which tie it to one
        run), against what, by which code, when."""
        return {
            "format": CERTIFICATE_FORMAT,
            "claim": "Theorem 1 (pathwise isolation): every world-model update of this run is reproduced "
            "bit for bit from the recorded primary data alone",
            "ok": self.ok,
            "verdict": "CERTIFIED" if self.ok else "NOT CERTIFIED",
            "ledger_head": self.ledger_head,
            "run_head": self.run_head,
            "checkpoint_digest": self.checkpoint_digest,
            "config_digest": self.config_digest,
            "checked_at": self.checked_at,
            "updates_checked": self.updates_checked,
            "updates_in_ledger": self.updates_in_ledger,
            "primary_transitions": self.primary_transitions,
            "unsafe_mix": self.unsafe_mix,
            "problems": [self._relative(p) for p in self.problems],
            "forbidden_modules_loaded": list(self.forbidden_modules_loaded),
            "seconds": round(self.seconds, 3),
            "environment": dict(self.environment),
        }


@checked
def certify_run(
    run_dir: str | Path,
    *,
    write: bool = True,
    progress: bool | Callable[[int, int], object] | None = None,
    fresh_process: bool | None = None,
    jobs: int | None = None,
) -> Certificate:
    """Replay and check every world-model update of the run in ``run_dir`` (see the module docstring).

    Writes ``certificate.json`` into the run directory when ``write`` (:func:`write_certificate`: a
    signed envelope beside it is removed first), never into a path that is no run directory
    (:func:`not_a_run`).  ``progress`` is ``True`` for a
    report on standard error (:class:`~amal_verified.run.logs.ConsoleProgress`: a bar on a terminal,
    plain lines otherwise), or a callable called as ``progress(done, total)`` after each update.
    Never raises for a bad run directory: every problem found is in the result.

    The process contract: the replay speaks for the run only in a process that has loaded none of
    :data:`FORBIDDEN_MODULES` and tagged no data (such a process could have used auxiliary-side code,
    and its global state — label tracking, recorded escapes, torch's deterministic and thread
    settings — is not a fresh process's).  ``fresh_process`` says where the replay runs:

    - ``None`` (default): here if this process is clean in that sense (as ``amal certify``'s is), else
      in a fresh child Python process (``sys.executable``, importing this same package), whose
      certificate is returned and, with ``write``, written by the child; progress is relayed.  So a
      script or notebook that has just trained a run certifies it with a plain ``certify_run(run_dir)``;
    - ``True``: always in a fresh child process;
    - ``False``: always here.  A forbidden module loaded here is then a problem of the result, and
      such a result is never written (it describes this process, not the run).

    ``jobs``: at most this many processes replay the updates (``None``: as many as this process may
    use, when the replay is long enough to repay starting them; see
    :func:`~amal_verified.run.primary_replay.replay_processes`).  A split over processes computes the
    same updates bit for bit; the certificate's ``environment`` records how many replayed.
    ``ValueError`` if ``jobs`` is below 1.

    A replay here leaves torch's deterministic-algorithms and thread settings as it found them.
    ``RuntimeError`` (one line) if a child process ends without a certificate.
    """
    from amal_verified.run.logs import ConsoleProgress

    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    path = Path(run_dir)
    owned = ConsoleProgress("amal certify", "updates") if progress is True else None
    report: Callable[[int, int], object] | None = None
    if owned is not None:
        report = owned
    elif callable(progress):
        report = progress
    try:
        if fresh_process is None:
            fresh_process = process_has_run_state()
        if fresh_process:
            return _certify_in_child(path, write=write, progress=report, jobs=jobs)
        return _certify_here(path, write=write, progress=report, jobs=jobs)
    finally:
        if owned is not None:
            owned.close()


def process_has_run_state() -> bool:
    """Whether this process has loaded a module of :data:`FORBIDDEN_MODULES` or tagged data (so that
    :func:`certify_run` replays in a fresh child process)."""
    if any(m in sys.modules for m in FORBIDDEN_MODULES):
        return True
    hooks = sys.modules.get("amal_verified.isolation._engine.global_hooks")
    return hooks is not None and bool(hooks.is_active())


def _certify_here(
    path: Path, *, write: bool, progress: Callable[[int, int], object] | None, jobs: int | None = None
) -> Certificate:
    start = time.perf_counter()
    problems: list[str] = []
    replayed = 0
    in_ledger = 0
    transitions = 0
    unsafe = False
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    environment = {
        "amal_verified": __version__,
        "code_commit": _code_commit(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": str(threads),
    }
    head: str | None = None
    digest: str | None = None
    run_head: str | None = None
    checkpoint_digest: str | None = None
    checked_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    try:
        document = read_json(path / CONFIG_FILENAME, "run configuration")
        config = TrainConfig.from_json(document["train"])
        spec = WorldModelSpec.from_json(document["world_model"])
        unsafe = bool(config.unsafe_mix)
        status = read_json(path / RUN_FILENAME, "run status")
        if status.get("status") != "complete":
            problems.append(
                f"{RUN_FILENAME}: the run is not complete (status {status.get('status')!r} at step "
                f"{status.get('step')}); resume it with `amal train --resume --out {path}` first"
            )
        elif status.get("step") != config.total_steps:
            problems.append(
                f"{RUN_FILENAME}: a complete run of {config.total_steps} steps says it ended at step "
                f"{status.get('step')}"
            )
        problems += _unknown_files(path)
        result = verify(path, expected_count=int(status["ledger_count"]), expected_head=status["ledger_head"])
        problems += [f"ledger: {p}" for p in result.problems]
        in_ledger = len(result.records)
        head = result.head
        digest = document_digest(document)
        if result.header is not None and result.header.config_digest != digest:
            problems.append(
                f"{CONFIG_FILENAME}: does not match the configuration digest in the ledger header"
            )
        stream = load_primary_stream(path)
        problems += [f"data/{p.file}: {p.message}" for p in stream.problems]
        transitions = stream.count
        recorded_steps = status.get("step")
        if isinstance(recorded_steps, int) and not stream.problems:
            if transitions != recorded_steps:
                problems.append(
                    f"data/: {transitions} primary transitions recorded for a run at step {recorded_steps}"
                )
            problems += _count_problems(config, result.records, recorded_steps)
        if unsafe:
            problems.append(
                "this run is an --unsafe-mix ablation: its world model trained on auxiliary data, so "
                "replay from primary data alone is expected to fail"
            )
        if all(p.startswith("this run is an --unsafe-mix") for p in problems):
            environment["threads"] = str(config.threads)
            replayed = _replay(
                config,
                spec,
                stream.tensors,
                stream.count,
                result.records,
                problems,
                progress,
                jobs,
                environment,
            )
            if not problems and replayed == in_ledger and in_ledger > 0:
                problems += _final_model_problems(path, result.records[-1])
        if status.get("status") == "complete":  # an unfinished run is refused as such above
            seal_problems, last_seal = _seal_problems(path, config, status, result, stream.count)
            if not seal_problems and result.header is not None and result.header.config_digest == digest:
                seal_problems += _sealed_state_problems(path, document, result.header)
            problems += seal_problems
            if last_seal is not None and not seal_problems:
                run_head, checkpoint_digest = last_seal.hash, last_seal.checkpoint_digest
    except (ValueError, KeyError, TypeError, OSError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)
    loaded = tuple(m for m in FORBIDDEN_MODULES if m in sys.modules)
    if loaded:
        problems.append(f"the certifying process had auxiliary-side modules loaded: {', '.join(loaded)}")
    ok = not problems and replayed == in_ledger and in_ledger > 0
    if not problems and in_ledger == 0:
        problems.append("the ledger holds no world-model update: nothing to certify")
    cert = Certificate(
        run_dir=str(path),
        ok=ok,
        updates_checked=replayed,
        updates_in_ledger=in_ledger,
        primary_transitions=transitions,
        unsafe_mix=unsafe,
        problems=tuple(problems),
        forbidden_modules_loaded=loaded,
        seconds=time.perf_counter() - start,
        environment=environment,
        ledger_head=head,
        config_digest=digest,
        checked_at=checked_at,
        run_head=run_head,
        checkpoint_digest=checkpoint_digest,
    )
    if write and not loaded and not_a_run(path) is None:
        write_certificate(path / CERTIFICATE_FILENAME, cert.to_json())
    return cert


def not_a_run(path: Path) -> str | None:
    """Why ``path`` is no run directory to certify (one line), or ``None``: it does not exist, is not a
    directory, or holds none of a run's ``config.json``, ``ledger.jsonl`` and ``run.json``.  ``amal
    certify`` refuses such a path as bad input (exit 2) and :func:`certify_run` writes no certificate
    into it."""
    if not path.exists():
        return f"run directory {path} does not exist"
    if not path.is_dir():
        return f"{path} is not a directory (amal certify needs a run directory)"
    if not any((path / name).exists() for name in _RUN_MARKS):
        return f"{path} is not a run directory: it holds none of {', '.join(_RUN_MARKS)}"
    return None


def write_certificate(
    target: Path, document: Mapping[str, Any], envelope: Mapping[str, Any] | None = None
) -> Path | None:
    """Write the certificate ``document`` to ``target`` and, if given, its signed ``envelope`` beside it
    (:func:`signed_path`); the stale envelope that was there, if any, is removed before the certificate
    is replaced (returned when no new envelope replaces it, else ``None``).

    An envelope beside a certificate always signs that certificate: a process stopped in between leaves
    a certificate without an envelope, never one with another certificate's envelope.  ``OSError`` as
    for :func:`~amal_verified.run.config.write_json_atomic` (``filename``: the file it could not write).
    """
    signed = signed_path(target)
    stale: Path | None = None
    try:
        signed.unlink()
        stale = signed
        fsync_dir(signed.parent)
    except FileNotFoundError:
        pass
    write_json_atomic(target, document)
    if envelope is not None:
        write_json_atomic(signed, envelope)
        return None
    return stale


def signed_path(certificate: Path) -> Path:
    """Where the signed envelope of a certificate file goes: ``NAME.dsse.json`` beside it
    (``certificate.dsse.json`` beside ``certificate.json``)."""
    if certificate.name == CERTIFICATE_FILENAME:
        return certificate.with_name(SIGNED_CERTIFICATE_FILENAME)
    return certificate.with_name(certificate.name.removesuffix(".json") + ".dsse.json")


def _sealed_state_problems(path: Path, document: Mapping[str, Any], header: RunHeader) -> list[str]:
    """What :func:`~amal_verified.run.run_dir.check_sealed_run` (the check ``amal train --resume``
    makes) finds against the run directory: the sealed checkpoint's own configuration, ledger head and
    count and data manifest, and the ledger header's seed, must be the run directory's."""
    try:
        check_sealed_run(path, document, header, restore=False)
    except (ValueError, CheckpointError) as exc:
        return [str(exc)]
    return []


def _count_problems(config: TrainConfig, records: Sequence[LedgerRecord], steps: int) -> list[str]:
    """Whether the ledger holds the updates the configuration implies after ``steps`` primary steps:
    ``wm_updates_per_round`` per round, or, with a held-out split, one ``round_end`` per round, at most
    ``wm_updates_per_round`` updates in each, and the last record ending a round.  (The replay checks
    that each round ended where its held-out losses say.)"""
    in_ledger = len(records)
    if not config.wm_holdout:
        implied = updates_completed_by(config, steps)
        if in_ledger == implied:
            return []
        return [
            f"ledger: {in_ledger} world-model updates recorded, the configuration implies {implied} "
            f"after {steps} primary steps (records cut or added)"
        ]
    implied_rounds = rounds_completed_by(config, steps)
    ends = [i for i, r in enumerate(records) if r.round_end is not None]
    problems = []
    if len(ends) != implied_rounds:
        problems.append(
            f"ledger: {len(ends)} world-model rounds recorded (round_end), the configuration implies "
            f"{implied_rounds} after {steps} primary steps (records cut or added)"
        )
    if records and records[-1].round_end is None:
        problems.append(
            f"ledger: the last record (update {records[-1].step}) does not end a round: records cut"
        )
    lengths = [b - a for a, b in itertools.pairwise([-1, *ends])]
    longest = max(lengths, default=0)
    if longest > config.wm_updates_per_round:
        problems.append(
            f"ledger: a round of {longest} world-model updates, more than wm_updates_per_round "
            f"({config.wm_updates_per_round})"
        )
    return problems


def _final_model_problems(path: Path, last: LedgerRecord) -> list[str]:
    """The world model a user takes from the run (the final checkpoint's) must be the one the last
    certified update produced: its parameter digest is the ledger's last."""
    try:
        state = load_checkpoint(path / CHECKPOINT_FILENAME, restore=False)
    except CheckpointError as exc:
        return [f"{CHECKPOINT_FILENAME}: {exc}"]
    learner = state.get("learner")
    model = learner.get("model") if isinstance(learner, Mapping) else None
    if not isinstance(model, Mapping):
        return [f"{CHECKPOINT_FILENAME}: holds no world model"]
    if state_digest(model) != last.param_digest:
        return [
            f"{CHECKPOINT_FILENAME}: its world model is not the one the last certified update (update "
            f"{last.step}) produced: the model a user would deploy from this run was changed"
        ]
    return []


def _seal_problems(
    path: Path,
    config: TrainConfig,
    status: Mapping[str, Any],
    ledger: VerificationResult,
    transitions: int,
) -> tuple[list[str], CheckpointSeal | None]:
    """What the checkpoint log says against the run directory, and its last seal (see the module
    docstring): the seal binds the step count, status, ledger, data manifest and checkpoint."""
    if ledger.genesis is None:
        return [], None  # the ledger's header is broken: already named
    log = read_checkpoint_log(path, ledger.genesis)
    problems = list(log.problems)
    if not log.seals:
        return problems or [f"{CHECKPOINT_LOG_FILENAME}: holds no seal"], None
    last = log.seals[-1]
    name = CHECKPOINT_LOG_FILENAME
    if (last.status, last.step) != ("complete", config.total_steps):
        problems.append(
            f"{name}: the last sealed checkpoint is {last.status!r} at step {last.step}, not the complete "
            f"run of {config.total_steps} steps (seals cut, or the run is not finished)"
        )
    recorded = (
        status.get("status"),
        status.get("step"),
        status.get("ledger_head"),
        status.get("ledger_count"),
    )
    if recorded != (last.status, last.step, last.ledger_head, last.ledger_count):
        problems.append(
            f"{RUN_FILENAME}: its status, step, ledger head or count differ from the last sealed checkpoint "
            f"(seal {last.index}): {RUN_FILENAME} was edited"
        )
    count = len(ledger.records)
    if (last.ledger_head, last.ledger_count) != (ledger.head, count):
        problems.append(
            f"ledger.jsonl: holds {count} update(s), the last sealed checkpoint follows {last.ledger_count} "
            f"(head {last.ledger_head[:16]}...): ledger records were cut, added or replaced"
        )
    try:
        manifest = read_json(path / DATA_DIRNAME / MANIFEST_FILENAME, "primary data manifest")
        chunks = manifest["chunks"]
        sealed_data = manifest_digest(chunks) == last.manifest_digest
    except (ValueError, KeyError, TypeError, AttributeError):
        sealed_data = False
    if not sealed_data or transitions != last.primary_transitions:
        problems.append(
            f"data/{MANIFEST_FILENAME}: its chunks (files, ranges, SHA-256) are not those sealed at the last "
            "checkpoint: the recorded primary data were rewritten, added or removed"
        )
    checkpoint = path / CHECKPOINT_FILENAME
    if not checkpoint.is_file():
        problems.append(f"{CHECKPOINT_FILENAME}: missing")
    elif file_digest(checkpoint) != last.checkpoint_digest:
        problems.append(
            f"{CHECKPOINT_FILENAME}: its SHA-256 is not the one sealed at the last checkpoint: the file was "
            "changed after it was written (a bit flip, or a changed model)"
        )
    return problems, last


@checked
def run_statement(certificate: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto Statement v1 that ``amal certify --sign`` signs for a certificate (the content of
    ``certificate.json``): its subject is the run's checkpoint (SHA-256), its predicate the run head,
    the ledger head and the certificate itself.  ``ValueError`` for a certificate that is not
    ``CERTIFIED`` or does not name its run head: only a certified run is signed."""
    if certificate.get("ok") is not True or not certificate.get("run_head"):
        raise ValueError("only a CERTIFIED run is signed: this certificate is not (nothing was signed)")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": CHECKPOINT_FILENAME, "digest": {"sha256": certificate["checkpoint_digest"]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "run_head": certificate["run_head"],
            "ledger_head": certificate["ledger_head"],
            "config_digest": certificate["config_digest"],
            "certificate": dict(certificate),
        },
    }


@checked
def statement_mismatches(
    statement: Mapping[str, Any], run_dir: str | Path, certificate: Mapping[str, Any] | None = None
) -> list[str]:
    """What differs between a signed ``statement`` (:func:`run_statement`) and the run in ``run_dir``
    as it is now (its ledger head, run head, checkpoint and configuration; no replay), and, if given,
    ``certificate`` (a certificate file's content).  Empty when they match."""
    path = Path(run_dir)
    predicate = statement.get("predicate")
    if not isinstance(predicate, Mapping):
        return ["the statement holds no predicate"]
    found: list[str] = []
    ledger = verify(path)
    if not ledger.ok:
        found.append(f"ledger.jsonl: {ledger.problems[0]}")
    seals = read_checkpoint_log(path, ledger.genesis) if ledger.genesis is not None else None
    checkpoint = path / CHECKPOINT_FILENAME
    try:
        document = read_json(path / CONFIG_FILENAME, "run configuration")
        config_digest: str | None = document_digest(document)
    except ValueError:
        config_digest = None
    now = {
        "ledger_head": ledger.head if ledger.ok else None,
        "run_head": seals.head if seals is not None and not seals.problems else None,
        "config_digest": config_digest,
    }
    for key, value in now.items():
        if predicate.get(key) != value:
            found.append(
                f"{key}: the run's is {str(value)[:16]}..., the signed statement's "
                f"{str(predicate.get(key))[:16]}..."
            )
    subject = statement.get("subject")
    sealed = subject[0].get("digest", {}).get("sha256") if isinstance(subject, list) and subject else None
    actual = file_digest(checkpoint) if checkpoint.is_file() else None
    if sealed != actual:
        found.append(f"{CHECKPOINT_FILENAME}: its SHA-256 is not the one in the signed statement")
    if certificate is not None and dict(certificate) != predicate.get("certificate"):
        differing = sorted(
            k
            for k in {*certificate, *predicate.get("certificate", {})}
            if certificate.get(k) != predicate.get("certificate", {}).get(k)
        )
        found.append(f"certificate: differs from the signed one in {', '.join(differing)}")
    return found


def _unknown_files(path: Path) -> list[str]:
    """Entries of the run directory, and of its data directory, that no run writes."""
    found = [
        f"{entry.name}: unknown file in the run directory (a run writes no such file); remove it"
        for entry in sorted(path.iterdir())
        if entry.name not in RUN_DIRECTORY_ENTRIES
    ]
    data = path / DATA_DIRNAME
    if data.is_dir():
        found += [
            f"data/{entry.name}: unknown file in the data directory; remove it"
            for entry in sorted(data.iterdir())
            if entry.name != MANIFEST_FILENAME
            and not (entry.name.startswith("primary-") and entry.suffix == ".pt")
        ]
    return found


def _code_commit() -> str:
    """The git commit of the certifying code when it runs from a checkout that tracks it (with
    ``-dirty`` when the package differs from that commit), else ``"unknown"``."""
    package = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if not git("ls-files", "--", "__init__.py"):  # not a checkout, or one that does not track this code
        return "unknown"
    commit = git("rev-parse", "HEAD")
    if commit is None or len(commit) != 40:
        return "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--", ".") else "")


# The child process's entry and the lines it writes on its standard output.
_CHILD_CODE: Final = "from amal_verified.run.certify import _child_main; _child_main()"
_PROGRESS_LINE: Final = "amal-certify-progress"
_RESULT_LINE: Final = "amal-certify-result"


def _child_main() -> None:
    """Entry of the child process: ``RUN_DIR write|no-write progress|no-progress JOBS|auto`` (argv)."""
    run_dir, write, report = sys.argv[1], sys.argv[2] == "write", sys.argv[3] == "progress"
    jobs = None if sys.argv[4] == "auto" else int(sys.argv[4])

    def relay(done: int, total: int) -> None:
        print(f"{_PROGRESS_LINE} {done} {total}", flush=True)

    cert = _certify_here(Path(run_dir), write=write, progress=relay if report else None, jobs=jobs)
    print(f"{_RESULT_LINE} {json.dumps(dataclasses.asdict(cert))}", flush=True)


def _certify_in_child(
    path: Path, *, write: bool, progress: Callable[[int, int], object] | None, jobs: int | None = None
) -> Certificate:
    if not sys.executable:
        raise RuntimeError(
            "certify_run: cannot start a fresh Python process (sys.executable is empty); "
            f"run `amal certify {path}` from a shell instead"
        )
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    args = [
        sys.executable,
        "-c",
        _CHILD_CODE,
        str(path),
        "write" if write else "no-write",
        "progress" if progress is not None else "no-progress",
        "auto" if jobs is None else str(jobs),
    ]
    fields: dict[str, Any] | None = None
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errors:
        child = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, text=True, env=env
        )
        stdout = child.stdout
        assert stdout is not None
        try:
            for line in stdout:
                kind, _, rest = line.rstrip("\n").partition(" ")
                if kind == _PROGRESS_LINE and progress is not None:
                    done, total = (int(v) for v in rest.split())
                    progress(done, total)
                elif kind == _RESULT_LINE:
                    fields = json.loads(rest)
            code = child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
        finally:
            stdout.close()
        if code != 0 or fields is None:
            errors.seek(0)
            lines = [ln.strip() for ln in errors.read().splitlines() if ln.strip()]
            raise RuntimeError(
                f"certify_run: the replay process for {path} exited with code {code} without a "
                f"certificate ({lines[-1] if lines else 'no error output'}); run `amal certify {path}` "
                "to see its full output"
            )
    return Certificate(
        **{
            **fields,
            "problems": tuple(fields["problems"]),
            "forbidden_modules_loaded": tuple(fields["forbidden_modules_loaded"]),
        }
    )


def _replay(
    config: TrainConfig,
    spec: WorldModelSpec,
    data: Mapping[str, torch.Tensor],
    available: int,
    records: Any,
    problems: list[str],
    progress: Callable[[int, int], object] | None,
    jobs: int | None,
    environment: dict[str, str],
) -> int:
    """Replay and compare the ledger's updates; the number checked.  ``environment`` gains how many
    processes replayed (and, when a split replay disagreed and the sequential one decided, where)."""
    limit = 0
    end_problem: str | None = None
    counts = primary_counts_of_records(config, [r.round_end is not None for r in records])
    for expected_index, (record, needed) in enumerate(zip(records, counts, strict=True), start=1):
        if record.step != expected_index:
            end_problem = f"ledger record {expected_index} has step {record.step}: updates are not contiguous"
            break
        if needed > available:
            end_problem = (
                f"update {record.step} needs {needed} primary transitions, the recorded data hold "
                f"{available} (data missing from the end)"
            )
            break
        limit += 1
    processes = replay_processes(spec, limit, jobs)
    checked, mismatch = 0, None
    if processes > 1:
        try:
            # The workers start (and replay their first updates) while this process checks that the
            # split is exact; nothing they compute is compared before that check has passed.
            with MemberSplitReplay(config, spec, data, available, limit, processes) as split:
                if split_is_exact(config, spec, data, available, processes):
                    checked, mismatch = _compare(split, records[:limit], progress, len(records))
                else:
                    environment["replay_split"] = "not exact for this model's shapes: replayed in one process"
                    processes = 1
        except (OSError, RuntimeError) as exc:  # no process could start, a worker failed, or the check did
            environment["replay_split"] = f"abandoned ({exc}): replayed in one process"
            processes, checked, mismatch = 1, 0, None
        if mismatch is not None:
            environment["replay_split"] = (
                f"differed from the ledger at update {checked + 1}: replayed again in one process"
            )
            processes = 1
    if processes == 1:
        checked, mismatch = _compare(
            PrimaryReplay(config, spec, data, available), records[:limit], progress, len(records)
        )
    environment["replay_processes"] = str(processes)
    if mismatch is not None:
        problems.append(mismatch)
    elif end_problem is not None:
        problems.append(end_problem)
    return checked


def _compare(
    replay: PrimaryReplay | MemberSplitReplay,
    records: Any,
    progress: Callable[[int, int], object] | None,
    total: int,
) -> tuple[int, str | None]:
    """Run ``replay`` against ``records`` up to the first mismatch: (updates checked, the mismatch)."""
    checked = 0
    for record in records:
        update = replay.update()
        ended = None if update.round_end is None else round_end_text(update.round_end)
        mismatches = [
            name
            for name, got, want in (
                ("batch digest", update.batch_digest, record.batch_digest),
                ("parameter digest", update.param_digest, record.param_digest),
                ("labels", update.labels, record.labels),
                ("round end (held-out losses)", ended, record.round_end),
            )
            if got != want
        ]
        if mismatches:
            return checked, (
                f"update {record.step}: {', '.join(mismatches)} differ from the ledger "
                + (
                    "(the recorded primary data differ from what the world model was trained on)"
                    if "batch digest" in mismatches
                    else "(the world model did not learn from this primary data alone)"
                )
            )
        checked += 1
        if progress is not None:
            progress(checked, total)
    return checked, None
