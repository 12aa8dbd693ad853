"""The core installs and works alone: torch, numpy and beartype, no RL stack, no tooling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# What the core must never import: the trainer's stack, the audit's and the tooling's dependencies.
OPTIONAL = (
    "gymnasium",
    "mujoco",
    "minigrid",
    "tensorboard",
    "rich",
    "hypothesis",
    "stable_baselines3",
    "ray",
    "amal_tools",
)

CORE_USE = textwrap.dedent(
    """
    import sys
    import torch
    import amal_verified as av
    from amal_verified.isolation.gate import GatedOptimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = av.GatedOptimizer(torch.optim.Adam(model.parameters()), names=model)
    x = av.primary(torch.randn(8, 3))
    model(x).pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    model(av.aux(torch.randn(8, 3), source="aux-0")).pow(2).mean().backward()
    try:
        opt.step()
    except av.IsolationViolation:
        print("refused")
    buffer = av.PrimaryBuffer(4, obs_shape=(3,), action_shape=(1,), seed=0)
    loaded = [name for name in {optional} if sys.modules.get(name) is not None]
    print("optional modules imported:", loaded)
    """
)


def _blocked_run(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a child whose imports of the optional dependencies fail."""
    # None in sys.modules is how Python spells "not importable": `import x` raises ModuleNotFoundError.
    blocker = f"import sys\nsys.modules.update(dict.fromkeys({OPTIONAL!r}))\n"
    return subprocess.run(
        [sys.executable, "-c", blocker + script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=False,
    )


def test_core_dependencies_are_torch_numpy_and_beartype_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = sorted(
        dep.split(">")[0].split("=")[0].split("<")[0].split("[")[0] for dep in project["dependencies"]
    )
    assert names == ["beartype", "numpy", "torch"]


@pytest.mark.slow
def test_the_core_works_without_the_optional_dependencies() -> None:
    done = _blocked_run(CORE_USE.format(optional=OPTIONAL))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["refused", "optional modules imported: []"]


@pytest.mark.slow
def test_the_command_line_names_the_missing_extra() -> None:
    done = _blocked_run(
        "from amal_verified.cli import main; import sys; "
        "sys.exit(main(['train', '--env', 'CartPole-v1', '--steps', '10', '--out', '/nonexistent/run']))"
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'amal_verified[rl]'" in done.stderr
    assert "Traceback" not in done.stderr
    done = _blocked_run("from amal_verified.cli import main; import sys; sys.exit(main(['bench', '--list']))")
    assert done.returncode == 2, done.stderr
    assert "pip install -e tools" in done.stderr


@pytest.mark.slow
def test_a_fresh_virtual_environment_with_the_core_install_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # torch exactly as the Makefile installs it: the CPU wheel on these machines.
    subprocess.run([*pip, "torch==2.13.0"], check=True, env=env, timeout=900)
    subprocess.run([*pip, str(REPO)], check=True, env=env, timeout=900, cwd=tmp_path)
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.lower()
    for name in (
        "gymnasium",
        "mujoco",
        "minigrid",
        "tensorboard",
        "rich",
        "hypothesis",
        "stable-baselines3",
        "ray",
    ):
        assert f"\n{name}==" not in f"\n{listed}", f"{name} was installed with the core"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CORE_USE.format(optional=OPTIONAL)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["refused", "optional modules imported: []"]
    installed = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import amal_verified, pathlib; print(pathlib.Path(amal_verified.__file__).parent)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    package = Path(installed)
    assert not (package / "bench").exists() and not (package / "compliance").exists()
