"""Find the proof obligations: every ``proofs/*.py`` defines one module-level ``OBLIGATION``.

Files are loaded by path (``proofs/`` is not a package), in file-name order; a file
without an ``OBLIGATION``, an ``OBLIGATION`` of the wrong type, a file that fails to
import, or two obligations with one id are errors naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from amal_tools.compliance.obligation import Method, Obligation
from amal_verified.common.module_loading import ModuleLoadError, import_file

__all__ = [
    "DiscoveryError",
    "ObligationFile",
    "default_proofs_dir",
    "discover",
    "load_proof_module",
    "quick_pytest_targets",
    "selects",
]


class DiscoveryError(ValueError):
    """A ``proofs/`` file does not define a usable obligation."""


@dataclass(frozen=True)
class ObligationFile:
    obligation: Obligation
    path: Path
    """The file defining it, relative to the repository root."""


def default_proofs_dir() -> Path:
    """``proofs/`` next to the package: the checkout ``amal_verified`` was installed from (editable)."""
    return Path(__file__).resolve().parents[3] / "proofs"


def load_proof_module(path: Path) -> ModuleType:
    """Import ``path`` as a module named after it (``proofs_<stem>``); errors name the file."""
    try:
        return import_file(path, f"proofs_{path.stem}")
    except ModuleLoadError as exc:
        raise DiscoveryError(str(exc)) from exc


def discover(proofs_dir: Path, root: Path) -> list[ObligationFile]:
    """Every obligation in ``proofs_dir`` (files starting with ``_`` are helpers, not obligations)."""
    if not proofs_dir.is_dir():
        raise DiscoveryError(f"no proofs directory at {proofs_dir} (run from a checkout, or pass --proofs)")
    found: list[ObligationFile] = []
    seen: dict[str, Path] = {}
    for path in sorted(proofs_dir.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = load_proof_module(path)
        obligation = getattr(module, "OBLIGATION", None)
        if not isinstance(obligation, Obligation):
            raise DiscoveryError(
                f"{path}: defines no OBLIGATION (an amal_tools.compliance.Obligation), "
                f"found {type(obligation).__name__}"
            )
        if obligation.id in seen:
            raise DiscoveryError(
                f"{path}: obligation id {obligation.id!r} is also defined in {seen[obligation.id]}"
            )
        seen[obligation.id] = path
        found.append(ObligationFile(obligation, path.resolve().relative_to(root.resolve())))
    if not found:
        raise DiscoveryError(f"{proofs_dir} holds no obligations")
    return found


def quick_pytest_targets(root: Path) -> list[str]:
    """The pytest targets (files, classes, node ids) the quick report runs as checks of the
    obligations in ``root/proofs``: ``pytest --leave-to-report`` leaves exactly these to it."""
    pytest_methods = (Method.HYPOTHESIS, Method.MEASUREMENT, Method.CERTIFICATE)
    return [
        check.target
        for entry in discover(root / "proofs", root)
        for check in entry.obligation.checks
        if check.method in pytest_methods and check.quick
    ]


def selects(target: str, nodeid: str) -> bool:
    """Whether the pytest target ``target`` runs the test ``nodeid`` (parametrised cases included)."""
    return nodeid == target or nodeid.startswith((target + "::", target + "["))
