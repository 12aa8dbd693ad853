"""Where a report comes from: git commit, tool versions, platform, and file digests."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

__all__ = ["TOOLS_BY_METHOD", "git_state", "platform_info", "sha256_file", "tool_versions"]

BASE_TOOLS: Final = ("amal_verified", "torch", "numpy", "pytest")
TOOLS_BY_METHOD: Final[dict[str, tuple[str, ...]]] = {
    "smt": ("z3-solver",),
    "crosshair": ("crosshair-tool", "z3-solver"),
    "hypothesis": ("hypothesis", "hypothesis-crosshair", "gymnasium"),
    "measurement": ("hypothesis",),
    "certificate": ("gymnasium",),
    "coq": (),  # coqc is a system program: its version is in each Coq check's settings
}


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tool_versions(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Installed versions (``"not installed"`` when absent) of ``names``; all known tools by default."""
    if names is None:
        names = tuple(sorted({*BASE_TOOLS, *(t for ts in TOOLS_BY_METHOD.values() for t in ts)}))
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def platform_info() -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "system": platform.system(),
        "machine": platform.machine(),
    }


def git_state(root: Path) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout at ``root``.

    ``dirty`` is true when tracked files differ from the commit: then the commit alone does not
    identify the code that was checked (the per-file sha256 digests still do).
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}
