"""Checking one theorem of the Coq development (``proofs/coq/``) with ``coqc``.

The file that holds the theorem and the files it requires are compiled from scratch in a scratch
directory (the checked-out ``.v`` files are only read), in the order ``_CoqProject`` lists them.
Then ``Check`` prints the theorem's exact statement and ``Print Assumptions`` every axiom it depends
on.  The theorem is *proved (Coq)* iff these files compile, no file of the development contains
``Admitted`` or ``admit``, and each axiom ``Print Assumptions`` names is one the check accepts (the standard
library's axioms of the real numbers, for theorems over ℝ).  Without ``coqc`` on ``PATH`` nothing is
checked and the outcome says how to install Coq.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

__all__ = [
    "CLASSICAL_AXIOMS",
    "COQ_INSTALL",
    "COQ_LOGICAL_ROOT",
    "REALS_AXIOMS",
    "CoqError",
    "CoqOutcome",
    "check_theorem",
    "compile_development",
    "coqc_version",
    "parse_axioms",
    "project_files",
]

COQ_INSTALL: Final = "apt-get install -y coq  (Debian/Ubuntu: Coq 8.16 and its standard library)"
COQ_LOGICAL_ROOT: Final = "AmalVerified"
REALS_AXIOMS: Final = (
    "ClassicalDedekindReals.sig_forall_dec",
    "ClassicalDedekindReals.sig_not_dec",
    "FunctionalExtensionality.functional_extensionality_dep",
)
"""The axioms Coq's standard library builds its real numbers on (Coq 8.16, ``Reals``): the limited
principle of omniscience for decidable predicates on ℕ, the decidability of ¬¬P against ¬P, and
dependent functional extensionality.  A theorem over ℝ depends on those its proof uses; a theorem
about labels and programs depends on none."""
CLASSICAL_AXIOMS: Final = ("Classical_Prop.classic",)
"""The excluded middle, on which the standard library's mean value theorem (``MVT``) rests: a theorem
that uses it depends on this axiom as well as on :data:`REALS_AXIOMS`."""
_CLOSED: Final = "Closed under the global context"
_ADMITTED = re.compile(r"\b(Admitted|admit)\b")
_REQUIRE = re.compile(
    rf"From\s+{COQ_LOGICAL_ROOT}\s+Require\s+(?:Import\s+|Export\s+)?(?P<modules>[\w\s]+?)\.(?:\s|$)"
)
_TARGET = re.compile(r"^(?P<file>.+\.v):(?P<theorem>[A-Za-z_][A-Za-z0-9_']*)$")


class CoqError(Exception):
    """The development did not compile, or the theorem could not be queried."""


@dataclass(frozen=True)
class CoqOutcome:
    """What checking one theorem found.

    ``status``: ``"proved"`` (compiled, no ``Admitted``, only accepted axioms), ``"not proved"``
    (``detail`` says why), or ``"not checked"`` (no ``coqc``; ``detail`` names the install command).
    ``statement``: the output of ``Check theorem`` verbatim; ``assumptions``: the output of
    ``Print Assumptions theorem`` verbatim; ``axioms``: the axiom names it lists.
    """

    status: str
    theorem: str
    file: str
    detail: str
    statement: str = ""
    assumptions: str = ""
    axioms: tuple[str, ...] = ()
    accepted_axioms: tuple[str, ...] = ()
    coqc_version: str = ""
    compiled: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.status not in {"proved", "not proved", "not checked"}:
            raise ValueError(
                f"CoqOutcome.status must be proved, not proved or not checked, got {self.status!r}"
            )


def coqc_version() -> str | None:
    """The first line of ``coqc --version``; ``None`` when ``coqc`` is not on ``PATH``."""
    coqc = shutil.which("coqc")
    if coqc is None:
        return None
    done = subprocess.run([coqc, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0].strip() if done.stdout else "unknown"


def project_files(coq_dir: Path) -> list[str]:
    """The ``.v`` files ``_CoqProject`` lists, in its order (each file after those it requires)."""
    lines = (coq_dir / "_CoqProject").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip().endswith(".v") and not line.startswith("-")]


def _requires(source: str) -> set[str]:
    """The files of the development that ``source`` requires (``From AmalVerified Require ...``)."""
    found: set[str] = set()
    for match in _REQUIRE.finditer(source):
        found.update(f"{module}.v" for module in match["modules"].split())
    return found


def _closure(coq_dir: Path, files: list[str], target: str) -> set[str]:
    needed, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name not in needed:
            if name not in files:
                raise CoqError(f"{name} is not listed in {coq_dir / '_CoqProject'}")
            needed.add(name)
            todo.extend(_requires((coq_dir / name).read_text(encoding="utf-8")))
    return needed


def compile_development(coq_dir: Path, build: Path, upto: str | None = None) -> list[str]:
    """Copy the ``.v`` files of ``coq_dir`` to ``build`` and compile them in ``_CoqProject`` order:
    all of them, or only ``upto`` (a file name) and the files it requires, directly or not.  Returns
    the files compiled; :class:`CoqError` with ``coqc``'s output if one does not compile, or if a
    file is not listed in ``_CoqProject``."""
    files = project_files(coq_dir)
    needed = set(files) if upto is None else _closure(coq_dir, files, upto)
    compiled: list[str] = []
    for name in (f for f in files if f in needed):
        shutil.copy2(coq_dir / name, build / name)
        done = subprocess.run(
            ["coqc", "-q", "-Q", ".", COQ_LOGICAL_ROOT, name],
            cwd=build,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise CoqError(f"coqc {name} failed:\n{done.stdout}{done.stderr}")
        compiled.append(name)
    return compiled


def parse_axioms(assumptions: str) -> tuple[str, ...]:
    """The axiom names in the output of ``Print Assumptions``: the unindented lines after ``Axioms:``
    (an empty tuple for "Closed under the global context")."""
    names: list[str] = []
    in_axioms = False
    for line in assumptions.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace() and line.rstrip().endswith(":") and " " not in line.strip()[:-1]:
            in_axioms = line.strip() == "Axioms:"
            continue
        if in_axioms and not line[0].isspace():
            names.append(line.split(":", 1)[0].strip())
    return tuple(names)


def _query(build: Path, module: str, theorem: str) -> tuple[str, str]:
    # A file over the reals is queried with their notations in scope, so that its statements print
    # as written (0 < mu, not Rlt (IZR Z0) mu); any other with the default scopes.
    over_reals = "Reals" in (build / f"{module}.v").read_text(encoding="utf-8")
    reals = "From Coq Require Import Reals.\nOpen Scope R_scope.\n" if over_reals else ""
    (build / "AmalQuery.v").write_text(
        f"From {COQ_LOGICAL_ROOT} Require Import {module}.\n{reals}"
        f'Redirect "amal_statement" Check {theorem}.\n'
        f'Redirect "amal_assumptions" Print Assumptions {theorem}.\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        ["coqc", "-q", "-Q", ".", COQ_LOGICAL_ROOT, "AmalQuery.v"],
        cwd=build,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CoqError(f"querying {theorem} failed:\n{done.stdout}{done.stderr}")
    statement = (build / "amal_statement.out").read_text(encoding="utf-8").strip()
    assumptions = (build / "amal_assumptions.out").read_text(encoding="utf-8").strip()
    return statement, assumptions


def check_theorem(root: Path, target: str, accepted_axioms: Sequence[str] = ()) -> CoqOutcome:
    """Check ``proofs/coq/<File>.v:<theorem>`` (relative to ``root``); never raises for a failing proof."""
    match = _TARGET.match(target)
    if match is None:
        raise ValueError(f"a coq check's target is 'proofs/coq/<File>.v:<theorem>', got {target!r}")
    source, theorem = Path(match["file"]), match["theorem"]
    base = CoqOutcome(
        "not checked",
        theorem=theorem,
        file=source.as_posix(),
        detail="",
        accepted_axioms=tuple(accepted_axioms),
    )
    version = coqc_version()
    if version is None:
        return replace(base, detail=f"coqc is not installed; install Coq with: {COQ_INSTALL}")
    base = replace(base, coqc_version=version)
    coq_dir = root / source.parent
    admitted = [
        name
        for name in project_files(coq_dir)
        if _ADMITTED.search((coq_dir / name).read_text(encoding="utf-8"))
    ]
    with tempfile.TemporaryDirectory(prefix="amal-coq-") as scratch:
        build = Path(scratch)
        try:
            compiled = compile_development(coq_dir, build, upto=source.name)
            statement, assumptions = _query(build, source.stem, theorem)
        except CoqError as exc:
            return replace(base, status="not proved", detail=str(exc))
    axioms = parse_axioms(assumptions)
    checked = replace(
        base, statement=statement, assumptions=assumptions, axioms=axioms, compiled=tuple(compiled)
    )
    if admitted:
        return replace(checked, status="not proved", detail=f"Admitted or admit in {', '.join(admitted)}")
    unexpected = [a for a in axioms if a not in checked.accepted_axioms]
    if unexpected or (not axioms and _CLOSED not in assumptions):
        what = ", ".join(unexpected) if unexpected else "no axiom list and not closed"
        return replace(checked, status="not proved", detail=f"Print Assumptions: unaccepted {what}")
    release = version.split()[-1]
    if axioms:
        detail = f"Coq {release}: compiled; Print Assumptions: only the axioms {', '.join(axioms)}"
    else:
        detail = f"Coq {release}: compiled; Print Assumptions: {_CLOSED.lower()}"
    return replace(checked, status="proved", detail=detail)
