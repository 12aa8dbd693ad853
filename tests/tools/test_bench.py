"""The benchmark's own plumbing: records, tasks, evaluation, the grid runner and `amal bench`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from amal_tools.bench.evaluation import evaluate_policy, evaluation_seeds
from amal_tools.bench.methods import AMAL_METHODS, METHODS, amal_config
from amal_tools.bench.records import EvalPoint, RunRecord, load_records
from amal_tools.bench.runner import BenchPlan
from amal_tools.bench.tasks import TASKS, Shift, TaskSpec, suite, task_by_name

from amal_verified.cli import main

CARTPOLE = TaskSpec(
    name="CartPole",
    env_id="CartPole-v1",
    family="partially observable",
    continuous=False,
    budgets={"quick": 300, "full": None},
    shift=Shift("longer pole", physics={"length": 2.0}),
    evaluations=3,
)


def _record(**overrides: object) -> RunRecord:
    fields: dict[str, object] = {
        "method": "amal",
        "task": "CartPole",
        "seed": 0,
        "budget": 300,
        "curve": (EvalPoint(100, (1.0, 2.0)), EvalPoint(300, (3.0,), 1.0)),
        "train_seconds": 1.5,
        "extras": {"isolation": {"identical": True}},
    }
    fields.update(overrides)
    return RunRecord(**fields)  # type: ignore[arg-type]


def test_records_round_trip_through_files(tmp_path: Path) -> None:
    a = _record(provenance={"git_commit": "abc", "finished": "2026-11-24 15:00 UTC"})
    b = _record(method="unsafe-mix", seed=1)
    a.write(tmp_path)
    b.write(tmp_path)
    assert load_records([tmp_path]) == [a, b]
    assert a.final.mean_return == 3.0
    assert (tmp_path / "amal__CartPole__0.json").exists()


def test_records_written_before_provenance_existed_still_load() -> None:
    data = _record().to_json()
    del data["provenance"]
    assert RunRecord.from_json(data).provenance == {}
    with pytest.raises(ValueError, match="malformed run record"):
        RunRecord.from_json({**data, "provenance": ["abc"]})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"curve": ()}, "at least the final evaluation"),
        ({"curve": (EvalPoint(5, (1.0,)), EvalPoint(5, (1.0,)))}, "increase strictly"),
        ({"budget": 0}, "budget"),
        ({"train_seconds": math.nan}, "train_seconds"),
        ({"method": ""}, "non-empty"),
    ],
)
def test_malformed_records_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _record(**overrides)


def test_eval_points_refuse_non_finite_returns_and_bad_success() -> None:
    with pytest.raises(ValueError, match="finite"):
        EvalPoint(1, (math.inf,))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EvalPoint(1, (1.0,), success=1.5)


def test_a_file_that_is_not_a_record_is_named(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match=r"x\.json: not a benchmark run record"):
        load_records([tmp_path])


def test_catalogue_covers_the_paper_tasks_and_schedules_end_at_the_budget() -> None:
    names = set(TASKS)
    assert {"HalfCheetah", "Ant", "Walker2d", "Humanoid", "TSP-200", "CVRP-100", "JSS-50", "KP-1000"} <= names
    assert {f"KeyCorridorS{s}" for s in ("3R1", "3R2", "3R3", "4R3", "5R3", "6R3", "8R4")} <= names
    assert {"Trading", "NewsFilter"} <= names
    for task in TASKS.values():
        for budget in (b for b in task.budgets.values() if b is not None):
            steps = task.eval_steps(budget)
            assert steps[-1] == budget and list(steps) == sorted(set(steps))
    assert suite("quick") and all(t.budgets["quick"] for t in suite("quick"))
    with pytest.raises(ValueError, match="unknown benchmark task 'Pong'"):
        task_by_name("Pong")


def test_evaluation_episodes_depend_on_the_run_seed_only_and_shift_changes_the_env() -> None:
    assert evaluation_seeds(0, 3) == evaluation_seeds(0, 3) != evaluation_seeds(1, 3)

    def push_right(obs: np.ndarray) -> int:
        return 1

    nominal = evaluate_policy(CARTPOLE, push_right, run_seed=0, episodes=2)
    again = evaluate_policy(CARTPOLE, push_right, run_seed=0, episodes=2)
    shifted = evaluate_policy(CARTPOLE, push_right, run_seed=0, episodes=2, shift=CARTPOLE.shift)
    assert nominal == again
    assert nominal.returns != shifted.returns
    assert nominal.success is None


def test_a_policy_with_an_invalid_action_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CartPole: the policy's action 7 was refused"):
        evaluate_policy(CARTPOLE, lambda obs: 7, run_seed=0, episodes=1)


def test_plans_refuse_bad_grids(tmp_path: Path) -> None:
    tasks = (task_by_name("TSP-20"),)
    with pytest.raises(ValueError, match="unknown methods"):
        BenchPlan(mode="quick", tasks=tasks, methods=("dqn",), seeds=(0,), out=tmp_path)
    with pytest.raises(ValueError, match="distinct"):
        BenchPlan(mode="quick", tasks=tasks, methods=("amal",), seeds=(0, 0), out=tmp_path)
    with pytest.raises(ValueError, match="no full budget"):
        BenchPlan(mode="full", tasks=tasks, methods=("amal",), seeds=(0,), out=tmp_path)
    plan = BenchPlan(mode="quick", tasks=tasks, methods=METHODS, seeds=(0, 1), out=tmp_path, budget=80)
    assert len(plan.cells()) == len(METHODS) * 2
    assert {c.budget for c in plan.cells()} == {80}


def test_amal_family_configs_differ_only_where_the_method_says() -> None:
    task = task_by_name("TSP-20")
    configs = {
        m: amal_config(task.env_id, method=m, seed=0, budget=1500, mode="quick").to_json()
        for m in AMAL_METHODS
    }
    amal, no_info, unsafe = configs["amal"], configs["amal-no-info"], configs["unsafe-mix"]
    aux_policy = configs["amal-aux-policy"]
    assert {k for k in amal if amal[k] != no_info[k]} == {"info_weight"} and no_info["info_weight"] == 0.0
    assert {k for k in amal if amal[k] != unsafe[k]} == {"unsafe_mix"}
    assert {k for k in amal if amal[k] != aux_policy[k]} == {"aux_ratio"}
    assert amal["aux_ratio"] == 0.0 and aux_policy["aux_ratio"] == 0.1
    with pytest.raises(ValueError, match="not an AMAL method"):
        amal_config(task.env_id, method="sb3-ppo", seed=0, budget=10, mode="quick")


def test_bench_list_names_every_task_and_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in TASKS) and all(m in out for m in METHODS)


def test_bench_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--tasks", "Pong", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark task 'Pong'" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_bench_smoke_runs_resumes_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The quick mode's code path end to end on a tiny budget: two task families, the AMAL trainer, its
    # --unsafe-mix ablation, an SB3 baseline and a not-applicable pair (SAC on a discrete task).
    out = tmp_path / "bench"
    argv = [
        "bench", "--quick", "--tasks", "TSP-20", "--methods", "amal", "unsafe-mix", "sb3-sac",
        "--seeds", "0", "--budget", "300", "--eval-episodes", "1", "--no-ratios", "--jobs", "2",
        "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    records = {r.method: r for r in load_records([out / "records"])}
    assert set(records) == {"amal", "unsafe-mix"}
    amal, unsafe = records["amal"], records["unsafe-mix"]
    assert amal.extras["isolation"]["identical"] is True
    assert amal.extras["isolation"]["param_l2"] == 0.0 and amal.extras["isolation"]["kl_mean"] == 0.0
    assert unsafe.extras["isolation"]["identical"] is False
    assert [p.step for p in amal.curve] == list(task_by_name("TSP-20").eval_steps(300))
    assert "shift" in amal.extras
    skipped = json.loads((out / "skipped" / "sb3-sac__TSP-20__0.json").read_text())
    assert "discrete" in skipped["reason"].lower()
    levels = json.loads((out / "levels.json").read_text())
    assert levels["TSP-20"]["0"]["optimal"] > levels["TSP-20"]["0"]["random"]
    results = (out / "RESULTS.md").read_text()
    assert "TSP-20" in results and "amal bench --quick --tasks TSP-20" in results
    naive = json.loads((out / "naive_predictors.json").read_text())  # beside the reality-gap table
    assert naive["TSP-20"]["0"]["transitions"] == amal.extras["real_transitions"]
    assert "| TSP-20 | 1 | " in results.split("What these errors are worth")[1]
    assert amal.provenance["git_commit"] and amal.provenance["finished"].endswith("UTC")
    capsys.readouterr()
    assert main(argv) == 0  # resumes: nothing left to train
    assert "3 of 3 cells already done; running 0" in capsys.readouterr().out
    # The second invocation is a second sitting of the same run: both are kept and tabled.
    sittings = json.loads((out / "metadata.json").read_text())["sittings"]
    assert len(sittings) == 2 and all(s["command"].startswith("amal bench --quick") for s in sittings)
    assert "spread over 2 sittings" in (out / "RESULTS.md").read_text()
    # A later sitting with other methods keeps the network sizes of the methods run before.
    assert main([*argv[:4], "--methods", "sb3-sac", *argv[8:]]) == 0
    assert "AMAL world model" in json.loads((out / "metadata.json").read_text())["networks"]
    # Rewriting the report keeps naming the command that produced the records.
    assert main([*argv, "--report-only", "--results", str(tmp_path / "again.md")]) == 0
    again = (tmp_path / "again.md").read_text()
    assert "--report-only" not in again.split("## How to reproduce")[1].split("```")[1]


def test_a_sitting_cut_short_is_still_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from amal_tools.bench import command

    def interrupted(plan: BenchPlan) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run_benchmark", interrupted)
    argv = [
        "bench",
        "--quick",
        "--tasks",
        "TSP-20",
        "--methods",
        "amal",
        "--no-ratios",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 130  # Ctrl-C: one line, no traceback
    assert main(argv) == 130
    assert capsys.readouterr().err.splitlines() == ["amal bench: interrupted"] * 2
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert [s["end"] for s in metadata["sittings"]] == ["interrupted (no end recorded)"] * 2
    # The command is recorded without this machine's directories (results are committed).
    assert metadata["sittings"][0]["command"] == (
        "amal bench " + " ".join(argv[1:-1]) + f" '<outside the repository>/{tmp_path.name}'"
    )
    assert str(tmp_path) not in (tmp_path / "metadata.json").read_text()


def test_recorded_commands_name_no_directory_of_the_machine(tmp_path: Path) -> None:
    from amal_tools.bench.command import portable_command

    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    argv = [
        "bench",
        "--full",
        "--out",
        str(repo / "benchmarks" / "results"),
        "--results",
        str(tmp_path / "sitting.md"),
        f"--results={tmp_path / 'other.md'}",
        "--tasks",
        "CartPole",
    ]
    assert portable_command(argv, root=repo) == (
        "amal bench --full --out benchmarks/results --results '<outside the repository>/sitting.md' "
        "'--results=<outside the repository>/other.md' --tasks CartPole"
    )


def test_quick_mode_is_one_seed_of_every_method_on_its_suite_and_full_mode_three(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from amal_tools.bench import command

    plans: list[BenchPlan] = []

    def capture(plan: BenchPlan) -> None:
        plans.append(plan)
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "run_benchmark", capture)
    for mode in ("--quick", "--full"):
        assert main(["bench", mode, "--no-ratios", "--out", str(tmp_path / mode)]) == 130
    quick, full = plans
    assert (quick.mode, quick.seeds, quick.tasks, quick.methods) == ("quick", (0,), suite("quick"), METHODS)
    assert (full.mode, full.seeds, full.tasks, full.methods) == ("full", (0, 1, 2), suite("full"), METHODS)
    # one cell per (method, task): every method of the quick grid, each task once
    assert len(quick.cells()) == len(suite("quick")) * len(METHODS)
    assert {c.seed for c in quick.cells()} == {0}
    assert main(["bench", "--quick", "--seeds", "3", "4", "--no-ratios", "--out", str(tmp_path / "s")]) == 130
    assert plans[-1].seeds == (3, 4)


def test_collect_names_the_planned_cells_without_a_result_as_pending(tmp_path: Path) -> None:
    from amal_tools.bench.runner import Cell, collect

    _record().write(tmp_path / "records")
    (tmp_path / "skipped").mkdir()
    (tmp_path / "skipped" / "sb3-sac__CartPole__0.json").write_text('{"reason": "discrete actions"}')
    cells = [
        Cell("amal", "CartPole", 0, 300),
        Cell("sb3-sac", "CartPole", 0, 300),
        Cell("amal", "CartPole", 1, 300),
    ]
    outcome = collect(tmp_path, cells)
    assert outcome.pending == ("amal__CartPole__1",)
    assert collect(tmp_path).pending == ()


def test_the_catalogue_knows_which_tasks_have_continuous_actions() -> None:
    import gymnasium as gym
    from amal_tools.bench.evaluation import make_task_env
    from amal_tools.bench.methods import not_applicable_reason

    for task in TASKS.values():
        env = make_task_env(task)
        try:
            assert isinstance(env.action_space, gym.spaces.Box) == task.continuous, task.name
        finally:
            env.close()
    reason = not_applicable_reason("sb3-sac", task_by_name("TSP-20"))
    assert reason == "SAC needs a continuous (Box) action space; TSP-20's actions are discrete"
    assert not_applicable_reason("cem-rl", task_by_name("HalfCheetah")) is None
    assert all(not_applicable_reason(m, task_by_name("TSP-20")) is None for m in ("amal", "sb3-ppo", "pbt"))


def test_a_grid_of_not_applicable_cells_needs_no_worker_and_no_levels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--quick", "--tasks", "TSP-20", "--methods", "sb3-sac", "cem-rl", "--seeds", "0", "1",
            "--no-ratios", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert "4 of 4 cells already done; running 0" in capsys.readouterr().out  # skipped before any worker
    assert not (tmp_path / "levels.json").exists() and not (tmp_path / "records").exists()
    assert len(list((tmp_path / "skipped").glob("*.json"))) == 4
    results = (tmp_path / "RESULTS.md").read_text()
    assert "CEM-RL needs a continuous (Box) action space; TSP-20's actions are discrete" in results


def test_report_only_and_corrupt_metadata_get_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--quick", "--tasks", "TSP-20", "--out", str(tmp_path), "--report-only"]
    assert main(argv) == 2
    assert "holds no result of this grid: run the benchmark before --report-only" in capsys.readouterr().err
    (tmp_path / "metadata.json").write_text("{not json")
    assert main(argv) == 2
    assert f"{tmp_path / 'metadata.json'} is not valid JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_a_cell_run_as_a_ray_task_gives_the_record_the_local_worker_gives(
    tmp_path: Path, ray_instance: object
) -> None:
    argv = [
        "bench", "--quick", "--tasks", "TSP-20", "--methods", "amal", "--seeds", "0", "--budget", "300",
        "--eval-episodes", "1", "--no-ratios",
    ]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert main([*argv, "--backend", "ray", "--jobs", "2", "--out", str(tmp_path / "ray")]) == 0
    (local,) = load_records([tmp_path / "local" / "records"])
    (remote,) = load_records([tmp_path / "ray" / "records"])
    # everything but the measurements of time (train_seconds, when it finished, steps per second)
    assert remote.curve == local.curve
    assert remote.extras["isolation"] == local.extras["isolation"]
    assert remote.extras["shift"] == local.extras["shift"]
    assert remote.provenance["git_commit"] == local.provenance["git_commit"]
    assert json.loads((tmp_path / "ray" / "levels.json").read_text()) == json.loads(
        (tmp_path / "local" / "levels.json").read_text()
    )
    assert json.loads((tmp_path / "ray" / "metadata.json").read_text())["backend"] == "ray"


def test_keep_runs_is_refused_with_the_ray_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--keep-runs keeps run directories where cells train"):
        BenchPlan(
            mode="quick",
            tasks=(task_by_name("TSP-20"),),
            methods=("amal",),
            seeds=(0,),
            out=tmp_path,
            keep_runs=True,
            backend="ray",
        )


def test_the_default_backend_is_ray_only_with_ray_installed_and_a_cluster_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    from amal_tools.bench.executors import choose_backend

    installed = importlib.util.find_spec("ray") is not None
    assert choose_backend("auto", {}) == "local"
    assert choose_backend("auto", {"RAY_ADDRESS": ""}) == "local"
    assert choose_backend("auto", {"RAY_ADDRESS": "10.0.0.1:6379"}) == ("ray" if installed else "local")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else object())
    assert choose_backend("auto", {"RAY_ADDRESS": "10.0.0.1:6379"}) == "local"  # Ray not installed
    assert choose_backend("ray", {}) == "ray" and choose_backend("local", {"RAY_ADDRESS": "x"}) == "local"
    with pytest.raises(ValueError, match="backend must be one of auto, local, ray, got 'dask'"):
        choose_backend("dask", {})
