"""Run one check in its own process and read its verdict (see :mod:`~amal_tools.compliance.obligation`).

Every check runs as a subprocess of the current interpreter from the repository root,
with its output captured to ``log.txt`` in the check's directory: the command recorded
in the report is exactly the command that ran.  Pytest-based checks get
``AMAL_EVIDENCE_DIR`` so properties can record what they found, and a JUnit XML file
from which the number of passed, failed and skipped tests is read (a skipped property
is not evidence: it fails the check).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from amal_tools.compliance.obligation import Check, Kind, Method, Verdict

__all__ = ["CheckResult", "RunSettings", "command_for", "run_check"]

CROSSHAIR_FLAGS: Final = ("--analysis_kind=PEP316", "--per_condition_timeout=600", "--report_all")
_CONFIRMED = "Confirmed over all paths"
_FAILURES = re.compile(
    r"^=+ FAILURES =+$(.*?)(?=^=+ short test summary info =+$|\Z)", re.MULTILINE | re.DOTALL
)
_LOG_TAIL = 8000


@dataclass(frozen=True)
class RunSettings:
    """How checks run: the Hypothesis profile and seed, and whether timing measurements run."""

    hypothesis_profile: str
    hypothesis_seed: int | None
    run_benchmarks: bool


@dataclass
class CheckResult:
    """What one check did, as recorded in ``report.json``."""

    name: str
    method: str
    target: str
    verdict: Verdict
    detail: str
    command: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    returncode: int | None = None
    counterexample: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    """Log file path (relative to the report directory) → sha256, filled by the runner."""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


def _crosshair_target(target: str) -> str:
    """``pkg/mod.py:function`` → ``pkg.mod.function`` (CrossHair reads a ``:suffix`` as a line number)."""
    path, sep, name = target.rpartition(":")
    if sep and path.endswith(".py") and not name.isdigit():
        return path[: -len(".py")].replace("/", ".") + "." + name
    return target


def _python(root: Path) -> str:
    """This interpreter, relative to ``root`` when it lives there (``.venv/bin/python``), as it ran."""
    executable = Path(sys.executable)
    try:
        return executable.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(executable)


def command_for(check: Check, work: Path, settings: RunSettings, root: Path) -> list[str]:
    """The exact command that runs ``check`` from ``root``, writing its artefacts into ``work``."""
    python = _python(root)
    if check.method is Method.SMT:
        return [
            python,
            "-m",
            "amal_tools.compliance.smt_entry",
            check.target,
            "--out",
            str(work / "smt.json"),
        ]
    if check.method is Method.CROSSHAIR:
        return [python, "-m", "crosshair", "check", _crosshair_target(check.target), *CROSSHAIR_FLAGS]
    if check.method is Method.COQ:
        accepted = [arg for axiom in check.axioms for arg in ("--accept-axiom", axiom)]
        return [
            python,
            "-m",
            "amal_tools.compliance.coq_entry",
            check.target,
            "--out",
            str(work / "coq.json"),
            *accepted,
        ]
    command = [
        python,
        "-m",
        "pytest",
        check.target,
        "-q",
        "-p",
        "no:cacheprovider",
        f"--hypothesis-profile={settings.hypothesis_profile}",
        f"--junitxml={work / 'junit.xml'}",
    ]
    if settings.hypothesis_seed is not None:
        command.append(f"--hypothesis-seed={settings.hypothesis_seed}")
    if settings.run_benchmarks:
        command.append("--run-benchmarks")
    return command


def _execute(command: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> int | None:
    """Run ``command``, output to ``log``; ``None`` if it was killed at ``timeout`` seconds."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None


def _tail(text: str) -> str:
    """At most the last ``_LOG_TAIL`` characters (the full text is in the log, whose digest is recorded)."""
    return text if len(text) <= _LOG_TAIL else "[... truncated, see the log ...]\n" + text[-_LOG_TAIL:]


def _read_evidence(directory: Path) -> dict[str, Any]:
    evidence: dict[str, Any] = {}
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            evidence[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return evidence


def _counterexample_text(evidence: dict[str, Any]) -> str | None:
    found = evidence.get("counterexample")
    if found is None:
        return None
    return found if isinstance(found, str) else json.dumps(found, sort_keys=True, indent=1)


def _junit_counts(path: Path) -> dict[str, int]:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if not path.exists():
        return counts
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, "0"))
    return counts


def _pytest_verdict(
    kind: Kind, method: Method, code: int | None, log: str, work: Path
) -> tuple[Verdict, str, str | None]:
    counts = _junit_counts(work / "junit.xml")
    evidence = _read_evidence(work / "evidence")
    found = _counterexample_text(evidence)
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    summary = f"{passed} passed, {counts['failures'] + counts['errors']} failed, {counts['skipped']} skipped"
    if code != 0 or counts["failures"] or counts["errors"]:
        # pytest's failure section, verbatim: Hypothesis prints the shrunk failing case in it
        failures = _FAILURES.search(log)
        return (
            Verdict.VIOLATED,
            f"pytest failed ({summary})",
            _tail(failures.group(1).strip() if failures else log),
        )
    if counts["skipped"] or passed == 0:
        return Verdict.VIOLATED, f"no evidence: {summary} (a skipped or empty check proves nothing)", None
    if kind is Kind.REFUTATION and found is not None:
        if method is Method.MEASUREMENT:
            return Verdict.REFUTED_STATISTICAL, f"contradicting measurement recorded ({summary})", found
        return Verdict.REFUTED, f"counterexample recorded ({summary})", found
    return Verdict.TESTED, f"properties passed ({summary})", found


def _smt_verdict(
    kind: Kind, code: int | None, log: str, work: Path
) -> tuple[Verdict, str, str | None, dict[str, Any]]:
    result = work / "smt.json"
    if code != 0 or not result.exists():
        return Verdict.VIOLATED, "the SMT check did not produce an outcome", _tail(log), {}
    outcome = json.loads(result.read_text(encoding="utf-8"))
    status, model = outcome["status"], outcome.get("model") or None
    extra = {"formula": outcome["formula"], "solver_settings": outcome.get("settings", {})}
    if status == "proved":
        return Verdict.PROVED, "z3: the negation is unsatisfiable", None, extra
    if status == "counterexample":
        if kind is Kind.REFUTATION:
            return Verdict.REFUTED, "z3 found a counterexample to the paper's statement", model, extra
        return Verdict.VIOLATED, "z3 found a counterexample", model, extra
    return Verdict.VIOLATED, "z3 returned unknown (neither proved nor refuted)", None, extra


def _coq_verdict(code: int | None, log: str, work: Path) -> tuple[Verdict, str, str | None, dict[str, Any]]:
    result = work / "coq.json"
    if code != 0 or not result.exists():
        return Verdict.VIOLATED, "the Coq check did not produce an outcome", _tail(log), {}
    outcome = json.loads(result.read_text(encoding="utf-8"))
    extra = {
        "coq_theorem": outcome["theorem"],
        "coq_file": outcome["file"],
        "coq_statement": outcome["statement"],
        "coq_assumptions": outcome["assumptions"],
        "coq_axioms": outcome["axioms"],
        "coq_accepted_axioms": outcome["accepted_axioms"],
        "coqc_version": outcome["coqc_version"],
    }
    status, detail = outcome["status"], outcome["detail"]
    if status == "proved":
        return Verdict.PROVED_COQ, detail, None, extra
    if status == "not checked":
        return Verdict.NOT_CHECKED, detail, None, extra
    return Verdict.VIOLATED, f"not proved in Coq: {_tail(detail)}", None, extra


def _crosshair_verdict(kind: Kind, code: int | None, log: str) -> tuple[Verdict, str, str | None]:
    errors = [line for line in log.splitlines() if ": error:" in line]
    infos = [line for line in log.splitlines() if ": info:" in line]
    confirmed = [line for line in infos if _CONFIRMED in line]
    if errors:
        verdict = Verdict.REFUTED if kind is Kind.REFUTATION else Verdict.VIOLATED
        return verdict, f"CrossHair found {len(errors)} counterexample(s)", "\n".join(errors)
    if code != 0:
        return Verdict.VIOLATED, f"crosshair exited with {code}", _tail(log)
    if infos and len(confirmed) == len(infos):
        return Verdict.PROVED, f"every condition confirmed over all paths ({len(confirmed)})", None
    if not infos:
        return Verdict.VIOLATED, "CrossHair reported no condition: nothing was checked", None
    return (
        Verdict.TESTED,
        f"{len(infos) - len(confirmed)} of {len(infos)} conditions not exhausted (no counterexample found)",
        None,
    )


_TEXT_SUFFIXES: Final = frozenset({".txt", ".xml", ".json", ".log", ".md"})


def make_portable(work: Path, root: Path) -> None:
    """Rewrite the text files a check left in ``work`` so that no path of the building machine stays in
    them: paths under the checkout become relative to it, paths under the system's temporary
    directory (pytest's ``tmp_path``, mutants' copies) start with ``$TMPDIR/``.  Runs before the
    verdict reads them and before the report records their digests."""
    prefixes: list[tuple[str, str]] = []
    for directory, replacement in ((root, ""), (Path(tempfile.gettempdir()), "$TMPDIR/")):
        for form in {str(directory), str(directory.resolve())}:
            prefixes.append((form.rstrip(os.sep) + os.sep, replacement))
    prefixes.sort(key=lambda p: len(p[0]), reverse=True)
    for path in sorted(work.rglob("*")):
        if path.suffix not in _TEXT_SUFFIXES or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        portable = text
        for prefix, replacement in prefixes:
            portable = portable.replace(prefix, replacement)
        if portable != text:
            path.write_text(portable, encoding="utf-8")


def run_check(check: Check, kind: Kind, root: Path, work: Path, settings: RunSettings) -> CheckResult:
    """Run ``check`` from ``root`` with artefacts in ``work`` (created); never raises for a failing check."""
    work.mkdir(parents=True, exist_ok=True)
    command = command_for(check, work, settings, root)
    env = dict(os.environ)
    env["AMAL_EVIDENCE_DIR"] = str(work / "evidence")
    env.setdefault("PYTHONHASHSEED", "0")
    log_path = work / "log.txt"
    start = time.perf_counter()
    code = _execute(command, root, env, log_path, check.timeout_s)
    duration = time.perf_counter() - start
    make_portable(work, root)
    log = log_path.read_text(encoding="utf-8", errors="replace")
    result = CheckResult(
        name=check.name,
        method=check.method.value,
        target=check.target,
        verdict=Verdict.VIOLATED,
        detail="",
        command=command,
        duration_s=round(duration, 3),
        returncode=code,
    )
    if code is None:
        result.detail = f"timed out after {check.timeout_s:g} s"
        result.counterexample = None
        return result
    if check.method is Method.SMT:
        result.verdict, result.detail, result.counterexample, extra = _smt_verdict(kind, code, log, work)
        result.settings.update(extra)
    elif check.method is Method.COQ:
        result.verdict, result.detail, result.counterexample, extra = _coq_verdict(code, log, work)
        result.settings.update(extra)
    elif check.method is Method.CROSSHAIR:
        result.verdict, result.detail, result.counterexample = _crosshair_verdict(kind, code, log)
        result.settings["flags"] = list(CROSSHAIR_FLAGS)
    else:
        outcome = _pytest_verdict(kind, check.method, code, log, work)
        result.verdict, result.detail, result.counterexample = outcome
        result.evidence = _read_evidence(work / "evidence")
        result.settings["hypothesis_profile"] = settings.hypothesis_profile
        result.settings["hypothesis_seed"] = (
            settings.hypothesis_seed
            if settings.hypothesis_seed is not None
            else "derandomized or profile default"
        )
    return result
