"""The drop-in matrix (``benchmarks/optimizer_matrix.py``), quick subset, run in this process.

Checks that the matrix is produced and well formed (every cell PASS, FAIL or N/A with its reason;
exceptions with their type and message line; torch version and commit stated; no machine paths), and
that every cell is PASS or N/A except those listed in ``KNOWN_FAILURES`` (impossible in principle)
or ``PENDING_CORE_FIXES`` (the cause lies outside ``gate.py``).  Each listed cell is a strict
xfail: once it passes, the test fails and its entry must be deleted.

Below the matrix: gate behaviours the matrix relies on, checked directly (a refusal at a later
closure evaluation restores what the step changed; a group that cannot be protected is not added;
GradScaler's tensors reach a fused optimizer and are checked).  The whole file runs once more in a
fresh process that holds auxiliary data, where the gate's check reads every label of every step.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import amal_verified as av

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "optimizer_matrix.py"

# Cells of the quick matrix that cannot pass, whatever the library does: (rows, features, reason).
KNOWN_FAILURES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = []


# Cells that fail because of code outside gate.py: (rows, features, diagnosis).  Delete an entry
# when its fix lands (the strict xfail turns red then).
PENDING_CORE_FIXES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = []


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("optimizer_matrix", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


om = _load_script()
MAIN_KEYS = [f.key for f in om.FEATURES]
SCHEDULER_KEYS = [f.key for f in om.scheduler_features()]
CELLS = [(row, key) for row in om.QUICK_ROWS for key in MAIN_KEYS] + [
    (row, key) for row in om.QUICK_SCHEDULER_ROWS for key in SCHEDULER_KEYS
]


def _known(row: str, key: str) -> str | None:
    for rows, features, reason in KNOWN_FAILURES + PENDING_CORE_FIXES:
        if row in rows and key in features:
            return reason
    return None


def _cell_params() -> list[Any]:
    params = []
    for row, key in CELLS:
        reason = _known(row, key)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(row, key, marks=marks, id=f"{row}-{key}"))
    return params


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script does: tiny tensors, intra-op threads only add overhead
    try:
        matrix = om.build_matrix(quick=True)
    finally:
        torch.set_num_threads(threads)
    md_path, json_path = om.write(matrix, tmp_path_factory.mktemp("matrix"))
    return json.loads(json_path.read_text(encoding="utf-8")), md_path.read_text(encoding="utf-8")


def _cell(data: dict[str, Any], row: str, key: str) -> dict[str, Any]:
    table = "rows" if key in MAIN_KEYS else "scheduler_rows"
    (found,) = [r for r in data[table] if r["name"] == row]
    cell: dict[str, Any] = found["cells"][key]
    return cell


def test_matrix_is_produced_and_well_formed(produced: tuple[dict[str, Any], str]) -> None:
    data, markdown = produced
    assert data["torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{7,40}(\+dirty)?", data["commit"])
    assert [r["name"] for r in data["rows"]] == list(om.QUICK_ROWS)
    assert [r["name"] for r in data["scheduler_rows"]] == list(om.QUICK_SCHEDULER_ROWS)
    tallies = {"PASS": 0, "FAIL": 0, "N/A": 0}
    for table, keys in (("rows", MAIN_KEYS), ("scheduler_rows", SCHEDULER_KEYS)):
        for row in data[table]:
            assert list(row["cells"]) == keys
            for cell in row["cells"].values():
                assert cell["status"] in tallies
                tallies[cell["status"]] += 1
                if cell["status"] != "PASS":
                    assert cell["reason"]
                if "error_type" in cell:
                    assert isinstance(cell["error_message"], str)
    main, schedulers = data["counts"]["main"], data["counts"]["schedulers"]
    assert main["PASS"] + main["FAIL"] + main["N/A"] == len(om.QUICK_ROWS) * len(MAIN_KEYS)
    assert schedulers["PASS"] + schedulers["FAIL"] + schedulers["N/A"] == (
        len(om.QUICK_SCHEDULER_ROWS) * len(SCHEDULER_KEYS)
    )
    assert tallies == {k: main[k] + schedulers[k] for k in tallies}

    assert f"torch **{torch.__version__}**" in markdown
    assert f"commit **{data['commit']}**" in markdown
    for name in om.QUICK_ROWS:
        assert f"| {name} |" in markdown
    for text in (markdown, json.dumps(data)):
        for machine_path in (str(ROOT), str(Path.home()), "site-packages", sys.prefix):
            assert machine_path not in text


def test_known_failures_name_cells_of_the_quick_matrix() -> None:
    for rows, features, _ in KNOWN_FAILURES + PENDING_CORE_FIXES:
        for row in rows:
            for key in features:
                assert (row, key) in CELLS, f"stale KNOWN_FAILURES entry: {row!r} × {key!r}"


@pytest.mark.parametrize(("row", "key"), _cell_params())
def test_cell(produced: tuple[dict[str, Any], str], row: str, key: str) -> None:
    cell = _cell(produced[0], row, key)
    assert cell["status"] != "FAIL", f"{row} × {key}: {cell['reason']} (raised at {cell.get('raised_at')})"


# -- gate behaviours the matrix relies on --------------------------------------------------------------


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x, y, xa = torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g), torch.randn(8, 4, generator=g)
    return av.primary(x, source="real-env"), av.primary(y, source="real-env"), av.aux(xa, source="aux-1")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    return bool(a == b)


def test_refusal_at_a_later_closure_evaluation_restores_parameters_and_state() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = av.GatedOptimizer(torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5), names=model)
    x, y, xa = _data()

    def clean() -> torch.Tensor:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        return loss

    opt.step(clean)
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    calls = 0

    def aux_at_second_evaluation() -> torch.Tensor:
        nonlocal calls
        calls += 1
        opt.zero_grad()
        loss = F.mse_loss(model(x if calls == 1 else xa), y)
        loss.backward()
        return loss

    with pytest.raises(av.IsolationViolation):
        opt.step(aux_at_second_evaluation)
    assert calls == 2  # LBFGS changed the parameters before it evaluated the closure again
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    assert _same(state, opt.state_dict())
    opt.zero_grad()
    opt.step(clean)


def test_first_step_refused_leaves_lbfgs_state_empty() -> None:
    model = torch.nn.Linear(4, 3)
    opt = av.GatedOptimizer(torch.optim.LBFGS(model.parameters()), names=model)
    _, y, xa = _data()

    def aux_closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.mse_loss(model(xa), y)
        loss.backward()
        return loss

    with pytest.raises(av.IsolationViolation):
        opt.step(aux_closure)
    assert len(opt.state) == 0


def test_group_that_cannot_be_protected_is_not_added() -> None:
    model = torch.nn.Linear(4, 3)
    opt = av.GatedOptimizer(torch.optim.SGD([model.weight], lr=0.1), names=model)
    tainted = av.aux(torch.zeros(3), source="aux-1").elem
    with pytest.raises(av.IsolationViolation):
        opt.add_param_group({"params": [torch.nn.Parameter(tainted)]})
    assert len(opt.param_groups) == 1


def test_grad_scaler_tensors_reach_the_fused_optimizer_and_are_checked() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = av.GatedOptimizer(torch.optim.Adam(model.parameters(), fused=True), names=model)
    x, y, _ = _data()
    scale = torch.tensor(4.0)
    opt.grad_scale = scale  # what GradScaler.step does
    assert opt.original_optimizer.grad_scale is scale  # type: ignore[attr-defined]
    del opt.grad_scale
    assert not hasattr(opt.original_optimizer, "grad_scale")
    F.mse_loss(model(x), y).backward()
    opt.found_inf = av.aux(torch.zeros(()), source="aux-1")  # an inf flag computed from aux gradients
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(av.IsolationViolation):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


_WITH_AUXILIARY_DATA = """
import sys, torch, pytest
import amal_verified as av
av.aux(torch.zeros(1), source="aux-0")
sys.exit(pytest.main([sys.argv[1], "-q", "-p", "no:cacheprovider", "-k", "not in_a_process_holding"]))
"""


@pytest.mark.slow
def test_the_matrix_holds_in_a_process_holding_auxiliary_data() -> None:
    """Once an auxiliary label exists in a process the gate's check reads the label of everything
    each step reads: LBFGS's numbers and lists of state, sparse gradients, fused kernels' tensors.
    Every cell and check of this file must come out the same there."""
    proc = subprocess.run(
        [sys.executable, "-c", _WITH_AUXILIARY_DATA, str(Path(__file__).resolve())],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout
