"""The compliance report machinery on a small, self-contained proofs directory.

A temporary "repository" holds four obligations — an SMT proof, an SMT refutation, a
CrossHair contract and a pytest property with evidence — plus one whose property fails,
so every verdict path is exercised: proved, paper claim refuted, tested, violated, not
checked.  The real obligations in ``proofs/`` run in CI through ``amal report --quick``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
from amal_tools.compliance import Check, Kind, Method, Obligation, Verdict
from amal_tools.compliance.discovery import DiscoveryError, discover
from amal_tools.compliance.runner import ReportError, ReportOptions, build_report, obligation_verdict
from amal_tools.compliance.schema import ReportSchemaError, validate_report

from amal_verified import cli
from amal_verified.record.ledger import canonical_json

# End to end: each test builds (part of) a compliance report.
pytestmark = pytest.mark.slow

SMT_FILE = '''
"""Obligations for the report tests."""
import z3
from amal_tools.compliance import Check, Kind, Method, Obligation, SmtOutcome

def prove_square_nonnegative():
    x = z3.Real("x")
    claim = x * x >= 0
    solver = z3.Solver()
    solver.add(z3.Not(claim))
    assert solver.check() == z3.unsat
    return SmtOutcome("proved", claim.sexpr())

OBLIGATION = Obligation(
    id="square", title="squares", paper="none", claim="x*x >= 0 over the reals",
    assumptions=("real arithmetic",), kind=Kind.CLAIM,
    checks=(Check("z3", Method.SMT, "proofs/square.py:prove_square_nonnegative"),),
)
'''

REFUTE_FILE = """
import z3
from amal_tools.compliance import Check, Kind, Method, Obligation, SmtOutcome

def find_counterexample():
    x = z3.Real("x")
    claim = x * x > x
    solver = z3.Solver()
    solver.add(z3.Not(claim))
    assert solver.check() == z3.sat
    return SmtOutcome("counterexample", claim.sexpr(), model=str(solver.model()))

OBLIGATION = Obligation(
    id="squares-grow", title="the claim that squares grow", paper="made up", claim="x*x > x is false",
    assumptions=(), kind=Kind.REFUTATION,
    checks=(Check("z3", Method.SMT, "proofs/squares_grow.py:find_counterexample"),),
)
"""

CROSSHAIR_FILE = """
from amal_tools.compliance import Check, Kind, Method, Obligation

OBLIGATION = Obligation(
    id="clamp", title="clamp stays in range", paper="none", claim="clamp(x) in [0, 10]",
    assumptions=("0 <= x <= 100",), kind=Kind.CLAIM,
    checks=(Check("contract", Method.CROSSHAIR, "lib/clampmod.py:clamp"),),
)
"""

CLAMP_MODULE = '''
def clamp(x: int) -> int:
    """
    pre: 0 <= x <= 100
    post: 0 <= __return__ <= 10
    """
    return min(x, 10)
'''

PROPERTY_FILE = """
from amal_tools.compliance import Check, Kind, Method, Obligation

OBLIGATION = Obligation(
    id="sorting", title="sorting sorts", paper="none", claim="sorted output is ordered",
    assumptions=(), kind=Kind.CLAIM,
    checks=(
        Check("property", Method.HYPOTHESIS, "checks/test_sorting.py::test_sorted"),
        Check("timing", Method.MEASUREMENT, "checks/test_sorting.py::test_timing", quick=False),
    ),
)
"""

BROKEN_FILE = """
from amal_tools.compliance import Check, Kind, Method, Obligation

OBLIGATION = Obligation(
    id="broken", title="a false claim", paper="none", claim="every list is sorted",
    assumptions=(), kind=Kind.CLAIM,
    checks=(Check("property", Method.HYPOTHESIS, "checks/test_sorting.py::test_every_list_sorted"),),
)
"""

TEST_FILE = """
import json, os
from pathlib import Path
from hypothesis import given, strategies as st

def _record(name, data):
    directory = os.environ.get("AMAL_EVIDENCE_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        Path(directory, name + ".json").write_text(json.dumps(data))

@given(st.lists(st.integers()))
def test_sorted(xs):
    ys = sorted(xs)
    assert all(a <= b for a, b in zip(ys, ys[1:]))
    _record("seeds", [0])

def test_timing():
    series = {"name": "n", "x_label": "n", "x": [1, 2, 4], "seconds": [1, 2, 4],
              "exponent": 1.0, "expected": 1.0, "tolerance": 0.3}
    _record("proposition3_costs", {"series": [series]})

@given(st.lists(st.integers()))
def test_every_list_sorted(xs):
    assert xs == sorted(xs)
"""


CONFTEST = """
from hypothesis import settings

settings.register_profile("audit", max_examples=50)

def pytest_addoption(parser):
    parser.addoption("--run-benchmarks", action="store_true")
"""


def _repo(root: Path, *, broken: bool = True) -> Path:
    files = {
        "conftest.py": CONFTEST,
        "proofs/square.py": SMT_FILE,
        "proofs/squares_grow.py": REFUTE_FILE,
        "proofs/clamp.py": CROSSHAIR_FILE,
        "proofs/sorting.py": PROPERTY_FILE,
        "lib/__init__.py": "",
        "lib/clampmod.py": CLAMP_MODULE,
        "checks/test_sorting.py": TEST_FILE,
    }
    if broken:
        files["proofs/broken.py"] = BROKEN_FILE
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = _repo(tmp_path_factory.mktemp("repo"))
    out = root / "report"
    outcome = build_report(ReportOptions(out=out, proofs_dir=root / "proofs", root=root, quick=True, jobs=2))
    return out, outcome.report


def test_verdicts_follow_the_methods(quick_report: tuple[Path, dict]) -> None:
    _, report = quick_report
    verdicts = {o["id"]: o["verdict"] for o in report["obligations"]}
    assert verdicts == {
        "broken": "violated",
        "clamp": "proved",
        "sorting": "not checked",  # its timing check does not run in the quick report
        "square": "proved",
        "squares-grow": "paper claim refuted",
    }
    sorting = next(o for o in report["obligations"] if o["id"] == "sorting")
    assert [c["verdict"] for c in sorting["checks"]] == ["tested", "not checked"]
    assert report["summary"] == {
        "proved": 2,
        "proved (Coq)": 0,
        "tested": 0,
        "violated": 1,
        "paper claim refuted": 1,
        "paper claim refuted (statistical)": 0,
        "not checked": 1,
    }


def test_counterexamples_are_verbatim(quick_report: tuple[Path, dict]) -> None:
    _, report = quick_report
    obligations = {o["id"]: o for o in report["obligations"]}
    refuted = obligations["squares-grow"]["checks"][0]
    assert refuted["counterexample"].startswith("[x = ")  # z3's model, as printed
    broken = obligations["broken"]["checks"][0]
    assert "test_every_list_sorted(" in broken["counterexample"]
    assert "xs=[0, -1]" in broken["counterexample"]  # Hypothesis's shrunk example, verbatim


def test_report_json_is_canonical_schema_valid_and_signed_by_digest(quick_report: tuple[Path, dict]) -> None:
    out, _ = quick_report
    raw = (out / "report.json").read_bytes()
    assert raw == canonical_json(json.loads(raw))
    jsonschema.Draft202012Validator(json.loads((out / "report.schema.json").read_text())).validate(
        json.loads(raw)
    )
    statement = json.loads((out / "report.intoto.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert statement["predicate"]["result"] == "FAILED"
    assert "broken: violated" in statement["predicate"]["failedTests"]


def test_every_log_and_checked_file_is_hashed(quick_report: tuple[Path, dict]) -> None:
    out, report = quick_report
    for ob in report["obligations"]:
        assert ob["file"] in ob["files"]
        for path, digest in ob["logs"].items():
            assert hashlib.sha256((out / path).read_bytes()).hexdigest() == digest
    clamp = next(o for o in report["obligations"] if o["id"] == "clamp")
    assert "lib/clampmod.py" in clamp["files"]
    assert clamp["checks"][0]["argv"][-4:-3] == ["lib.clampmod.clamp"]


def test_markdown_and_html_show_the_verdicts(quick_report: tuple[Path, dict]) -> None:
    out, report = quick_report
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for ob in report["obligations"]:
        assert f"**{ob['verdict']}**" in md
        assert f">{ob['verdict']}<" in html
    assert "xs=[0, -1]" in md


def test_the_mutation_score_is_shown(quick_report: tuple[Path, dict], tmp_path: Path) -> None:
    from amal_tools.compliance.render import render_html, render_markdown

    _, report = quick_report
    shown = copy.deepcopy(report)
    shown["plots"] = []
    score = {
        "score": 0.95,
        "killed": 19,
        "total": 22,
        "equivalent": [{"id": "a"}, {"id": "b"}],
        "survivors": ["c"],
    }
    shown["obligations"][0]["checks"][0]["evidence"]["mutation_score"] = score
    expected = "19 of 20 non-equivalent mutants killed (22 generated, 2 equivalent"
    assert expected in render_markdown(shown)
    assert expected in render_html(shown, tmp_path)


def test_full_report_runs_the_timing_check_and_plots_its_evidence(tmp_path: Path) -> None:
    root = _repo(tmp_path, broken=False)
    outcome = build_report(
        ReportOptions(out=root / "full", proofs_dir=root / "proofs", root=root, only=("sorting",))
    )
    (sorting,) = outcome.report["obligations"]
    assert sorting["verdict"] == "tested"
    assert outcome.ok
    assert [p["evidence"] for p in outcome.report["plots"]] == ["proposition3_costs"]
    assert (root / "full" / "plots" / "proposition3_costs.png").stat().st_size > 1000
    assert outcome.report["settings"]["hypothesis_profile"] == "audit"
    # each plot sits in the section of the obligation whose evidence it draws, not at the end
    md = (root / "full" / "report.md").read_text()
    html = (root / "full" / "report.html").read_text()
    assert md.index("## sorting") < md.index("](plots/proposition3_costs.png)") < md.index("## Reproduce")
    assert "## Other plots" not in md and "Other plots" not in html
    assert html.index('id="sorting"') < html.index("data:image/png;base64,") < html.index("<h2>Reproduce")


def test_existing_output_and_unknown_ids_are_refused_before_anything_runs(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    (root / "taken").mkdir()
    (root / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ReportError, match="not an empty directory"):
        build_report(ReportOptions(out=root / "taken", proofs_dir=root / "proofs", root=root))
    assert (root / "taken" / "keep.txt").read_text() == "mine"
    with pytest.raises(ReportError, match=r"unknown obligation id\(s\) \['nope'\]"):
        build_report(ReportOptions(out=root / "new", proofs_dir=root / "proofs", root=root, only=("nope",)))
    assert not (root / "new").exists()
    assert not list(root.glob(".new.partial-*"))


def test_bad_proofs_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "proofs").mkdir()
    (tmp_path / "proofs" / "empty.py").write_text("X = 1\n")
    with pytest.raises(DiscoveryError, match=r"empty\.py: defines no OBLIGATION"):
        discover(tmp_path / "proofs", tmp_path)
    (tmp_path / "proofs" / "empty.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(DiscoveryError, match=r"empty\.py: failed to import: RuntimeError: boom"):
        discover(tmp_path / "proofs", tmp_path)
    with pytest.raises(DiscoveryError, match="no proofs directory"):
        discover(tmp_path / "missing", tmp_path)


def test_obligations_validate_their_fields() -> None:
    check = Check("c", Method.SMT, "proofs/x.py:f")
    with pytest.raises(ValueError, match="lower-case words"):
        Obligation("Bad Id", "t", "p", "c", (), Kind.CLAIM, (check,))
    with pytest.raises(ValueError, match="no checks"):
        Obligation("ok", "t", "p", "c", (), Kind.CLAIM, ())
    with pytest.raises(ValueError, match="pytest file or node id"):
        Check("c", Method.HYPOTHESIS, "properties.test_x")
    with pytest.raises(ValueError, match="only timing measurements may be left out"):
        Check("c", Method.CROSSHAIR, "pkg.mod.f", quick=False)
    with pytest.raises(ValueError, match="same name"):
        Obligation("ok", "t", "p", "c", (), Kind.CLAIM, (check, check))
    with pytest.raises(ValueError, match=r"proofs/coq/<File>\.v:<theorem>"):
        Check("c", Method.COQ, "proofs/coq/Theorem2.v")
    with pytest.raises(ValueError, match="only a coq check accepts axioms"):
        Check("c", Method.SMT, "proofs/x.py:f", axioms=("Classical_Prop.classic",))


@pytest.mark.parametrize(
    ("kind", "verdicts", "expected"),
    [
        (Kind.CLAIM, [Verdict.PROVED, Verdict.PROVED], Verdict.PROVED),
        (Kind.CLAIM, [Verdict.PROVED, Verdict.TESTED], Verdict.TESTED),
        (Kind.CLAIM, [Verdict.PROVED, Verdict.VIOLATED], Verdict.VIOLATED),
        (Kind.CLAIM, [Verdict.PROVED, Verdict.NOT_CHECKED], Verdict.NOT_CHECKED),
        (Kind.REFUTATION, [Verdict.PROVED, Verdict.REFUTED], Verdict.REFUTED),
        (Kind.REFUTATION, [Verdict.TESTED], Verdict.VIOLATED),  # nothing exhibited a counterexample
        (Kind.REFUTATION, [Verdict.REFUTED, Verdict.VIOLATED], Verdict.VIOLATED),
        (Kind.CLAIM, [Verdict.PROVED_COQ, Verdict.PROVED_COQ], Verdict.PROVED_COQ),
        (Kind.CLAIM, [Verdict.PROVED, Verdict.PROVED_COQ], Verdict.PROVED),
        (Kind.CLAIM, [Verdict.PROVED_COQ, Verdict.TESTED], Verdict.TESTED),
        (Kind.CLAIM, [Verdict.PROVED_COQ, Verdict.NOT_CHECKED], Verdict.NOT_CHECKED),
        (Kind.REFUTATION, [Verdict.PROVED_COQ, Verdict.TESTED], Verdict.REFUTED),  # a Coq refutation
        (Kind.REFUTATION, [Verdict.PROVED_COQ, Verdict.NOT_CHECKED], Verdict.NOT_CHECKED),
        (Kind.REFUTATION, [Verdict.REFUTED_STATISTICAL, Verdict.TESTED], Verdict.REFUTED_STATISTICAL),
        (Kind.REFUTATION, [Verdict.REFUTED_STATISTICAL, Verdict.REFUTED], Verdict.REFUTED),
        (Kind.REFUTATION, [Verdict.REFUTED_STATISTICAL, Verdict.VIOLATED], Verdict.VIOLATED),
    ],
)
def test_obligation_verdict_is_the_weakest_check(
    kind: Kind, verdicts: list[Verdict], expected: Verdict
) -> None:
    assert obligation_verdict(kind, verdicts) is expected


@pytest.mark.parametrize(
    ("method", "expected"),
    [(Method.MEASUREMENT, Verdict.REFUTED_STATISTICAL), (Method.HYPOTHESIS, Verdict.REFUTED)],
)
def test_a_refuting_measurement_is_a_statistical_refutation(
    method: Method, expected: Verdict, tmp_path: Path
) -> None:
    from amal_tools.compliance.execution import _pytest_verdict

    (tmp_path / "junit.xml").write_text('<testsuite tests="1" failures="0" errors="0" skipped="0"/>')
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "counterexample.json").write_text('"variance floor 3.4e-3 at K = 8"')
    verdict, detail, found = _pytest_verdict(Kind.REFUTATION, method, 0, "", tmp_path)
    assert verdict is expected and found is not None and "3.4e-3" in found, detail


def test_schema_admits_only_the_verdict_vocabulary(quick_report: tuple[Path, dict]) -> None:
    _, report = quick_report
    validate_report(report)
    bent = copy.deepcopy(report)
    bent["obligations"][1]["checks"][0]["verdict"] = "verified"  # "tested" must not be dressed up
    with pytest.raises(
        ReportSchemaError, match=r"at obligations/1/checks/0/verdict: 'verified' is not one of"
    ):
        validate_report(bent)
    bent = copy.deepcopy(report)
    del bent["obligations"][0]["git_commit"]
    with pytest.raises(ReportSchemaError, match="'git_commit' is a required property"):
        validate_report(bent)


def test_cli_report_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _repo(tmp_path)
    base = ["report", "--quick", "--proofs", str(root / "proofs")]
    assert cli.main([*base, "--out", str(tmp_path / "ok"), "--only", "square"]) == 0
    assert "1 proved" in capsys.readouterr().out
    assert cli.main([*base, "--out", str(tmp_path / "bad"), "--only", "broken"]) == 1
    assert "VIOLATED: broken" in capsys.readouterr().out
    assert cli.main([*base, "--out", str(tmp_path / "ok"), "--only", "square"]) == 2
    assert "not an empty directory" in capsys.readouterr().err


def test_check_artefacts_keep_no_path_of_the_building_machine(tmp_path: Path) -> None:
    import tempfile

    from amal_tools.compliance.execution import make_portable

    root = tmp_path / "checkout"
    work = root / "build" / "logs" / "check"
    (work / "evidence").mkdir(parents=True)
    scratch = Path(tempfile.gettempdir()) / "pytest-of-someone" / "test_x0" / "mutant.py"
    (work / "log.txt").write_text(f"{root}/amal_verified/gate.py:12 and {scratch}:3\n", encoding="utf-8")
    (work / "evidence" / "score.json").write_text(json.dumps({"file": str(scratch)}), encoding="utf-8")
    (work / "plot.png").write_bytes(b"\x89PNG" + str(root).encode())
    make_portable(work, root)
    log = (work / "log.txt").read_text(encoding="utf-8")
    assert log == "amal_verified/gate.py:12 and $TMPDIR/pytest-of-someone/test_x0/mutant.py:3\n"
    assert json.loads((work / "evidence" / "score.json").read_text())["file"].startswith("$TMPDIR/")
    assert (work / "plot.png").read_bytes().endswith(str(root).encode())  # binary files untouched
