"""`amal report --check DIR`: which files a report checked have changed since it was built."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from amal_tools.compliance.drift import report_drift

from amal_verified.cli import main


def _report(directory: Path, root: Path, files: list[str]) -> Path:
    digests = {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in files}
    directory.mkdir()
    (directory / "report.json").write_text(
        json.dumps(
            {"git": {"commit": "a" * 40, "dirty": False}, "obligations": [{"id": "ob", "files": digests}]}
        )
    )
    return directory


def test_an_unchanged_tree_has_no_drift_and_a_changed_one_names_each_file(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    for name in ("pkg/a.py", "pkg/b.py", "pkg/c.py"):
        (root / name).write_text(name)
    report = _report(tmp_path / "report", root, ["pkg/a.py", "pkg/b.py", "pkg/c.py"])
    assert report_drift(report, root).ok
    (root / "pkg/a.py").write_text("changed")
    (root / "pkg/b.py").unlink()
    drift = report_drift(report, root)
    assert [(d.obligation, d.file, d.change) for d in drift.drifted] == [
        ("ob", "pkg/a.py", "changed"),
        ("ob", "pkg/b.py", "missing"),
    ]
    assert drift.lines()[0].startswith(f"report built at commit {'a' * 40}; 3 checked files: 2 changed")


def test_the_command_line_exits_1_on_drift_and_2_without_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Path(__file__).resolve().parents[2]
    report = _report(tmp_path / "report", repo, ["README.md"])
    assert main(["report", "--check", str(report)]) == 0
    assert "none changed since" in capsys.readouterr().out
    data = json.loads((report / "report.json").read_text())
    data["obligations"][0]["files"]["README.md"] = "0" * 64
    (report / "report.json").write_text(json.dumps(data))
    assert main(["report", "--check", str(report)]) == 1
    assert "ob: README.md changed" in capsys.readouterr().out
    assert main(["report", "--check", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_report_names_no_path_of_the_machine_that_built_it(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "report"
    assert main(["report", "--quick", "--only", "theorem2-as-stated", "--out", str(out)]) == 0
    for name in ("report.json", "report.md", "report.html", "report.intoto.json"):
        text = (out / name).read_text()
        assert str(tmp_path) not in text and str(repo) not in text, name
    report = json.loads((out / "report.json").read_text())
    assert report["command"].endswith("--out $REPORT")
    assert any("$REPORT/logs/" in c for o in report["obligations"] for c in o["commands"])


def test_a_report_records_every_repository_module_its_checked_files_import(tmp_path: Path) -> None:
    """Direct, relative, sibling, ``importlib`` and lazily exported imports all count, transitively;
    modules outside the tree do not."""
    from amal_tools.compliance.dependencies import import_closure

    files = {
        "pkg/__init__.py": '_EXPORTS = {"thing": "pkg.impl", "other": "pkg.unused"}\n',
        "pkg/impl.py": "from . import helper\n",
        "pkg/helper.py": "import importlib\nimportlib.import_module('pkg.dynamic')\n",
        "pkg/dynamic.py": "import torch\n",
        "pkg/unused.py": "",
        "properties/test_x.py": "import _sibling\nimport pkg as p\n\np.thing\n",
        "properties/_sibling.py": "",
        "tools/lib/__init__.py": "",
        "tools/lib/tool.py": "",
        "proofs/ob.py": "from lib import tool\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert import_closure(["properties/test_x.py"], tmp_path) == {
        "properties/test_x.py",
        "properties/_sibling.py",
        "pkg/__init__.py",
        "pkg/impl.py",
        "pkg/helper.py",
        "pkg/dynamic.py",
    }
    assert import_closure(["proofs/ob.py"], tmp_path) == {
        "proofs/ob.py",
        "tools/lib/__init__.py",
        "tools/lib/tool.py",
    }


def test_the_core_obligation_records_the_modules_tagging_runs() -> None:
    """The files a change to which would invalidate the core verdict are recorded, whether or not the
    obligation names them (the process-wide hooks, the fresh-process helper of the properties)."""
    from amal_tools.compliance.discovery import discover
    from amal_tools.compliance.runner import _file_digests

    root = Path(__file__).resolve().parents[2]
    (core,) = [e for e in discover(root / "proofs", root) if e.obligation.id == "core-noninterference"]
    recorded = _file_digests(core, root)
    for name in (
        "amal_verified/isolation/_engine/global_hooks.py",
        "amal_verified/isolation/_engine/sequence_packing.py",
        "properties/_fresh_process.py",
        "properties/test_core_scenarios.py",
    ):
        assert name in recorded, name
