"""Progress reports outside a terminal (plain lines) and grouped TensorBoard tags."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _tiny_runs import TINY as TINY_RUN

from amal_verified.run.logs import TENSORBOARD_TAGS, ConsoleProgress, RunLogger

TRAIN_LINE = re.compile(
    r"^amal train \d{4}-\d\d-\d\d \d\d:\d\d:\d\d steps (\d+)/(\d+) \(\d+%\) \| [\d.]+ steps/s \| "
    r"elapsed \d+:\d\d:\d\d \| ETA \d+:\d\d:\d\d \| return (\S+) \(eval (\S+)\) \| WM loss \S+ \| IG \S+ \| "
    r"(gated|UNSAFE-MIX \(ablation, no gate\))$"
)
CERTIFY_LINE = re.compile(
    r"^amal certify \d{4}-\d\d-\d\d \d\d:\d\d:\d\d updates (\d+)/(\d+) \(\d+%\) \| [\d.]+ updates/s \| "
    r"elapsed \d+:\d\d:\d\d \| ETA \d+:\d\d:\d\d$"
)
# A tiny CartPole run (300 steps), as ``--set`` overrides.
TINY_SETTINGS = {k: v for k, v in TINY_RUN.items() if k not in ("env_id", "total_steps")} | {
    "eval_every": 300,
    "checkpoint_every": 300,
}


def _logger(run_dir: Path, stream: Any, *, interval: float, unsafe: bool = False) -> RunLogger:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunLogger(
        run_dir, total_steps=300, unsafe_mix=unsafe, progress=True, stream=stream, line_interval=interval
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ---------------------------------------------------------------------------------------- plain lines


def test_off_a_terminal_training_progress_is_plain_lines_with_rate_eta_and_returns(tmp_path: Path) -> None:
    out = io.StringIO()
    with _logger(tmp_path / "run", out, interval=0.0) as logger:
        logger.advance(50)
        logger.log(100, {"steps_per_s": 80.0, "episode_return": 21.5, "eval_return": None, "wm_loss": 0.5})
        logger.log(300, {"episode_return": 30.25, "eval_return": 40.0, "info_gain": 0.125})
    lines = out.getvalue().splitlines()
    matches = [TRAIN_LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [(m.group(1), m.group(3), m.group(4)) for m in matches if m] == [
        ("50", "-", "-"),
        ("100", "21.5", "-"),
        ("300", "30.2", "40.0"),
    ]
    assert "\x1b" not in out.getvalue()  # no terminal control codes in a log file


def test_plain_lines_are_rate_limited_but_the_first_and_last_are_always_written(tmp_path: Path) -> None:
    out = io.StringIO()
    with _logger(tmp_path / "run", out, interval=3600.0, unsafe=True) as logger:
        for step in range(50, 301, 50):
            logger.advance(step)
            logger.log(step, {"episode_return": float(step)})
        logger.log(300, {"episode_return": 1.0})  # the last step is reported once
    lines = out.getvalue().splitlines()
    assert [TRAIN_LINE.match(line).group(1) for line in lines] == ["50", "300"]  # type: ignore[union-attr]
    assert lines[-1].endswith("UNSAFE-MIX (ablation, no gate)") and "ETA 0:00:00" in lines[-1]


def test_on_a_terminal_training_progress_is_a_bar_not_lines(tmp_path: Path) -> None:
    out = _Terminal()
    with _logger(tmp_path / "run", out, interval=0.0) as logger:
        logger.log(100, {"episode_return": 3.0})
    assert "amal train" in out.getvalue() and not TRAIN_LINE.search(out.getvalue())


def test_without_progress_nothing_is_reported(tmp_path: Path) -> None:
    out = io.StringIO()
    (tmp_path / "run").mkdir()
    with RunLogger(tmp_path / "run", total_steps=300, unsafe_mix=False, progress=False, stream=out) as logger:
        logger.advance(50)
        logger.log(300, {"episode_return": 1.0})
    assert out.getvalue() == ""


def test_console_progress_writes_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    with ConsoleProgress("amal certify", "updates", stream=out, line_interval=3600.0) as progress:
        for done in range(1, 11):
            progress(done, 10)
    progress(10, 10)  # closed: nothing more
    lines = out.getvalue().splitlines()
    assert [CERTIFY_LINE.match(line).group(1) for line in lines] == ["1", "10"]  # type: ignore[union-attr]


def test_console_progress_is_a_bar_on_a_terminal_and_checks_its_interval() -> None:
    out = _Terminal()
    with ConsoleProgress("amal certify", "updates", stream=out) as progress:
        progress(1, 2)
        progress(2, 2)
    assert "amal certify" in out.getvalue() and not CERTIFY_LINE.search(out.getvalue())
    with pytest.raises(ValueError, match="line_interval"):
        ConsoleProgress("amal certify", "updates", line_interval=-1.0)


@pytest.mark.slow
def test_training_with_progress_and_stderr_piped_writes_plain_lines(tmp_path: Path) -> None:
    settings = ", ".join(f"{k}={v!r}" for k, v in TINY_SETTINGS.items())
    code = (
        "import amal_verified as av, sys\n"
        f"config = av.TrainConfig(env_id='CartPole-v1', total_steps=300, {settings})\n"
        "av.Trainer.create(config, sys.argv[1], progress=True).run()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _check_training_lines(result.stderr)


def _check_training_lines(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("amal train ")]
    matches = [TRAIN_LINE.match(line) for line in lines]
    assert len(lines) >= 2 and all(matches), stderr
    last = matches[-1]
    assert last is not None and last.group(1) == last.group(2) == "300"
    assert last.group(3) != "-" and last.group(4) != "-"  # the latest training and evaluation returns


def _amal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amal_verified.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_amal_train_and_certify_with_stderr_piped_report_progress_lines(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [arg for k, v in TINY_SETTINGS.items() for arg in ("--set", f"{k}={v}")]
    train = _amal("train", "--out", str(run_dir), "--steps", "300", *overrides)
    assert train.returncode == 0, train.stderr
    _check_training_lines(train.stderr)
    certify = _amal("certify", str(run_dir))
    assert certify.returncode == 0, certify.stdout + certify.stderr
    lines = [line for line in certify.stderr.splitlines() if line.startswith("amal certify ")]
    assert lines and all(CERTIFY_LINE.match(line) for line in lines), certify.stderr
    assert "updates 4/4 (100%)" in lines[-1]
    quiet = _amal("train", "--out", str(tmp_path / "quiet"), "--steps", "300", "--no-progress", *overrides)
    assert quiet.returncode == 0 and "amal train " not in quiet.stderr, quiet.stderr


# ---------------------------------------------------------------------------------------- TensorBoard


def _scalar_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


ALL_METRICS = {name: 1.0 for name in TENSORBOARD_TAGS}


def test_tensorboard_tags_are_grouped(tmp_path: Path) -> None:
    with _logger(tmp_path / "run", io.StringIO(), interval=0.0) as logger:
        logger.log(100, {**ALL_METRICS, "eval_return": float("nan")})  # not finite: not written
    tags = _scalar_tags(tmp_path / "run")
    assert tags == {tag for name, tag in TENSORBOARD_TAGS.items() if name != "eval_return"}
    assert {tag.split("/")[0] for tag in TENSORBOARD_TAGS.values()} == {"train", "eval", "world_model", "aux"}
    assert TENSORBOARD_TAGS["episode_return"] == "train/episode_return"
    assert TENSORBOARD_TAGS["eval_return"] == "eval/return"
    assert TENSORBOARD_TAGS["wm_loss"] == "world_model/loss"
    assert TENSORBOARD_TAGS["aux_fitness"] == "aux/fitness"


def test_an_unsafe_mix_run_prefixes_every_tag(tmp_path: Path) -> None:
    with _logger(tmp_path / "run", io.StringIO(), interval=0.0, unsafe=True) as logger:
        logger.log(100, ALL_METRICS)
    assert _scalar_tags(tmp_path / "run") == {f"UNSAFE-MIX/{tag}" for tag in TENSORBOARD_TAGS.values()}
