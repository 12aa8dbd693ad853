"""``amal bench`` and ``amal report``: the subcommands this distribution adds to the ``amal`` command.

``amal_verified``'s command line finds them through the entry-point group ``amal_verified.commands``
(this distribution's ``pyproject.toml``), so the installed library never imports its repository
tooling.  Each entry is a :class:`Command`: its parser's arguments and its handler.  Importing this
module imports neither torch nor the tooling's dependencies; the handlers import what they run.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import final

__all__ = ["BENCH", "REPORT", "Command"]


@final
@dataclass(frozen=True)
class Command:
    """One ``amal`` subcommand: ``add_arguments(parser)`` then ``run(args, argv) -> exit code``."""

    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Sequence[str]], int]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ---------------------------------------------------------------------------------------- amal report


def _report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("--out", type=Path, help="report directory (new or empty)")
    report.add_argument(
        "--check",
        type=Path,
        metavar="DIR",
        help="build nothing: compare the file digests the report in DIR recorded with this checkout and "
        "list what changed since (exit 1 on drift)",
    )
    report.add_argument(
        "--quick", action="store_true", help="CI report: default Hypothesis profile, no timing measurements"
    )
    report.add_argument(
        "--only", action="append", default=[], metavar="ID", help="run only this obligation; repeatable"
    )
    report.add_argument("--jobs", type=int, default=1, help="checks run in parallel (default 1)")
    report.add_argument(
        "--hypothesis-seed", type=int, default=0, help="seed of the full report's Hypothesis runs (default 0)"
    )
    report.add_argument(
        "--proofs", type=Path, default=None, help="proofs directory (default: proofs/ of this checkout)"
    )


def _report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from amal_tools.compliance.discovery import default_proofs_dir

    if args.check is not None:
        if args.out is not None:
            raise ValueError("--check reads an existing report; drop --out")
        from amal_tools.compliance.drift import report_drift

        root = (args.proofs or default_proofs_dir()).resolve().parent
        drift = report_drift(args.check, root)
        for line in drift.lines():
            print(line)
        return 0 if drift.ok else 1
    if args.out is None:
        raise ValueError("--out DIRECTORY is required: where the report is written (or --check DIR)")
    from amal_tools.compliance.runner import ReportOptions, build_report

    proofs = (args.proofs or default_proofs_dir()).resolve()
    options = ReportOptions(
        out=args.out.resolve(),
        proofs_dir=proofs,
        root=proofs.parent,
        quick=args.quick,
        only=tuple(args.only),
        jobs=args.jobs,
        hypothesis_seed=args.hypothesis_seed,
        command=shlex.join(["amal", *argv]),
    )
    outcome = build_report(options, progress=lambda line: print(line, flush=True))
    summary = ", ".join(f"{n} {v}" for v, n in outcome.report["summary"].items() if n)
    print(f"report written to {args.out}: {summary}")
    if not outcome.ok:
        violated = [o["id"] for o in outcome.report["obligations"] if o["verdict"] == "violated"]
        print(f"VIOLATED: {', '.join(violated)} (see report.md)")
    return 0 if outcome.ok else 1


REPORT = Command(
    help="run the proof obligations (proofs/) and write the compliance report",
    description=(
        "Run every obligation's checks (z3, CrossHair, Hypothesis properties, measurements, the replay "
        "certificate) and write report.json (canonical, schema-validated), report.md, report.html, plots "
        "and an in-toto statement into --out. The full report (default) uses the audit Hypothesis "
        "profile and runs timing measurements; --quick is what CI runs."
    ),
    add_arguments=_report_arguments,
    run=_report,
)


# ---------------------------------------------------------------------------------------- amal bench


def _bench_arguments(bench: argparse.ArgumentParser) -> None:
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="quick mode: a smoke run (default)"
    )
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="full mode (hours)")
    bench.set_defaults(mode="quick")
    bench.add_argument("--tasks", nargs="+", metavar="TASK", help="task names (default: the mode's suite)")
    bench.add_argument("--methods", nargs="+", metavar="METHOD", help="methods (default: all)")
    bench.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        metavar="SEED",
        help="run seeds (default: 0 in quick mode, 0 1 2 in full mode)",
    )
    bench.add_argument("--jobs", type=_positive_int, default=1, help="cells trained in parallel (default 1)")
    bench.add_argument(
        "--backend",
        choices=("auto", "local", "ray"),
        default="auto",
        help="where cells run: worker processes here (local), or Ray tasks on the cluster in RAY_ADDRESS "
        "or a local Ray instance (ray); auto (default): ray where Ray is installed and RAY_ADDRESS is set",
    )
    bench.add_argument("--budget", type=_positive_int, default=None, help="override every task's step budget")
    bench.add_argument(
        "--eval-episodes", type=_positive_int, default=None, help="override evaluation episodes per point"
    )
    bench.add_argument(
        "--out", type=Path, default=None, help="results directory (default bench-results/MODE)"
    )
    bench.add_argument(
        "--results", type=Path, default=None, help="where to write RESULTS.md (default OUT/RESULTS.md)"
    )
    bench.add_argument("--no-ratios", action="store_true", help="skip the performance ratios")
    bench.add_argument(
        "--keep-runs",
        action="store_true",
        help="keep each cell's run directory in OUT/work/ (for amal certify)",
    )
    bench.add_argument(
        "--report-only", action="store_true", help="rewrite RESULTS.md from OUT's records without training"
    )
    bench.add_argument("--list", action="store_true", help="list tasks and methods, then exit")


def _bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from amal_tools.bench.command import run_bench_command

    return run_bench_command(args, argv)


BENCH = Command(
    help="run the paper's evaluation framework (§6.1) and write RESULTS.md",
    description=(
        "Train every (method, task, seed) cell, measure levels, isolation, reality gap, robustness "
        "under shift and the performance ratios, and write RESULTS.md with plots into --out. "
        "--quick (default) is a smoke run of every quick task and method, one seed each, in minutes; "
        "--full is the measurement, three seeds, hours to days, and resumes where it stopped."
    ),
    add_arguments=_bench_arguments,
    run=_bench,
)
