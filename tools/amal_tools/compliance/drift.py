"""Drift of a compliance report: which files it checked have changed since it was built.

A report records, per obligation, the SHA-256 of every file its checks depend on (``files``: those the
obligation names and every repository module they import, ``dependencies.import_closure``) and the
commit of the checkout it was built from (``git``).  :func:`report_drift` recomputes the digests in
a tree and lists every file that changed or no longer exists: a verdict whose files drifted speaks
of other code than the tree's, and the report must be built again before it is quoted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

__all__ = ["Drift", "ReportDrift", "report_drift"]


@final
@dataclass(frozen=True)
class Drift:
    """One checked file of one obligation that differs from what the report recorded."""

    obligation: str
    file: str
    change: str  # "changed" or "missing"


@final
@dataclass(frozen=True)
class ReportDrift:
    """What :func:`report_drift` found: the report's commit and every drifted file."""

    commit: str | None
    dirty: bool | None
    files_checked: int  # distinct files, whichever obligations recorded them
    drifted: tuple[Drift, ...]  # one per obligation and file

    @property
    def ok(self) -> bool:
        return not self.drifted

    def lines(self) -> list[str]:
        """Human-readable lines: what the report covers, then one line per drifted file."""
        state = "" if not self.dirty else " with uncommitted changes"
        head = f"report built at commit {self.commit or 'unknown'}{state}; {self.files_checked} checked files"
        if self.ok:
            return [f"{head}: none changed since"]
        changed = len({d.file for d in self.drifted})
        out = [f"{head}: {changed} changed or missing since, so these verdicts need a new report:"]
        out += [f"  {d.obligation}: {d.file} {d.change}" for d in self.drifted]
        return out


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def report_drift(report_dir: Path, root: Path) -> ReportDrift:
    """Compare the digests ``report_dir/report.json`` recorded with the files under ``root``.

    ``ValueError`` (one line) when ``report_dir`` holds no readable report.
    """
    path = report_dir / "report.json"
    try:
        report: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(
            f"{path} does not exist: give the directory of a report built by `amal report`"
        ) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable report ({exc})") from None
    obligations = report.get("obligations") if isinstance(report, dict) else None
    if not isinstance(obligations, list):
        raise ValueError(f"{path} is not a compliance report (no obligations)")
    drifted: list[Drift] = []
    checked: set[str] = set()
    for obligation in obligations:
        files = obligation.get("files", {}) if isinstance(obligation, dict) else {}
        for name, digest in sorted(files.items()):
            checked.add(name)
            target = root / name
            if not target.is_file():
                drifted.append(Drift(str(obligation.get("id")), name, "missing"))
            elif _sha256(target) != digest:
                drifted.append(Drift(str(obligation.get("id")), name, "changed"))
    git = report.get("git") if isinstance(report.get("git"), dict) else {}
    return ReportDrift(git.get("commit"), git.get("dirty"), len(checked), tuple(drifted))
