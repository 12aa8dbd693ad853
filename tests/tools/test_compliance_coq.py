"""The ``coq`` check kind: a theorem is "proved (Coq)" only if it compiles without Admitted and
depends on no axiom but those the check accepts; without coqc it is "not checked"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from amal_tools.compliance import Check, Kind, Method, Verdict
from amal_tools.compliance.coq import COQ_INSTALL, check_theorem, parse_axioms
from amal_tools.compliance.execution import RunSettings, run_check

needs_coqc = pytest.mark.skipif(
    shutil.which("coqc") is None, reason=f"coqc is not installed; install Coq with: {COQ_INSTALL}"
)

_BASE = """
Theorem closed : forall n : nat, n + 0 = n.
Proof. intros n; induction n; simpl; congruence. Qed.

Axiom excluded_middle : forall P : Prop, P \\/ ~ P.
Theorem uses_axiom : forall P : Prop, P \\/ ~ P.
Proof. exact excluded_middle. Qed.
"""

_REALS_ASSUMPTIONS = """Axioms:
ClassicalDedekindReals.sig_forall_dec
  : forall P : nat -> Prop,
    (forall n : nat, {P n} + {~ P n}) ->
    {n : nat | ~ P n} + {forall n : nat, P n}
FunctionalExtensionality.functional_extensionality_dep
  : forall (A : Type) (B : A -> Type) (f g : forall x : A, B x),
    (forall x : A, f x = g x) -> f = g"""


def _development(root: Path, extra: str = "") -> Path:
    coq = root / "proofs" / "coq"
    coq.mkdir(parents=True)
    (coq / "_CoqProject").write_text("-Q . AmalVerified\nBase.v\nTop.v\n", encoding="utf-8")
    (coq / "Base.v").write_text(_BASE, encoding="utf-8")
    (coq / "Top.v").write_text("From AmalVerified Require Import Base.\n" + extra, encoding="utf-8")
    return root


def test_parse_axioms_reads_the_names() -> None:
    assert parse_axioms("Closed under the global context") == ()
    assert parse_axioms(_REALS_ASSUMPTIONS) == (
        "ClassicalDedekindReals.sig_forall_dec",
        "FunctionalExtensionality.functional_extensionality_dep",
    )


@needs_coqc
def test_closed_theorem_is_proved(tmp_path: Path) -> None:
    outcome = check_theorem(_development(tmp_path), "proofs/coq/Base.v:closed")
    assert outcome.status == "proved", outcome.detail
    assert outcome.axioms == ()
    assert "forall n : nat, n + 0 = n" in outcome.statement
    assert outcome.compiled == ("Base.v",)


@needs_coqc
def test_an_axiom_must_be_accepted(tmp_path: Path) -> None:
    root = _development(tmp_path)
    refused = check_theorem(root, "proofs/coq/Base.v:uses_axiom")
    assert refused.status == "not proved"
    assert "excluded_middle" in refused.detail
    accepted = check_theorem(root, "proofs/coq/Base.v:uses_axiom", ["excluded_middle"])
    assert accepted.status == "proved", accepted.detail
    assert accepted.axioms == ("excluded_middle",)


@needs_coqc
def test_admitted_anywhere_in_the_development_is_not_proved(tmp_path: Path) -> None:
    root = _development(tmp_path, "Lemma hole : 1 = 2.\nProof. Admitted.\n")
    outcome = check_theorem(root, "proofs/coq/Base.v:closed")
    assert outcome.status == "not proved"
    assert "Top.v" in outcome.detail


@needs_coqc
def test_a_development_that_does_not_compile_is_not_proved(tmp_path: Path) -> None:
    root = _development(tmp_path, "Lemma wrong : 1 = 2.\nProof. reflexivity. Qed.\n")
    outcome = check_theorem(root, "proofs/coq/Top.v:wrong")
    assert outcome.status == "not proved"
    assert "coqc Top.v failed" in outcome.detail


def test_without_coqc_nothing_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    outcome = check_theorem(_development(tmp_path), "proofs/coq/Base.v:closed")
    assert outcome.status == "not checked"
    assert COQ_INSTALL in outcome.detail


@needs_coqc
def test_run_check_gives_proved_coq_with_statement_and_assumptions(tmp_path: Path) -> None:
    root = _development(tmp_path / "repo")
    settings = RunSettings(hypothesis_profile="default", hypothesis_seed=None, run_benchmarks=False)
    check = Check("coq", Method.COQ, "proofs/coq/Base.v:uses_axiom", axioms=("excluded_middle",))
    result = run_check(check, Kind.CLAIM, root, tmp_path / "work", settings)
    assert result.verdict is Verdict.PROVED_COQ, result.detail
    assert result.settings["coq_axioms"] == ["excluded_middle"]
    assert "P \\/ ~ P" in result.settings["coq_statement"]
    assert result.command[-2:] == ["--accept-axiom", "excluded_middle"]
    unaccepted = Check("coq", Method.COQ, "proofs/coq/Base.v:uses_axiom")
    result = run_check(unaccepted, Kind.CLAIM, root, tmp_path / "work2", settings)
    assert result.verdict is Verdict.VIOLATED
