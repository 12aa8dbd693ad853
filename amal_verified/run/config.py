"""The configuration of a training run, its world-model update schedule and its run-directory layout.

This module is shared by the trainer, by ``amal certify`` and by the command line; it imports no
torch, environment, policy or auxiliary-agent code, so ``amal train`` checks a configuration before it
loads the trainer (file names and JSON helpers re-exported from :mod:`amal_verified.record.files` are
loaded when first used).

Defaults are the paper's Table 1 where it gives a value (learning rates 3e-4, batch 256, buffer
10^6, γ 0.99, λ 0.3, N = 16 auxiliary agents, CEM population 100 with elite fraction 0.2, M = 100,
K = 20).  Everything the paper leaves open (when to update what, how much imagined data the policy
sees) is a named field below with the reason for its default.

Validation
----------
:class:`TrainConfig` is a pydantic (v2) dataclass in strict mode: each field's type, bounds and
meaning are declared with the field (``Annotated[type, Field(ge=..., description=...)]``) and checked
at construction, then :meth:`TrainConfig.__post_init__` checks the rules that relate fields.  Every
violation raises one ``ValueError`` line naming the field, the value given and what is expected
(several violations: one line, ``;``-separated).  Strict mode takes values as written: ``True`` is
not an integer, ``"3"`` is not a number, ``1`` is not a boolean; all numbers are finite.  Number
fields keep an integer as given (``int | float``), so :meth:`TrainConfig.to_json` reproduces a stored
document exactly, and with it the ledger's configuration digest.  The declarations also give the
command line its field list (:func:`field_descriptions`) and its ``--set KEY=VALUE`` parsing
(:func:`parse_field`, pydantic's string mode).  pydantic rather than hand-written checks: the rules
sit next to the fields they constrain, the field list, help text and checks cannot drift apart, and
the class stays a dataclass (``dataclasses.fields``, ``asdict``, ``replace``, keyword construction,
frozen attributes).

World-model update schedule
---------------------------
World-model updates happen in rounds: after the ``n``-th primary transition has been stored, for
every ``n >= learning_starts`` that is a multiple of ``wm_train_every``, the trainer runs
``wm_updates_per_round`` updates.  Update ``u`` (1-based, the ledger's ``step``) therefore saw
exactly :func:`primary_count_at_update` transitions — a function of the configuration alone, which is
what lets ``amal certify`` replay update ``u`` on the recorded primary data without anything else.
With ``wm_holdout > 0`` a round may end before ``wm_updates_per_round`` updates, when its held-out
loss stops improving (:mod:`amal_verified.world_model.learner`, "Early stopping"); the ledger marks the
last update of every round (``round_end``), round ``k`` still runs at :func:`primary_count_at_round`
transitions, and :func:`primary_counts_of_records` maps the records to their counts.

Run directory
-------------
``config.json`` (the document ``{"format", "train", "world_model", "unsafe_mix"}``, canonical JSON;
``train`` is :meth:`TrainConfig.to_json`), ``ledger.jsonl`` (hash-chained world-model updates),
``data/`` (the primary transitions, in chunks, with ``manifest.json``), ``checkpoint.pt`` (the latest
checkpoint), ``run.json`` (status, ledger head and count, updated atomically with every checkpoint),
``metrics.csv`` and ``tensorboard/`` (logs), ``certificate.json`` (written by ``amal certify``), and
``UNSAFE_MIX`` (present only for the ablation).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Union, final, get_args, get_origin

import annotated_types
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from amal_verified.common.runtime_checks import checked

if TYPE_CHECKING:
    from amal_verified.record.files import (
        CERTIFICATE_FILENAME,
        CHECKPOINT_FILENAME,
        CONFIG_FILENAME,
        DATA_DIRNAME,
        MANIFEST_FILENAME,
        RUN_FILENAME,
        UNSAFE_MARKER_FILENAME,
        read_json,
        write_json_atomic,
    )

__all__ = [
    "CERTIFICATE_FILENAME",
    "CHECKPOINT_FILENAME",
    "CONFIG_FILENAME",
    "DATA_DIRNAME",
    "EXECUTION_FIELDS",
    "MANIFEST_FILENAME",
    "RUN_DOCUMENT_FORMAT",
    "RUN_FILENAME",
    "SEED_LIMIT",
    "UNSAFE_MARKER_FILENAME",
    "ModelName",
    "OptimizerName",
    "TrainConfig",
    "document_digest",
    "field_descriptions",
    "last_round_rows",
    "parse_field",
    "primary_count_at_round",
    "primary_count_at_update",
    "primary_counts_of_records",
    "read_config_file",
    "read_json",
    "rounds_completed_by",
    "updates_completed_by",
    "write_json_atomic",
]

_FROM_RECORD_FILES: Final = frozenset(
    {
        "CERTIFICATE_FILENAME",
        "CHECKPOINT_FILENAME",
        "CONFIG_FILENAME",
        "DATA_DIRNAME",
        "MANIFEST_FILENAME",
        "RUN_FILENAME",
        "UNSAFE_MARKER_FILENAME",
        "read_json",
        "write_json_atomic",
    }
)


def __getattr__(name: str) -> Any:
    # The run directory's names and JSON helpers live in amal_verified.record.files, which imports torch.
    if name in _FROM_RECORD_FILES:
        from amal_verified.record import files

        return getattr(files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


ModelName = Literal["ensemble", "linear-gaussian"]
"""The world-model learner's models (:data:`amal_verified.world_model.learner.MODELS`)."""
OptimizerName = Literal["adam", "sgd"]
"""The world-model learner's optimizers (:data:`amal_verified.world_model.learner.OPTIMIZERS`)."""

SEED_LIMIT: Final = 2**63
"""Seeds (``seed``, ``aux_seed``) lie in ``[0, SEED_LIMIT)``, the range
:class:`~amal_verified.common.rng_streams.RunStreams` accepts."""

RUN_DOCUMENT_FORMAT: Final = "amal_verified.run.config/1"
"""The ``format`` of a run's ``config.json`` document."""

EXECUTION_FIELDS: Final[dict[str, Any]] = {
    "aux_backend": "local",
    "ray_agents_per_actor": 1,
    "ray_timeout": 300,
    "ray_restarts": 2,
}
"""Fields that choose where a run executes, never what it computes (a run with the Ray backend is bit
for bit the in-process run), with their defaults: left out of the configuration digest, and changeable
when a run resumes."""

# Fields added after the first runs, with their defaults (see TrainConfig.to_json).
_LATER_FIELDS: Final[dict[str, Any]] = {
    "aux_seed": None,
    "wm_model": "ensemble",
    "wm_optimizer": "adam",
    "wm_weight_decay": 0.0,
    "wm_full_batch": False,
    "wm_normalise": False,
    "wm_holdout": 0.0,
    "wm_check_every": 20,
    "wm_patience": 5,
    "wm_learner_process": False,
    "aux_flush_every": 25,
    **EXECUTION_FIELDS,
}

_STRICT: Final = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


@final
@dataclass(frozen=True, config=_STRICT)
class TrainConfig:
    """A training run.  Construct with keywords; invalid values raise a one-line ``ValueError`` naming
    the field, the value and what is expected (see the module docstring)."""

    env_id: Annotated[
        str,
        Field(
            min_length=1,
            description="gymnasium environment id, or module:id (imports module, which registers id)",
        ),
    ] = "CartPole-v1"
    total_steps: Annotated[int, Field(ge=1, description="primary environment steps of the run")] = 20_000
    seed: Annotated[
        int, Field(ge=0, lt=SEED_LIMIT, description="run seed: every random stream derives from it")
    ] = 0
    # --- Table 1 -------------------------------------------------------------------------------
    wm_lr: Annotated[int | float, Field(gt=0, description="world-model learning rate")] = 3e-4
    policy_lr: Annotated[int | float, Field(gt=0, description="policy (SAC) learning rate")] = 3e-4
    batch_size: Annotated[int, Field(ge=1, description="world-model and policy batch size")] = 256
    buffer_size: Annotated[int, Field(ge=1, description="primary replay buffer capacity")] = 1_000_000
    gamma: Annotated[int | float, Field(ge=0, le=1, description="discount factor γ")] = 0.99
    info_weight: Annotated[
        int | float, Field(ge=0, description="λ: weight of the information-gain bonus in the reward (Eq. 6)")
    ] = 0.3
    num_aux_agents: Annotated[
        int, Field(ge=1, description="N: auxiliary agents (the best candidates of each CEM generation)")
    ] = 16
    cem_population: Annotated[int, Field(ge=1, description="CEM population per generation")] = 100
    cem_elite_fraction: Annotated[
        int | float, Field(gt=0, le=1, description="fraction of the CEM population kept as elites")
    ] = 0.2
    mi_outer_samples: Annotated[
        int, Field(ge=1, description="M: outer samples of the information-gain estimator")
    ] = 100
    ensemble_size: Annotated[int, Field(ge=1, description="K: world-model ensemble members")] = 20
    # --- world model ---------------------------------------------------------------------------
    shared_trunk: Annotated[bool, Field(description="ensemble members share one encoder trunk")] = False
    wm_hidden_scale: Annotated[
        int | float, Field(gt=0, description="world-model layer widths relative to the paper's (1.0)")
    ] = 1.0
    learning_starts: Annotated[
        int, Field(ge=1, description="primary transitions before the first world-model round")
    ] = 1_000
    wm_train_every: Annotated[
        int, Field(ge=1, description="primary steps between world-model update rounds")
    ] = 250
    wm_updates_per_round: Annotated[
        int, Field(ge=1, description="world-model updates per round (its most, with wm_holdout > 0)")
    ] = 25
    eig_estimator: Annotated[
        Literal["pce", "nmc"],
        Field(description="information-gain estimator: prior contrastive (pce) or nested Monte Carlo (nmc)"),
    ] = "pce"
    # The learner's options beyond the paper's configuration (WorldModelSpec's model, optimizer,
    # weight_decay, full_batch and normalise; see amal_verified.world_model.learner).
    # wm_model="linear-gaussian" with wm_optimizer="sgd", wm_weight_decay > 0 and wm_full_batch=True is
    # the strongly convex configuration in which the corrected Theorem 2 applies.  Left out of to_json at
    # their defaults.
    wm_model: Annotated[
        ModelName, Field(description="world model: the paper's ensemble, or one linear-Gaussian model")
    ] = "ensemble"
    wm_optimizer: Annotated[OptimizerName, Field(description="world-model optimizer")] = "adam"
    wm_weight_decay: Annotated[
        int | float, Field(ge=0, description="world-model L2 weight decay (> 0: strongly convex with sgd)")
    ] = 0.0
    wm_full_batch: Annotated[
        bool, Field(description="world-model updates use every primary transition stored, not a batch")
    ] = False
    wm_normalise: Annotated[
        bool,
        Field(
            description="world-model inputs and targets (s' - s, r) standardised by the primary buffer's "
            "statistics, set at the start of each round"
        ),
    ] = False
    # Early stopping on a held-out split of the primary data (MBPO): see WorldModelLearner, "Early
    # stopping".  With wm_holdout = 0 every round runs wm_updates_per_round updates.
    wm_holdout: Annotated[
        int | float,
        Field(
            ge=0,
            le=0.5,
            description="fraction of primary transitions held out from world-model training; > 0: a round "
            "stops once their loss stops improving",
        ),
    ] = 0.0
    wm_check_every: Annotated[
        int, Field(ge=1, description="wm_holdout > 0: world-model updates between held-out checks")
    ] = 20
    wm_patience: Annotated[
        int, Field(ge=1, description="wm_holdout > 0: checks without a 1 % improvement before a round stops")
    ] = 5
    wm_learner_process: Annotated[
        bool,
        Field(
            description="world-model rounds run in a process of their own, beside the loop; the "
            "information-gain bonus and imagined rollouts then use the previous round's model"
        ),
    ] = False
    # --- policy --------------------------------------------------------------------------------
    policy_hidden: Annotated[int, Field(ge=1, description="policy and critic hidden width")] = 256
    policy_tau: Annotated[
        int | float | None,
        Field(
            gt=0, le=1, description="critic Polyak rate; None: 0.02 for discrete actions, 0.005 continuous"
        ),
    ] = None
    random_steps: Annotated[int, Field(ge=0, description="primary steps with uniformly random actions")] = (
        1_000
    )
    policy_updates_per_step: Annotated[
        int, Field(ge=0, description="policy updates per primary step (after learning_starts)")
    ] = 1
    real_ratio: Annotated[
        int | float,
        Field(ge=0, le=1, description="real rows in a policy batch; the rest imagined (default 1: none)"),
    ] = 1.0  # no imagined data by default: the early world model is too inexact (benchmarks/README.md)
    aux_ratio: Annotated[
        int | float, Field(ge=0, le=1, description="auxiliary rows among a policy batch's real rows")
    ] = 0.0  # no aux rows by default: aux environments are other MDPs (benchmarks/README.md)
    rollout_batch: Annotated[int, Field(ge=1, description="start states of imagined rollouts per round")] = (
        1_000
    )
    rollout_length: Annotated[int, Field(ge=1, description="steps of each imagined rollout")] = 1
    imagined_rounds_kept: Annotated[
        int, Field(ge=1, description="rounds of imagined rollouts the imagined buffer holds")
    ] = 4
    # --- auxiliary agents ----------------------------------------------------------------------
    aux_hidden: Annotated[int, Field(ge=1, description="auxiliary (CEM) policy hidden width")] = 32
    aux_buffer_size: Annotated[int, Field(ge=1, description="each auxiliary agent's buffer capacity")] = (
        100_000
    )
    aux_obs_noise: Annotated[
        int | float | None,
        Field(ge=0, description="auxiliary observation-noise std; None: the environment's default"),
    ] = None
    # The auxiliary side's own seed: its streams (cem, cem/probes, aux/<i>/*) derive from it instead of
    # ``seed``, so auxiliary randomness can vary while the primary side stays fixed.  None: ``seed``.
    aux_seed: Annotated[
        int | None,
        Field(ge=0, lt=SEED_LIMIT, description="seed of the auxiliary side's random streams; None: seed"),
    ] = None
    aux_flush_every: Annotated[
        int,
        Field(ge=1, description="primary steps between additions of auxiliary transitions to their buffers"),
    ] = 25  # batching shares the buffers' per-call checks; with aux_backend=ray, chunks end there
    cem_every: Annotated[int, Field(ge=1, description="primary steps between CEM generations")] = 1_000
    cem_beta: Annotated[int | float, Field(ge=0, description="β: CEM fitness weight (Eq. 5)")] = 1.0
    cem_std_floor: Annotated[int | float, Field(gt=0, description="variance floor of the CEM update")] = 0.02
    probe_states: Annotated[
        int, Field(ge=1, description="primary states on which CEM candidates are scored")
    ] = 256
    # --- run -----------------------------------------------------------------------------------
    unsafe_mix: Annotated[
        bool, Field(description="ABLATION ONLY: world model on primary and auxiliary data, ungated")
    ] = False
    eval_every: Annotated[int, Field(ge=1, description="primary steps between evaluations")] = 2_000
    eval_episodes: Annotated[int, Field(ge=1, description="episodes per evaluation")] = 10
    log_every: Annotated[int, Field(ge=1, description="primary steps between log rows")] = 500
    checkpoint_every: Annotated[int, Field(ge=1, description="primary steps between checkpoints")] = 5_000
    threads: Annotated[int, Field(ge=1, description="torch intra-op threads")] = 1
    # --- execution: where the auxiliary environments run (never what the run computes) -------------
    aux_backend: Annotated[
        Literal["local", "ray"],
        Field(description="auxiliary environments in this process (local) or on Ray actors (ray)"),
    ] = "local"
    ray_agents_per_actor: Annotated[
        int, Field(ge=1, description="aux_backend=ray: auxiliary agents whose environments one actor runs")
    ] = 1
    ray_timeout: Annotated[
        int | float, Field(gt=0, description="aux_backend=ray: seconds the run waits for an actor at most")
    ] = 300
    ray_restarts: Annotated[
        int, Field(ge=0, description="aux_backend=ray: replacements of a dead actor before the run stops")
    ] = 2

    def __post_init__(self) -> None:
        """The rules relating fields (each field's own type and bounds are checked before)."""
        if self.num_aux_agents > self.cem_population:
            raise ValueError(
                f"num_aux_agents ({self.num_aux_agents}) cannot exceed cem_population "
                f"({self.cem_population}): the auxiliary agents are the best candidates of a CEM generation"
            )
        if self.wm_holdout and self.unsafe_mix:
            raise ValueError(
                "wm_holdout > 0 needs unsafe_mix=false: the ablation's batches mix primary and auxiliary "
                "rows, and a held-out split of the primary data alone would not compare like with like"
            )
        if self.wm_learner_process and self.unsafe_mix:
            raise ValueError(
                "wm_learner_process=true needs unsafe_mix=false: the learner's process holds the primary "
                "buffer only, and the ablation trains on the auxiliary buffers too"
            )
        if self.wm_holdout and self.wm_full_batch:
            raise ValueError(
                "wm_holdout > 0 needs wm_full_batch=false: a full-batch update trains on every stored "
                "transition, so none is held out"
            )
        if self.wm_model != "linear-gaussian":
            return
        # A single linear model: no ensemble to size or shape, no member disagreement to reward, no
        # members to drive imagined rollouts.  Each conflicting field is named rather than ignored.
        needs = {
            "ensemble_size": (1, "it is one model, not an ensemble"),
            "shared_trunk": (False, "it has no trunk"),
            "wm_hidden_scale": (1.0, "it has no hidden layers"),
            "info_weight": (0.0, "one model has no member disagreement, so its information gain is 0"),
            "real_ratio": (1.0, "imagined rollouts need an ensemble's members"),
            "wm_normalise": (
                False,
                "it is fitted in the data's own coordinates (the strongly convex setting)",
            ),
        }
        for name, (value, why) in needs.items():
            if getattr(self, name) != value:
                raise ValueError(
                    f"{name} must be {value!r} with wm_model='linear-gaussian' ({why}), "
                    f"got {getattr(self, name)!r}"
                )

    # ------------------------------------------------------------------ serialisation

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field.  Fields added after the first runs (``aux_seed``, the
        ``wm_*`` learner options and the :data:`EXECUTION_FIELDS`) are left out while they hold their
        defaults, so the documents and digests of configurations written before they existed are
        unchanged."""
        document = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if document[name] == default:
                del document[name]
        return document

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`; unknown keys raise ``ValueError`` (missing keys take defaults)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a configuration must be a mapping of field names to values, got {data!r}")
        _check_known(data)
        return cls(**dict(data))

    # ------------------------------------------------------------------ schedule

    @property
    def first_round(self) -> int:
        """The primary-transition count at which the first world-model round runs."""
        every = self.wm_train_every
        return -(-self.learning_starts // every) * every


# ---------------------------------------------------------------------------------------- errors

_FIELDS: Final[dict[str, FieldInfo]] = getattr(TrainConfig, "__pydantic_fields__")  # noqa: B009


def _check_known(names: Mapping[str, Any]) -> None:
    unknown = sorted(set(names) - set(_FIELDS))
    if unknown:
        nearest = {
            name: close[0]
            for name in unknown
            if (close := difflib.get_close_matches(name, list(_FIELDS), n=1))
        }
        if len(unknown) == 1 and nearest:
            hint = f" (did you mean {nearest[unknown[0]]!r}?)"
        elif nearest:
            hint = f" (did you mean {', '.join(f'{v!r} for {k!r}' for k, v in nearest.items())}?)"
        else:
            hint = ""
        raise ValueError(f"unknown configuration keys {unknown}{hint}; amal train --help lists the fields")


def _bound(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@functools.cache
def _expected(name: str, *, below_lower: bool = False) -> str:
    """What field ``name`` accepts, in words (its type and bounds).  A seed (an integer in
    ``[0, SEED_LIMIT)``) is "a non-negative integer below 2**63"; ``below_lower``: the value given is
    below the lower bound, and a seed's words leave out the upper one."""
    info = _FIELDS[name]
    annotation = info.annotation
    members = set(get_args(annotation)) if get_origin(annotation) in (Union, UnionType) else {annotation}
    optional = NoneType in members
    members.discard(NoneType)
    prefix = "None or " if optional else ""
    if get_origin(annotation) is Literal:
        return prefix + " or ".join(repr(choice) for choice in get_args(annotation))
    if members == {bool}:
        return prefix + "true or false"
    if members == {str}:
        return prefix + "a non-empty string"
    integer = members == {int}
    lower: tuple[str, Any] | None = None
    upper: tuple[str, Any] | None = None
    for constraint in info.metadata:
        if isinstance(constraint, annotated_types.Ge):
            lower = ("[", constraint.ge)
        elif isinstance(constraint, annotated_types.Gt):
            lower = ("(", constraint.gt)
        elif isinstance(constraint, annotated_types.Le):
            upper = ("]", constraint.le)
        elif isinstance(constraint, annotated_types.Lt):
            upper = (")", constraint.lt)
    kind = "integer" if integer else "number"
    if integer and lower == ("[", 0) and upper == (")", SEED_LIMIT):
        return prefix + "a non-negative integer" + ("" if below_lower else " below 2**63")
    if lower is not None and upper is not None:
        return f"{prefix}a {kind} in {lower[0]}{_bound(lower[1])}, {_bound(upper[1])}{upper[0]}"
    finite = "" if integer else "finite "
    if lower == ("[", 1) and integer:
        return prefix + "a positive integer"
    if lower == ("[", 0):
        return prefix + ("a non-negative integer" if integer else "a finite number >= 0")
    if lower == ("(", 0):
        return prefix + f"a {finite}positive {kind}"
    return prefix + f"a {finite}{kind}"


def _one_line(exc: ValidationError) -> str:
    """pydantic's report as one line: each field named with its value and what it accepts."""
    problems: list[str] = []
    named: set[str] = set()
    unknown: dict[str, Any] = {}
    for error in exc.errors():
        location = error["loc"]
        if not location:  # a rule relating fields (__post_init__) raised
            cause = error.get("ctx", {}).get("error")
            problems.append(str(cause) if cause is not None else error["msg"])
            continue
        name = str(location[0])
        if error["type"] == "unexpected_keyword_argument":
            unknown[name] = error["input"]
        elif name in _FIELDS and name not in named:
            named.add(name)
            below = error["type"] in ("greater_than_equal", "greater_than")
            problems.append(f"{name} must be {_expected(name, below_lower=below)}, got {error['input']!r}")
        elif name not in _FIELDS:
            problems.append(f"{name}: {error['msg']}")
    if unknown:
        try:
            _check_known(unknown)
        except ValueError as unknown_keys:
            problems.append(str(unknown_keys))
    return "; ".join(problems)


def _one_line_errors(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: TrainConfig, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as exc:
            raise ValueError(_one_line(exc)) from None

    return __init__


# pydantic raises ValidationError (a multi-line ValueError); the configuration's contract is one line.
setattr(TrainConfig, "__init__", _one_line_errors(TrainConfig.__init__))  # noqa: B010


# ---------------------------------------------------------------------------------------- the command line


@checked
def field_descriptions() -> dict[str, tuple[str, Any, str]]:
    """Every field, in declaration order: ``name -> (what it accepts, default, meaning)``."""
    return {
        f.name: (_expected(f.name), f.default, _FIELDS[f.name].description or "") for f in fields(TrainConfig)
    }


@functools.cache
def _string_adapter(name: str) -> TypeAdapter[Any]:
    info = _FIELDS[name]
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated.__class_getitem__((annotation, *info.metadata))  # type: ignore[attr-defined]
    return TypeAdapter(annotation, config=ConfigDict(allow_inf_nan=False))


@checked
def parse_field(name: str, text: str) -> Any:
    """The value of field ``name`` written as ``text`` (``--set name=text``), checked against the field's
    type and bounds: integers and numbers in decimal, booleans as true/false (also 1/0, yes/no),
    ``none`` (or ``null``) for a field that may be None.

    Raises a one-line ``ValueError`` for an unknown field (naming the nearest one) or a value the field
    does not accept (naming the field, the text and what is expected).
    """
    _check_known({name: text})
    if text.strip().lower() in ("none", "null") and NoneType in get_args(_FIELDS[name].annotation):
        return None
    try:
        return _string_adapter(name).validate_strings(text.strip())
    except ValidationError:
        raise ValueError(f"{name} must be {_expected(name)}, got {text!r}") from None


class _DuplicateKey(Exception):
    """A JSON object holds ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s object hook: the object, refusing a key given twice (JSON keeps the last)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


@checked
def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The configuration fields in the JSON file ``path``: a JSON object of :class:`TrainConfig` fields
    (any subset; the others keep their defaults), or a run's ``config.json`` (its ``train`` section).

    The values are returned as written (validate with :meth:`TrainConfig.from_json`, after any
    overrides).  Raises a one-line ``ValueError`` naming the file for a missing file, invalid JSON, a
    key given twice in one JSON object (naming the key), an unsupported document format or unknown keys.
    """
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise ValueError(f"configuration file {os.fspath(path)} does not exist") from None
    except _DuplicateKey as exc:
        raise ValueError(
            f"configuration file {os.fspath(path)}: key {exc.key!r} is given more than once; keep one"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"configuration file {os.fspath(path)} is not valid JSON ({exc})") from None
    if isinstance(data, dict) and "format" in data:
        if data["format"] != RUN_DOCUMENT_FORMAT or not isinstance(data.get("train"), dict):
            raise ValueError(
                f"configuration file {os.fspath(path)}: a run document must have format "
                f"{RUN_DOCUMENT_FORMAT!r} and a 'train' object, got format {data['format']!r}"
            )
        data = data["train"]
    if not isinstance(data, dict):
        raise ValueError(
            f"configuration file {os.fspath(path)} must hold a JSON object of configuration fields "
            "(or be a run's config.json)"
        )
    try:
        _check_known(data)
    except ValueError as exc:
        raise ValueError(f"configuration file {os.fspath(path)}: {exc}") from None
    return data


def primary_count_at_round(config: TrainConfig, round_number: int) -> int:
    """How many primary transitions were stored when world-model round ``round_number`` (1-based) ran."""
    if round_number < 1:
        raise ValueError(f"rounds are numbered from 1, got {round_number}")
    return config.first_round + (round_number - 1) * config.wm_train_every


def primary_count_at_update(config: TrainConfig, update: int) -> int:
    """How many primary transitions were stored when world-model update ``update`` (1-based) ran.

    Only for rounds of fixed length (``wm_holdout = 0``): with a held-out split, where rounds end is
    recorded in the ledger (``round_end``), and :func:`primary_counts_of_records` reads it."""
    if config.wm_holdout:
        raise ValueError(
            "with wm_holdout > 0 a round's length depends on its held-out loss: read the round ends from "
            "the ledger (primary_counts_of_records)"
        )
    if update < 1:
        raise ValueError(f"updates are numbered from 1, got {update}")
    return primary_count_at_round(config, (update - 1) // config.wm_updates_per_round + 1)


def primary_counts_of_records(config: TrainConfig, round_ends: Sequence[bool]) -> list[int]:
    """The primary-transition count each of a ledger's updates ran at, in order, given for each update
    whether its record ends a round (only read with ``wm_holdout > 0``)."""
    if not config.wm_holdout:
        return [primary_count_at_update(config, u) for u in range(1, len(round_ends) + 1)]
    counts, round_number = [], 1
    for ends in round_ends:
        counts.append(primary_count_at_round(config, round_number))
        round_number += bool(ends)
    return counts


def last_round_rows(config: TrainConfig, primary_count: int) -> slice:
    """The recorded primary transitions (stream positions) the last world-model round completed by
    ``primary_count`` stored transitions could sample: the round's count, its last ``buffer_size``
    (every recorded transition when no round has run)."""
    rounds = rounds_completed_by(config, primary_count)
    end = primary_count_at_round(config, rounds) if rounds else primary_count
    return slice(max(0, end - config.buffer_size), end)


def rounds_completed_by(config: TrainConfig, primary_count: int) -> int:
    """How many world-model rounds have run once ``primary_count`` transitions are stored (and the
    round due at that count, if any, has finished)."""
    if primary_count < config.first_round:
        return 0
    return (primary_count - config.first_round) // config.wm_train_every + 1


def updates_completed_by(config: TrainConfig, primary_count: int) -> int:
    """How many world-model updates have run once ``primary_count`` transitions are stored (and the
    round due at that count, if any, has finished), for rounds of fixed length (``wm_holdout = 0``;
    with a held-out split it is at most this many)."""
    return rounds_completed_by(config, primary_count) * config.wm_updates_per_round


# ---------------------------------------------------------------------------------------- files


def document_digest(document: Mapping[str, Any]) -> str:
    """The ledger header's ``config_digest`` of a ``config.json`` document.

    Covers everything except ``train.total_steps`` and the :data:`EXECUTION_FIELDS`: the run's length
    decides how many world-model updates happen, never what any of them computes, and a resumed run
    may be extended; where the auxiliary environments run changes no value of the run.
    """
    left_out = {"total_steps", *EXECUTION_FIELDS}
    train = {k: v for k, v in document.get("train", {}).items() if k not in left_out}
    from amal_verified.record.ledger import config_digest

    return config_digest({**document, "train": train})
