"""Find the proof obligations: every ``proofs/*.py`` defines one module-level ``OBLIGATION``.

Files are loaded by path (``proofs/`` is not a package), in file-name order; a file
without an ``OBLIGATION``, an ``OBLIGATION`` of the wrong type, a file that fails to
import, or two obligations with one id are errors naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from amal_tools.compliance.obligation import Obligation
from amal_verified.common.module_loading import ModuleLoadError, import_file

__all__ = ["DiscoveryError", "ObligationFile", "default_proofs_dir", "discover", "load_proof_module"]


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
