"""Build a compliance report: run every obligation's checks and write the report directory.

Output (``DIR``):

``report.json``
    canonical JSON (sorted keys, no whitespace, ASCII), validated against
    :data:`~amal_tools.compliance.schema.SCHEMA` before it is written.
``report.intoto.json``
    an in-toto Statement whose subject is the sha256 of ``report.json``'s bytes.
``report.md``, ``report.html``
    the same content for people (jinja2), with the plots.
``report.schema.json``, ``plots/*.png``, ``logs/<obligation>/<check>/``
    the schema, the figures, and each check's log, JUnit XML, SMT outcome and evidence;
    every log's sha256 is in ``report.json``.

Pytest-based checks run with ``--hypothesis-profile`` (``default`` or ``audit``) and, in the
full report, ``--run-benchmarks``: the repository's conftest files must define the ``audit``
profile and that option (this repository's root ``conftest.py`` and ``properties/conftest.py`` do).

The directory appears only when the report is complete: it is assembled in a sibling
staging directory and renamed into place, so an interrupted or failed run leaves no
half-written report (the staging directory is removed).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amal_tools.compliance.dependencies import import_closure
from amal_tools.compliance.discovery import ObligationFile, discover
from amal_tools.compliance.execution import CheckResult, RunSettings, run_check
from amal_tools.compliance.obligation import Check, Kind, Method, Verdict
from amal_tools.compliance.provenance import (
    TOOLS_BY_METHOD,
    git_state,
    platform_info,
    sha256_file,
    tool_versions,
)
from amal_tools.compliance.schema import SCHEMA, SCHEMA_ID, validate_report
from amal_verified.record.ledger import canonical_json

__all__ = ["ReportError", "ReportOptions", "ReportOutcome", "build_report", "obligation_verdict"]


class ReportError(ValueError):
    """The report cannot be built as asked (existing output, unknown obligation id, no proofs)."""


@dataclass(frozen=True)
class ReportOptions:
    """What to run and where.

    ``quick``: the CI report — Hypothesis ``default`` profile (derandomized), timing measurements
    (checks with ``quick=False``) not run.  Otherwise the full report: ``audit`` profile with
    ``hypothesis_seed``, every check, timing measurements alone after the others.
    """

    out: Path
    proofs_dir: Path
    root: Path
    quick: bool = False
    only: tuple[str, ...] = ()
    jobs: int = 1
    hypothesis_seed: int = 0
    command: str = "amal report"


@dataclass(frozen=True)
class ReportOutcome:
    report: dict[str, Any]
    out: Path

    @property
    def ok(self) -> bool:
        """No obligation violated (in a quick report, some may be ``not checked``)."""
        return all(o["verdict"] != Verdict.VIOLATED.value for o in self.report["obligations"])


def obligation_verdict(kind: Kind, verdicts: list[Verdict]) -> Verdict:
    """The obligation's verdict from its checks' (rules: :mod:`~amal_tools.compliance.obligation`)."""
    if Verdict.VIOLATED in verdicts:
        return Verdict.VIOLATED
    if Verdict.NOT_CHECKED in verdicts:
        return Verdict.NOT_CHECKED
    if kind is Kind.REFUTATION:
        if Verdict.REFUTED in verdicts or Verdict.PROVED_COQ in verdicts:
            return Verdict.REFUTED
        return Verdict.REFUTED_STATISTICAL if Verdict.REFUTED_STATISTICAL in verdicts else Verdict.VIOLATED
    if verdicts and all(v is Verdict.PROVED_COQ for v in verdicts):
        return Verdict.PROVED_COQ
    if verdicts and all(v in (Verdict.PROVED, Verdict.PROVED_COQ) for v in verdicts):
        return Verdict.PROVED
    return Verdict.TESTED


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "check"


def _target_file(check: Check, root: Path) -> str | None:
    """The repository-relative file a check's target lives in, if it is one."""
    if check.method is Method.COQ:
        return check.target.rpartition(":")[0]
    if check.method in (Method.SMT, Method.CROSSHAIR):
        head = check.target.rpartition(":")[0]
        candidate = head if head.endswith(".py") else check.target
        if not candidate.endswith(".py"):  # dotted name: the longest prefix that is a module file
            parts = candidate.split(".")
            for n in range(len(parts), 0, -1):
                path = Path(*parts[:n]).with_suffix(".py")
                if (root / path).is_file():
                    return path.as_posix()
            return None
        return candidate
    return check.target.split("::", 1)[0]


def _file_digests(entry: ObligationFile, root: Path) -> dict[str, str]:
    paths = {entry.path.as_posix()}
    for check in entry.obligation.checks:
        target = _target_file(check, root)
        if target:
            paths.add(target)
        paths.update(check.files)
    paths |= import_closure(sorted(paths), root)
    digests = {}
    for path in sorted(paths):
        full = root / path
        if not full.is_file():
            raise ReportError(f"obligation {entry.obligation.id}: checked file {path} does not exist")
        digests[path] = sha256_file(full)
    return digests


def _log_digests(work: Path, staging: Path) -> dict[str, str]:
    if not work.exists():
        return {}
    return {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(work.rglob("*")) if p.is_file()}


def _not_run(check: Check) -> CheckResult:
    return CheckResult(
        name=check.name,
        method=check.method.value,
        target=check.target,
        verdict=Verdict.NOT_CHECKED,
        detail="timing measurement: not run in the quick report (run the full report: amal report --out DIR)",
    )


def _check_record(check: Check, result: CheckResult) -> dict[str, Any]:
    return {
        "name": check.name,
        "method": check.method.value,
        "target": check.target,
        "verdict": result.verdict.value,
        "detail": result.detail,
        "command": result.command_line if result.command else None,
        "argv": list(result.command),
        "duration_s": result.duration_s,
        "returncode": result.returncode,
        "counterexample": result.counterexample,
        "logs": result.logs,
        "settings": result.settings,
        "evidence": result.evidence,
        "quick": check.quick,
    }


def _obligation_record(
    entry: ObligationFile, results: list[CheckResult], files: dict[str, str], commit: str | None
) -> dict[str, Any]:
    ob = entry.obligation
    methods = sorted({c.method.value for c in ob.checks})
    tools: tuple[str, ...] = ("amal_verified", "torch", "numpy", "pytest")
    for method in methods:
        tools += TOOLS_BY_METHOD[method]
    logs: dict[str, str] = {}
    for r in results:
        logs.update(r.logs)
    return {
        "id": ob.id,
        "title": ob.title,
        "paper": ob.paper,
        "claim": ob.claim,
        "assumptions": list(ob.assumptions),
        "kind": ob.kind.value,
        "verdict": obligation_verdict(ob.kind, [r.verdict for r in results]).value,
        "methods": methods,
        "commands": [r.command_line for r in results if r.command],
        "tool_versions": tool_versions(tuple(sorted(set(tools)))),
        "seeds": {r.name: r.evidence.get("seeds", r.settings.get("hypothesis_seed")) for r in results},
        "settings": {r.name: {**r.settings, **r.evidence.get("settings", {})} for r in results},
        "duration_s": round(sum(r.duration_s for r in results), 3),
        "files": files,
        "logs": logs,
        "counterexamples": [f"{r.name}: {r.counterexample}" for r in results if r.counterexample],
        "git_commit": commit,
        "notes": ob.notes,
        "file": entry.path.as_posix(),
        "checks": [_check_record(c, r) for c, r in zip(ob.checks, results, strict=True)],
    }


def _without_out(command: str, out: Path) -> str:
    """``command`` with the report directory it names written ``$REPORT``."""
    for form in sorted({str(out), str(out.resolve())}, key=len, reverse=True):
        command = command.replace(form, "$REPORT")
    return command


def _portable_commands(
    obligations: list[dict[str, Any]], *, out: Path, staging: Path, root: Path
) -> Callable[[str], str]:
    """Commands as anyone can run them from the checkout: paths under the report directory start with
    ``$REPORT``, paths under the checkout are relative to it; no path of the building machine stays."""
    prefixes = [
        (str(staging.resolve()) + os.sep, "$REPORT/"),
        (str(out.resolve()) + os.sep, "$REPORT/"),
        (str(root.resolve()) + os.sep, ""),
    ]

    def portable(text: str) -> str:
        for prefix, replacement in prefixes:
            text = text.replace(prefix, replacement)
        return text

    for obligation in obligations:
        obligation["commands"] = [portable(c) for c in obligation.get("commands", [])]
        for check in obligation.get("checks", []):
            if check.get("command") is not None:
                check["command"] = portable(check["command"])
            check["argv"] = [portable(a) for a in check.get("argv", [])]
    return portable


def _plots(report: dict[str, Any], staging: Path) -> tuple[list[dict[str, Any]], list[str]]:
    from amal_tools.compliance.plots import PLOTTERS, PlotError, draw

    records: dict[str, Any] = {}
    for ob in report["obligations"]:
        for check in ob["checks"]:
            records.update({k: v for k, v in check["evidence"].items() if k in PLOTTERS})
    plots, problems = [], []
    (staging / "plots").mkdir()
    for name in sorted(records):
        path = staging / "plots" / f"{name}.png"
        try:
            title = draw(name, records[name], path)
        except PlotError as exc:
            problems.append(str(exc))
            continue
        plots.append(
            {"file": f"plots/{name}.png", "title": title, "sha256": sha256_file(path), "evidence": name}
        )
    return plots, problems


def _prepare_output(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReportError(f"{out} exists and is not an empty directory: choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def build_report(options: ReportOptions, progress: Callable[[str], None] = lambda _: None) -> ReportOutcome:
    """Run the obligations of ``options.proofs_dir`` and write the report into ``options.out``.

    Raises :class:`ReportError` (and writes nothing) if the output exists, an id in ``only`` is
    unknown, or a proofs file is unusable.  A failing check is a verdict, not an exception.
    """
    entries = discover(options.proofs_dir, options.root)
    if options.only:
        known = {e.obligation.id for e in entries}
        unknown = sorted(set(options.only) - known)
        if unknown:
            raise ReportError(f"unknown obligation id(s) {unknown}; known: {sorted(known)}")
        entries = [e for e in entries if e.obligation.id in options.only]
    if options.jobs < 1:
        raise ReportError(f"--jobs must be at least 1, got {options.jobs}")
    staging = _prepare_output(options.out)
    try:
        report = _run(options, entries, staging, progress)
        if options.out.exists():  # an empty directory (checked above)
            options.out.rmdir()
        os.replace(staging, options.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ReportOutcome(report, options.out)


def _run(
    options: ReportOptions, entries: list[ObligationFile], staging: Path, progress: Callable[[str], None]
) -> dict[str, Any]:
    settings = RunSettings(
        hypothesis_profile="default" if options.quick else "audit",
        hypothesis_seed=None if options.quick else options.hypothesis_seed,
        run_benchmarks=not options.quick,
    )
    # Before the checks run: the commit and file digests of the code they check (and a missing file
    # is reported before hours of checks, not after).
    git = git_state(options.root)
    digests = {e.obligation.id: _file_digests(e, options.root) for e in entries}
    tasks = [(e, c) for e in entries for c in e.obligation.checks]
    total = len(tasks)
    results: dict[tuple[str, str], CheckResult] = {}
    done = 0
    lock = threading.Lock()

    def one(entry: ObligationFile, check: Check) -> None:
        nonlocal done
        work = staging / "logs" / entry.obligation.id / _slug(check.name)
        result = run_check(check, entry.obligation.kind, options.root, work, settings)
        result.logs = _log_digests(work, staging)
        # shown with artefact paths at their final place (the staging directory is renamed to --out)
        result.command = [arg.replace(str(staging), str(options.out)) for arg in result.command]
        with lock:
            results[(entry.obligation.id, check.name)] = result
            done += 1
            progress(
                f"[{done}/{total}] {entry.obligation.id} / {check.name}: {result.verdict.value} "
                f"({result.duration_s:.1f} s) {result.detail}"
            )

    parallel = [(e, c) for e, c in tasks if c.quick]
    alone = [(e, c) for e, c in tasks if not c.quick]
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        for future in [pool.submit(one, e, c) for e, c in parallel]:
            future.result()
    for entry, check in alone:
        if options.quick:
            results[(entry.obligation.id, check.name)] = _not_run(check)
            done += 1
            progress(
                f"[{done}/{total}] {entry.obligation.id} / {check.name}: not run (timing, full report only)"
            )
        else:
            one(entry, check)

    obligations = [
        _obligation_record(
            e,
            [results[(e.obligation.id, c.name)] for c in e.obligation.checks],
            digests[e.obligation.id],
            git["commit"],
        )
        for e in entries
    ]
    portable = _portable_commands(obligations, out=options.out, staging=staging, root=options.root)
    summary = {v.value: 0 for v in Verdict}
    for ob in obligations:
        summary[ob["verdict"]] += 1
    report: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "mode": "quick" if options.quick else "full",
        "command": portable(_without_out(options.command, options.out)),
        "git": git,
        "tools": tool_versions(),
        "platform": platform_info(),
        "settings": {
            "hypothesis_profile": settings.hypothesis_profile,
            "hypothesis_seed": settings.hypothesis_seed
            if settings.hypothesis_seed is not None
            else "derandomized",
            "run_benchmarks": settings.run_benchmarks,
            "jobs": options.jobs,
            "only": list(options.only),
        },
        "summary": summary,
        "obligations": obligations,
        "plots": [],
    }
    report["plots"], plot_problems = _plots(report, staging)
    if plot_problems:
        report["settings"]["plot_problems"] = plot_problems
    validate_report(report)
    report_bytes = canonical_json(report)
    (staging / "report.json").write_bytes(report_bytes)
    (staging / "report.schema.json").write_text(
        json.dumps(SCHEMA, indent=1, sort_keys=True), encoding="utf-8"
    )

    from amal_tools.compliance.render import render_html, render_markdown
    from amal_tools.compliance.statement import build_statement

    (staging / "report.md").write_text(render_markdown(report), encoding="utf-8")
    (staging / "report.html").write_text(render_html(report, staging), encoding="utf-8")
    statement = build_statement(report_bytes, report)
    (staging / "report.intoto.json").write_text(
        json.dumps(statement, indent=1, sort_keys=True), encoding="utf-8"
    )
    return report
