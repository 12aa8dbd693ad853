"""The replay certificate: Theorem 1 checked for one run, from its recorded primary data alone.

``amal certify RUN_DIR`` (:func:`certify_run`) runs in a fresh process and uses nothing but the run
directory's configuration, ledger and recorded primary data — no auxiliary agent, auxiliary
environment, policy or gymnasium (the certificate records that none of those modules was loaded).
It rebuilds the world-model learner from the run seed and replays every world-model update in the
ledger: before update ``u`` the replay buffer holds exactly the primary transitions the trainer had
stored (:func:`~amal_verified.run.config.primary_count_at_update`), the update samples its batch
with its own stream, and the batch digest, parameter digest and labels must equal the ledger's
record bit for bit.  Equality for every update certifies that the world-model trajectory of the run
is a function of the primary data alone (Theorem 1, Eq. 8).

Checks, each failure named in the result:

- ``config.json`` matches the ledger header's ``config_digest`` (the configuration was not edited);
- the ledger verifies (hash chain, order, no edits) and holds at least the records ``run.json``
  says were written (records cut from the end are found);
- every data chunk matches the manifest (missing, changed, reordered or extra files are named);
- every replayed update reproduces its record.

An ``--unsafe-mix`` run is replayed too, and fails at its first update: its world model saw
auxiliary data, which the primary data alone cannot reproduce.

The replay itself is :class:`PrimaryReplay`, which :mod:`amal_tools.bench.isolation` also uses
to build a run's primary-only world model.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

import torch

from amal_verified import __version__
from amal_verified.common.rng_streams import RunStreams
from amal_verified.common.runtime_checks import checked
from amal_verified.isolation.buffers import PrimaryBuffer
from amal_verified.record.ledger import verify
from amal_verified.record.primary_log import load_primary_stream
from amal_verified.run.config import (
    CERTIFICATE_FILENAME,
    CONFIG_FILENAME,
    RUN_FILENAME,
    TrainConfig,
    document_digest,
    primary_count_at_update,
    read_json,
    write_json_atomic,
)
from amal_verified.world_model.learner import WorldModelLearner, WorldModelSpec, WorldModelUpdate

__all__ = ["Certificate", "PrimaryReplay", "certify_run"]

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

    def to_json(self) -> dict[str, Any]:
        """The content of ``certificate.json``."""
        return {
            "format": "amal_verified.certificate/1",
            "claim": "Theorem 1 (pathwise isolation): every world-model update of this run is reproduced "
            "bit for bit from the recorded primary data alone",
            "ok": self.ok,
            "verdict": "CERTIFIED" if self.ok else "NOT CERTIFIED",
            "updates_checked": self.updates_checked,
            "updates_in_ledger": self.updates_in_ledger,
            "primary_transitions": self.primary_transitions,
            "unsafe_mix": self.unsafe_mix,
            "problems": list(self.problems),
            "forbidden_modules_loaded": list(self.forbidden_modules_loaded),
            "seconds": round(self.seconds, 3),
            "environment": dict(self.environment),
        }


def certify_run(run_dir: str | Path, *, write: bool = True, progress: Any = None) -> Certificate:
    """Replay and check every world-model update of the run in ``run_dir`` (see the module docstring).

    Writes ``certificate.json`` into the run directory when ``write``.  ``progress``, if given, is
    called as ``progress(done, total)`` after each update.  Never raises for a bad run directory:
    every problem found is in the result.
    """
    start = time.perf_counter()
    path = Path(run_dir)
    problems: list[str] = []
    checked = 0
    in_ledger = 0
    transitions = 0
    unsafe = False
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
        result = verify(path, expected_count=int(status["ledger_count"]), expected_head=status["ledger_head"])
        problems += [f"ledger: {p}" for p in result.problems]
        in_ledger = len(result.records)
        if result.header is not None and result.header.config_digest != document_digest(document):
            problems.append(
                f"{CONFIG_FILENAME}: does not match the configuration digest in the ledger header"
            )
        stream = load_primary_stream(path)
        problems += [f"data/{p.file}: {p.message}" for p in stream.problems]
        transitions = stream.count
        if unsafe:
            problems.append(
                "this run is an --unsafe-mix ablation: its world model trained on auxiliary data, so "
                "replay from primary data alone is expected to fail"
            )
        if all(p.startswith("this run is an --unsafe-mix") for p in problems):
            checked = _replay(config, spec, stream.tensors, stream.count, result.records, problems, progress)
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    loaded = tuple(m for m in FORBIDDEN_MODULES if m in sys.modules)
    if loaded:
        problems.append(f"the certifying process had auxiliary-side modules loaded: {', '.join(loaded)}")
    ok = not problems and checked == in_ledger and in_ledger > 0
    if not problems and in_ledger == 0:
        problems.append("the ledger holds no world-model update: nothing to certify")
    cert = Certificate(
        run_dir=str(path),
        ok=ok,
        updates_checked=checked,
        updates_in_ledger=in_ledger,
        primary_transitions=transitions,
        unsafe_mix=unsafe,
        problems=tuple(problems),
        forbidden_modules_loaded=loaded,
        seconds=time.perf_counter() - start,
        environment={
            "amal_verified": __version__,
            "torch": str(torch.__version__),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": str(torch.get_num_threads()),
        },
    )
    if write and path.is_dir():
        write_json_atomic(path / CERTIFICATE_FILENAME, cert.to_json())
    return cert


@final
class PrimaryReplay:
    """A run's world-model learner rebuilt from its seed and trained on its recorded primary data alone.

    This is the replay :func:`certify_run` checks against the ledger, and the "without auxiliary
    agents" world model of :mod:`amal_tools.bench.isolation`.  Construction sets the process up as
    the trainer does (``torch.use_deterministic_algorithms(True)``, ``config.threads`` threads) and
    builds, from ``RunStreams(config.seed)``, the gated :class:`WorldModelLearner` (never the unsafe
    ablation's) and the primary buffer with the trainer's seed.  :meth:`update` runs the learner's next
    update ``u`` after filling the buffer, in recorded order, with exactly the
    :func:`~amal_verified.run.config.primary_count_at_update` transitions the trainer had stored
    before it.  Nothing here reads auxiliary data, an environment or a policy.
    """

    @checked
    def __init__(
        self, config: TrainConfig, spec: WorldModelSpec, data: Mapping[str, torch.Tensor], available: int
    ) -> None:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(config.threads)
        streams = RunStreams(config.seed)
        self.config: Final = config
        self.learner: Final = WorldModelLearner(spec, streams)  # gated, as in the trainer; never unsafe
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

    def update(self) -> WorldModelUpdate:
        """Store the primary transitions the next update saw, then run it; ``ValueError`` if the
        recorded data end before that count."""
        step = self.learner.updates + 1
        needed = primary_count_at_update(self.config, step)
        if needed > self.available:
            raise ValueError(
                f"update {step} needs {needed} primary transitions, the recorded data hold "
                f"{self.available} (data missing from the end)"
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
        return self.learner.update(self.buffer)


def _replay(
    config: TrainConfig,
    spec: WorldModelSpec,
    data: Mapping[str, torch.Tensor],
    available: int,
    records: Any,
    problems: list[str],
    progress: Any,
) -> int:
    replay = PrimaryReplay(config, spec, data, available)
    checked = 0
    for expected_index, record in enumerate(records, start=1):
        if record.step != expected_index:
            problems.append(
                f"ledger record {expected_index} has step {record.step}: updates are not contiguous"
            )
            break
        needed = primary_count_at_update(config, record.step)
        if needed > available:
            problems.append(
                f"update {record.step} needs {needed} primary transitions, the recorded data hold "
                f"{available} (data missing from the end)"
            )
            break
        update = replay.update()
        mismatches = [
            name
            for name, got, want in (
                ("batch digest", update.batch_digest, record.batch_digest),
                ("parameter digest", update.param_digest, record.param_digest),
                ("labels", update.labels, record.labels),
            )
            if got != want
        ]
        if mismatches:
            problems.append(
                f"update {record.step}: {', '.join(mismatches)} differ from the ledger "
                + (
                    "(the recorded primary data differ from what the world model was trained on)"
                    if "batch digest" in mismatches
                    else "(the world model did not learn from this primary data alone)"
                )
            )
            break
        checked += 1
        if progress is not None:
            progress(checked, len(records))
    return checked
