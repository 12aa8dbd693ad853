"""The ``amal`` command line: ``demo``, ``train``, ``evaluate``, ``certify``, ``keygen``, ``audit``,
``report`` and ``bench``.

Exit codes: 0 success (``certify``: CERTIFIED; ``audit``: PASSED); 1 the command ran and its verdict
is negative (``certify``: NOT CERTIFIED; ``audit``: interference found; ``demo``: a scenario
misbehaved; ``report``: an obligation violated; ``bench``: a cell failed — every other cell's result
is kept and reported; ``certify --verify``: the signed envelope does not verify or does not match
the run); 2 bad usage or input (argparse's convention; for
``audit`` also a target that fails on its own inputs or is not deterministic: the audit is
inconclusive), with a one-line message naming the problem.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

__all__ = ["main"]


def _parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


_ActionT = TypeVar("_ActionT", bound=argparse.Action)


class _StoreOnce(argparse._StoreAction):
    """An option that may be given once: a second occurrence is refused, not silently kept."""

    # The namespaces this option was given in; namespaces compare by value, so they are kept by identity.
    _given_in: tuple[weakref.ref[argparse.Namespace], ...] = ()

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        self._given_in = tuple(ref for ref in self._given_in if ref() is not None)
        if any(ref() is namespace for ref in self._given_in):
            flag = option_string or self.option_strings[0]
            previous = getattr(namespace, self.dest, None)
            raise argparse.ArgumentError(
                self, f"given more than once ({flag} {previous}, {flag} {values}): give it once"
            )
        self._given_in += (weakref.ref(namespace),)
        super().__call__(parser, namespace, values, option_string)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose epilog may be computed only when its help is shown, and whose
    single-valued options may each be given once."""

    def __init__(self, *args: Any, epilog_factory: Callable[[], str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epilog_factory = epilog_factory

    def _add_action(self, action: _ActionT) -> _ActionT:
        # Every option that stores one value, added directly or through a mutually exclusive group,
        # is refused when repeated.
        if type(action) is argparse._StoreAction and action.option_strings:
            store_once: type = _StoreOnce
            action.__class__ = store_once
        return super()._add_action(action)

    def format_help(self) -> str:
        """The help text, with the epilog computed on first use."""
        if self._epilog_factory is not None and self.epilog is None:
            self.epilog = self._epilog_factory()
        return super().format_help()


def _configuration_fields_help() -> str:
    from amal_verified.run.config import field_descriptions

    lines = ["configuration fields (--set KEY=VALUE, or keys of the --config file): KEY = default"]
    for name, (accepts, default, meaning) in field_descriptions().items():
        lines.append(f"  {name} = {json.dumps(default)}")
        lines.append(f"      {meaning} ({accepts})")
    return "\n".join(lines)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amal",
        description="amal_verified: auxiliary agents explore; world models learn from primary data only.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = commands.add_parser(
        "demo", help="show the gate refusing leaks and accepting clean world-model updates"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed for data collection and initialisation")

    train = commands.add_parser(
        "train",
        help="train an AMAL agent (world model gated to primary data)",
        description=(
            "Train an AMAL agent. The run's configuration is TrainConfig's defaults, then the fields in\n"
            "--config FILE, then --env/--steps/--seed/--unsafe-mix and --set KEY=VALUE (a flag and --set\n"
            "of one field must agree). It is checked before anything is built; --print-config shows it.\n"
            "The fields are listed below."
        ),
        epilog_factory=_configuration_fields_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--env",
        default=None,
        help="env_id: gymnasium id (default CartPole-v1), or MODULE:ID (imports MODULE, which registers ID)",
    )
    train.add_argument("--steps", type=int, default=None, help="total_steps: primary environment steps")
    train.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed: every random stream derives from it (a non-negative integer below 2**63)",
    )
    train.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON file of configuration fields, or a run's config.json (its train section)",
    )
    train.add_argument(
        "--out", type=Path, default=None, help="run directory (new, or existing with --resume); required"
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint, as configured (only --steps may change, and "
        "--set of aux_backend and the ray_* fields)",
    )
    train.add_argument(
        "--unsafe-mix",
        action="store_true",
        help="ABLATION ONLY: train the world model on primary AND auxiliary data, ungated (cannot certify)",
    )
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        type=_parse_override,
        metavar="KEY=VALUE",
        help="set a configuration field (listed below; none for None, true/false); repeatable, once "
        "per field",
    )
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the resulting configuration as JSON (valid --config input) and exit without training",
    )
    train.add_argument(
        "--no-progress", action="store_true", help="no progress bar or lines (logs still written)"
    )

    evaluate = commands.add_parser("evaluate", help="evaluate a run's policy and world model on the real env")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument(
        "--episodes", type=int, default=10, help="evaluation episodes, a positive integer (default 10)"
    )
    evaluate.add_argument(
        "--seed",
        type=int,
        default=12345,
        help="seed of the evaluation episodes, a non-negative integer (default 12345)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the full report as JSON")

    certify = commands.add_parser(
        "certify", help="replay every world-model update from the recorded primary data alone (Theorem 1)"
    )
    certify.add_argument(
        "run_dir",
        type=Path,
        nargs="?",
        help="the run directory (optional with --verify: then only the signature)",
    )
    certify.add_argument("--quiet", action="store_true", help="print only the verdict")
    certify.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="replay with at most N processes, each for a range of the world model's members (default: "
        "the CPUs available, when the replay is long enough to repay starting them); bit for bit the same",
    )
    certify.add_argument(
        "--sign",
        type=Path,
        metavar="KEY",
        help="sign the run head and the certificate with the ed25519 KEY (amal keygen) into a DSSE envelope "
        "beside the certificate (certificate.dsse.json); needs the [sign] extra",
    )
    certify.add_argument(
        "--verify",
        type=Path,
        metavar="ENVELOPE",
        help="check a signed envelope (no replay): its signature by --public-key and, given RUN_DIR, that it "
        "matches the run's ledger head, run head, checkpoint and the certificate beside the envelope",
    )
    certify.add_argument(
        "--public-key", type=Path, metavar="PUB", help="the public key (KEY.pub) for --verify"
    )
    where = certify.add_mutually_exclusive_group()
    where.add_argument(
        "--certificate",
        type=Path,
        metavar="FILE",
        help="write the certificate to FILE (default: RUN_DIR/certificate.json), e.g. for a read-only run; "
        "not inside RUN_DIR",
    )
    where.add_argument("--no-write", action="store_true", help="print the verdict only; write no certificate")

    keygen = commands.add_parser(
        "keygen",
        help="create an ed25519 key for amal certify --sign (KEY, mode 0600, and KEY.pub)",
        description="Create an ed25519 signing key: the private key at --out (PEM, mode 0600) and the public "
        "key at --out.pub. Never overwrites a file. Needs the [sign] extra (cryptography).",
    )
    keygen.add_argument(
        "--out", type=Path, required=True, metavar="KEY", help="where to write the private key"
    )

    audit = commands.add_parser(
        "audit",
        help="audit your train(primary, aux) -> world model: does the world model depend on aux data?",
        description=(
            "Run the differential isolation audit on a training function: train(primary, aux) on its "
            "example inputs (amal_example_inputs() in the same module) and on generated auxiliary variants "
            "(0, huge, NaN and infinite values; other row counts; other numbers of agents), global "
            "generators reset before each run, and compare the world models bit for bit. Exit 0: passed; 1: "
            "interference found; 2: the target is unusable or not deterministic."
        ),
    )
    audit.add_argument("target", help="module:function or path/to/file.py:function")
    audit.add_argument(
        "--max-examples", type=_positive_int, default=100, help="auxiliary variants to try (default 100)"
    )
    audit.add_argument("--seed", type=int, default=0, help="Hypothesis seed of the variants (default 0)")
    audit.add_argument(
        "--threads", type=_positive_int, default=1, help="torch intra-op threads per run (default 1)"
    )
    audit.add_argument("--json", action="store_true", help="print the result as JSON")

    tooling = _tooling_commands()
    for name, summary in _TOOLING.items():
        command = tooling.get(name)
        if command is None:
            # Without the tooling every argument is accepted, so that running it says what to install.
            missing = commands.add_parser(
                name,
                help=f"{summary} (repository tooling: pip install -e tools)",
                prefix_chars="\0",
                add_help=False,
            )
            missing.add_argument("arguments", nargs="*", help=argparse.SUPPRESS)
        else:
            sub = commands.add_parser(name, help=command.help, description=command.description)
            command.add_arguments(sub)
    return parser


class ToolingMissing(RuntimeError):
    """``amal bench`` / ``amal report`` without the repository tooling installed."""


# Subcommands that the repository's tooling (the distribution in tools/) adds, found through the
# entry-point group ``amal_verified.commands``: the library never imports the tooling by name.
_TOOLING: Final = {
    "report": "run the proof obligations (proofs/) and write the compliance report",
    "bench": "run the paper's evaluation framework (§6.1) and write RESULTS.md",
}


def _tooling_commands() -> dict[str, Any]:
    """The installed tooling's subcommands by name (objects with ``help``, ``description``,
    ``add_arguments(parser)`` and ``run(args, argv)``)."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group="amal_verified.commands"):
        if ep.name in _TOOLING:
            try:
                found[ep.name] = ep.load()
            except ImportError:  # registered, but not importable here: as if not installed
                continue
    return found


# The flags that set a configuration field, by field.
_FIELD_FLAGS: Final = {
    "env_id": "--env",
    "total_steps": "--steps",
    "seed": "--seed",
    "unsafe_mix": "--unsafe-mix",
}


def _settings(overrides: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The fields set by ``--set KEY=VALUE``, each parsed and checked (:func:`parse_field`); a field set
    twice is refused (one line naming it), never resolved by order."""
    from amal_verified.run.config import parse_field

    settings: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for key, raw in overrides:
        if key in texts:
            raise ValueError(
                f"--set {key} is given more than once ({key}={texts[key]}, {key}={raw}): give it once"
            )
        texts[key] = raw
        try:
            settings[key] = parse_field(key, raw)
        except ValueError as exc:
            raise ValueError(f"--set {key}={raw}: {exc}") from None
    return settings


def _train_config(args: argparse.Namespace) -> Any:
    """The run's TrainConfig: defaults < --config file < flags and --set (flag and --set of one field
    must agree).  Imports neither torch nor the environments."""
    from amal_verified.run.config import TrainConfig, read_config_file

    values: dict[str, Any] = {} if args.config is None else read_config_file(args.config)
    flags = {
        "env_id": args.env,
        "total_steps": args.steps,
        "seed": args.seed,
        "unsafe_mix": args.unsafe_mix or None,
    }
    given = {name: value for name, value in flags.items() if value is not None}
    settings = _settings(args.overrides)
    for name in given.keys() & settings.keys():
        if given[name] != settings[name]:
            flag = _FIELD_FLAGS[name]
            raise ValueError(
                f"{flag} and --set {name} disagree ({given[name]!r}, {settings[name]!r}): give one"
            )
    return TrainConfig.from_json({**values, **given, **settings})


def _train(args: argparse.Namespace) -> int:
    execution: dict[str, Any] = {}
    if args.resume:
        from amal_verified.run.config import EXECUTION_FIELDS

        fixed = [key for key, _ in args.overrides if key not in EXECUTION_FIELDS]
        conflicting = [
            flag
            for flag, given in (
                ("--config", args.config is not None),
                (f"--set {', '.join(fixed)}", bool(fixed)),
                ("--env", args.env is not None),
                ("--seed", args.seed is not None),
                ("--unsafe-mix", args.unsafe_mix),
                ("--print-config", args.print_config),
            )
            if given
        ]
        if conflicting:
            raise ValueError(
                f"--resume continues the run as it was configured; drop {', '.join(conflicting)} "
                "(only --steps may change, to extend the run, and --set of the execution fields "
                f"{', '.join(EXECUTION_FIELDS)})"
            )
        execution = _settings(args.overrides)
    else:
        config = _train_config(args)  # checked before the trainer (torch, environments) is imported
        if args.print_config:
            print(json.dumps(dataclasses.asdict(config), indent=1))
            return 0
    if args.out is None:
        raise ValueError("--out DIRECTORY is required: where the run is written (or resumed from)")
    from amal_verified.run.trainer import Trainer

    progress = not args.no_progress
    if args.resume:
        trainer = Trainer.resume(args.out, progress=progress, total_steps=args.steps, execution=execution)
    else:
        trainer = Trainer.create(config, args.out, progress=progress)
    if trainer.config.unsafe_mix:
        print("WARNING: --unsafe-mix ablation: the world model trains on auxiliary data, ungated.")
    from amal_verified.run.stop_signals import RunInterrupted

    try:
        metrics = trainer.run()
    except RunInterrupted as stopped:
        print(f"amal train: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except KeyboardInterrupt:
        print(
            f"amal train: interrupted at step {trainer.step} before a safe point; it resumes from its last "
            f"checkpoint with: amal train --resume --out {args.out}",
            file=sys.stderr,
        )
        return 130
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    marker = " [UNSAFE-MIX ablation]" if trainer.config.unsafe_mix else ""
    print(f"trained {trainer.step} primary steps in {args.out}{marker}: {json.dumps(shown)}")
    print(f"certify with: amal certify {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise ValueError(f"--episodes must be a positive integer, got {args.episodes}")
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    from amal_verified.run.evaluate import evaluate_run

    report = evaluate_run(args.run_dir, episodes=args.episodes, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    wm = report["world_model"]
    solved = report["solved_return"]
    marker = " [UNSAFE-MIX ablation]" if report["unsafe_mix"] else ""
    print(
        f"{report['env_id']} at step {report['step']}{marker}: mean return {report['mean_return']:.1f} "
        f"± {report['std_return']:.1f} over {report['episodes']} episodes"
        + (f" (solved at {solved:g})" if solved is not None else "")
    )
    print(
        f"world model on those {wm['transitions']} real transitions: next-observation MSE "
        f"{wm['next_obs_mse']:.4g}, reward MSE {wm['reward_mse']:.4g}, NLL {wm['nll_per_member_mean']:.4g}"
    )
    fit = wm["fit"]
    for name, key in (("next-observation", "next_obs_mse"), ("reward", "reward_mse")):
        print(
            f"  {name} MSE: world model {fit['model'][key]:.4g}, no change {fit['no_change'][key]:.4g}, "
            f"best constant {fit['best_constant'][key]:.4g}"
        )
    verdict = "beats" if fit["beats_naive"] else "does NOT beat"
    print(
        f"  the world model {verdict} both naive predictors (their statistics from the "
        f"{fit['training_transitions']} primary transitions it trained on)"
    )
    return 0


def _certificate_beside(envelope: Path) -> Path:
    """The certificate file that :func:`~amal_verified.run.certify.signed_path` puts ``envelope`` beside."""
    return envelope.with_name(envelope.name.removesuffix(".dsse.json") + ".json")


def _keygen(args: argparse.Namespace) -> int:
    from amal_verified.record.signing import generate_key

    private, public = generate_key(args.out)
    print(f"wrote the private key {private} (mode 0600; keep it secret) and the public key {public}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from amal_verified.record.files import read_json
    from amal_verified.record.signing import InvalidEnvelope, verify_envelope
    from amal_verified.run.certify import statement_mismatches

    if args.public_key is None:
        raise ValueError("--verify ENVELOPE needs --public-key PUB (the KEY.pub written by amal keygen)")
    given = [flag for flag, on in (("--sign", args.sign), ("--certificate", args.certificate)) if on]
    if given or args.no_write:
        raise ValueError(
            f"--verify checks an envelope and writes nothing: drop {', '.join(given or ['--no-write'])}"
        )
    if args.run_dir is not None and not args.run_dir.is_dir():
        raise ValueError(f"run directory {args.run_dir} does not exist")
    envelope = read_json(args.verify, "signed envelope")
    try:
        if not isinstance(envelope, dict):
            raise InvalidEnvelope("not a DSSE envelope: not a JSON object")
        statement = verify_envelope(envelope, args.public_key)
        if args.run_dir is not None:
            beside = _certificate_beside(args.verify)
            certificate = read_json(beside, "certificate") if beside.is_file() else None
            differences = statement_mismatches(statement, args.run_dir, certificate)
            if differences:
                raise InvalidEnvelope(
                    f"the signed statement does not match {args.run_dir}: {'; '.join(differences)}"
                )
    except InvalidEnvelope as exc:
        print(f"INVALID: {args.verify}: {exc}")
        return 1
    predicate = statement["predicate"]
    against = f" and matches {args.run_dir}" if args.run_dir is not None else ""
    print(
        f"VALID: {args.verify} is signed by {args.public_key}{against} "
        f"(run head {str(predicate.get('run_head'))[:16]}..., "
        f"ledger head {str(predicate.get('ledger_head'))[:16]}...)"
    )
    return 0


def _processes_note(processes: str | None) -> str:
    return f" by {processes} processes" if processes not in (None, "1") else ""


def _certify_target(run_dir: Path, certificate: Path | None) -> Path:
    """Where ``amal certify`` writes the certificate: ``--certificate FILE``, or
    ``RUN_DIR/certificate.json``.  ``ValueError`` for a ``FILE`` inside the run directory other than
    ``RUN_DIR/certificate.json``: a run directory holds no other file, and the next certify would
    refuse it as unknown."""
    from amal_verified.record.files import CERTIFICATE_FILENAME

    default = run_dir / CERTIFICATE_FILENAME
    if certificate is None:
        return default
    inside = run_dir.resolve()
    resolved = certificate.resolve()
    if resolved != default.resolve() and resolved.is_relative_to(inside):
        raise ValueError(
            f"--certificate {certificate} is inside the run directory {run_dir}, which holds no such file "
            f"(the next amal certify would refuse it): write it outside the run, or to {default}"
        )
    return certificate


def _certify(args: argparse.Namespace) -> int:
    if args.verify is not None:
        return _verify(args)
    if args.public_key is not None:
        raise ValueError("--public-key is for --verify ENVELOPE")
    if args.run_dir is None:
        raise ValueError("amal certify needs RUN_DIR (or --verify ENVELOPE --public-key PUB)")
    from amal_verified.run.certify import not_a_run

    refusal = not_a_run(args.run_dir)
    if refusal is not None:
        raise ValueError(refusal)
    target = _certify_target(args.run_dir, args.certificate)
    if args.sign is not None:
        if args.no_write:
            raise ValueError("--sign writes a signed envelope beside the certificate: drop --no-write")
        from amal_verified.record.signing import signing_key_id

        signing_key_id(args.sign)  # the key is usable: checked before the replay
    from amal_verified.run.certify import certify_run, run_statement, signed_path, write_certificate

    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    cert = certify_run(args.run_dir, write=False, progress=not args.quiet, jobs=args.jobs)
    verdict = "CERTIFIED" if cert.ok else "NOT CERTIFIED"
    if not args.quiet:
        print(
            f"replayed {cert.updates_checked}/{cert.updates_in_ledger} world-model updates from "
            f"{cert.primary_transitions} recorded primary transitions in {cert.seconds:.1f} s"
            + _processes_note(cert.environment.get("replay_processes"))
            + " (no auxiliary agent, environment or policy loaded)"
        )
        for problem in cert.problems:
            print(f"  problem: {problem}")
    print(f"{verdict}: {args.run_dir}" + (" — Theorem 1 holds for this run" if cert.ok else ""))
    if not args.no_write:
        document = cert.to_json()
        envelope: dict[str, Any] | None = None
        if args.sign is not None and cert.ok:
            from amal_verified.record.signing import sign_statement

            envelope = sign_statement(run_statement(document), args.sign)
        signed = signed_path(target)
        try:
            stale = write_certificate(target, document, envelope)
        except OSError as exc:
            writing = Path(exc.filename) if exc.filename else target
            what = "the signed envelope" if writing.name == signed.name else "the certificate"
            print(
                f"amal certify: error: cannot write {what} to {writing}: {exc.strerror or exc}; "
                "write it elsewhere with --certificate FILE",
                file=sys.stderr,
            )
            return 2
        if stale is not None:
            print(f"removed {stale}: it signed the previous certificate, not this one")
        if envelope is not None:
            print(f"signed: {signed}")
        elif args.sign is not None:
            print(f"not signed: only a CERTIFIED run is signed ({signed} not written)")
    return 0 if cert.ok else 1


def _audit(args: argparse.Namespace) -> int:
    from amal_verified.audit import check_noninterference, load_target

    target = load_target(args.target)
    result = check_noninterference(
        target.train,
        target.primary,
        target.aux,
        max_examples=args.max_examples,
        seed=args.seed,
        threads=args.threads,
        name=target.name,
    )
    if args.json:
        document = {
            "target": result.target,
            "ok": result.ok,
            "verdict": result.verdict,
            "variants": result.examples,
            "seconds": result.seconds,
            "search_seconds": result.search_seconds,
            "variants_per_second": result.examples_per_second,
            "aux_variant": None if result.variant is None else list(result.variant.changes),
            "raised": result.raised,
            "differences": [dataclasses.asdict(d) for d in result.differences],
        }
        print(json.dumps(document, indent=1))
    else:
        print(result)
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``amal`` command line; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        import torch

        from amal_verified.cli.demo import run_demo

        torch.set_num_threads(min(2, torch.get_num_threads()))
        return 0 if run_demo(seed=args.seed) else 1
    handlers = {
        "train": _train,
        "evaluate": _evaluate,
        "certify": _certify,
        "keygen": _keygen,
        "audit": _audit,
    }
    try:
        if args.command in _TOOLING:
            command = _tooling_commands().get(args.command)
            if command is None:
                raise ToolingMissing(
                    f"amal {args.command} is repository tooling, not part of the installed library: from a "
                    f"checkout of the repository run `pip install -e tools` (or `make test`), then `amal "
                    f"{args.command}` there"
                )
            code: int = command.run(args, sys.argv[1:] if argv is None else argv)
            return code
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print(f"amal {args.command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(
            f"amal {args.command}: error: {exc.name} is not installed; amal {args.command} needs the "
            f"[{extra}] extra: pip install 'amal_verified[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        if isinstance(exc, FileExistsError | FileNotFoundError) or exc.errno is None:
            print(f"amal {args.command}: error: {exc}", file=sys.stderr)
        else:  # a file-system fault: disk full, read-only, permissions
            where = f" {exc.filename}:" if exc.filename else ""
            print(f"amal {args.command}: error:{where} {exc.strerror}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _is_input_error(exc):
            raise
        print(f"amal {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _is_input_error(exc: Exception) -> bool:
    """Bad usage or input (exit 2): a ``ValueError``, a missing or existing path, a damaged checkpoint
    or ledger, missing tooling."""
    kinds: list[type[Exception]] = [ValueError, FileExistsError, FileNotFoundError, ToolingMissing]
    # The checkpoint's and the ledger's modules import torch: their errors exist only once they are loaded.
    for module, name in (
        ("amal_verified.record.checkpoint", "CheckpointError"),
        ("amal_verified.record.ledger", "LedgerError"),
        ("amal_verified.record.signing", "SigningError"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None:
            kinds.append(getattr(loaded, name))
    return isinstance(exc, tuple(kinds))


# Modules of the optional dependencies (pyproject.toml's extras), by the extra that brings them.
_EXTRA_OF: Final = {
    "gymnasium": "rl",
    "mujoco": "rl",
    "minigrid": "rl",
    "tensorboard": "rl",
    "rich": "rl",
    "pydantic": "rl",
    "hypothesis": "audit",
    "stable_baselines3": "sb3",
    "cryptography": "sign",
}
