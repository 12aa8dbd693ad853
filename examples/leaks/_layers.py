"""Which of amal_verified's three layers catches a gallery leak, measured.

- static: ``mypy --strict`` (the repository's configuration and cache) reports an error in the script;
- dynamic: the instrumented ``train`` (tags, ``GatedOptimizer``), run once on the example inputs in strict
  mode, raises ``IsolationViolation`` or ``TaggingError``;
- differential: ``check_noninterference`` on the un-instrumented ``train_untagged`` (seed 0, at most 25
  auxiliary variants) finds that the world model depends on the auxiliary data.

Each check returns a :class:`Catch`: whether the layer caught the leak and the message a user sees.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import re
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import amal_verified as av

__all__ = [
    "GALLERY",
    "LAYERS",
    "REPO",
    "Catch",
    "Row",
    "demonstrate",
    "differential_layer",
    "dynamic_layer",
    "gallery_paths",
    "load",
    "measure",
    "static_layer",
]

GALLERY = Path(__file__).resolve().parent
REPO = GALLERY.parents[1]
LAYERS = ("static", "dynamic", "differential")
MAX_EXAMPLES = 25


@dataclass(frozen=True)
class Catch:
    """One layer's verdict on one script: ``caught``, the full ``message`` and a one-line ``excerpt``."""

    layer: str
    caught: bool
    message: str
    excerpt: str


@dataclass(frozen=True)
class Row:
    """One script's measured verdicts, one :class:`Catch` per layer, in ``LAYERS`` order."""

    path: Path
    title: str
    designated: str | None
    catches: tuple[Catch, ...]

    @property
    def cheapest(self) -> str | None:
        """The first layer (static < dynamic < differential) that catches the leak, if any."""
        return next((c.layer for c in self.catches if c.caught), None)


def _relative(text: str) -> str:
    """``text`` with this machine's paths shortened: the repository's, installed packages' and Python's."""
    paths = sysconfig.get_paths()
    for prefix, short in ((REPO, ""), (paths["purelib"], "<site-packages>/"), (paths["stdlib"], "<python>/")):
        text = text.replace(f"{prefix}/", short)
    return text


def gallery_paths() -> list[Path]:
    """The gallery scripts ``NN_name.py`` (the control ``00_control.py`` first)."""
    return sorted(GALLERY.glob("[0-9][0-9]_*.py"))


def load(path: Path) -> ModuleType:
    """Import a gallery script by path (its name starts with a digit) as ``leak_<stem>``."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no gallery script {path}")
    if str(GALLERY) not in sys.path:
        sys.path.insert(0, str(GALLERY))
    name = f"leak_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def static_layer(paths: Sequence[Path]) -> dict[Path, Catch]:
    """One ``mypy --strict`` run over ``paths``; each file is caught when mypy reports an error in it."""
    from mypy import api

    files = [Path(p).resolve() for p in paths]
    with contextlib.chdir(REPO):  # where mypy finds amal_verified, whatever the caller's directory
        stdout, stderr, status = api.run(
            [
                *map(str, files),
                "--config-file",
                str(REPO / "pyproject.toml"),
                "--cache-dir",
                str(REPO / ".mypy_cache"),
                "--no-error-summary",
                "--hide-error-context",
            ]
        )
    if status not in (0, 1):
        raise RuntimeError(f"mypy failed (exit {status}):\n{stdout}{stderr}")
    errors: dict[Path, list[str]] = {path: [] for path in files}
    for line in stdout.splitlines():
        location, sep, _ = line.partition(": error: ")
        if not sep:
            continue
        path = (REPO / location.rsplit(":", 1)[0]).resolve()
        if path not in errors:  # shared code that is not clean would make every verdict meaningless
            raise RuntimeError(f"mypy --strict reports an error outside the checked scripts:\n{line}")
        errors[path].append(_relative(line))
    found: dict[Path, Catch] = {}
    for path, lines in errors.items():
        if lines:
            first = lines[0].split(": error: ", 1)
            line_number = first[0].rsplit(":", 1)[1]
            excerpt = f"line {line_number}: {first[1].rsplit('  [', 1)[0]}"
            found[path] = Catch("static", True, "\n".join(lines), excerpt)
        else:
            found[path] = Catch("static", False, "mypy --strict: no error", "no error")
    return found


def _dynamic_excerpt(message: str) -> str:
    """The refusal without its parameter list and advice, and where the auxiliary data was mixed in."""
    first, *rest = message.splitlines()
    named = re.search(r" protected [a-z]+\(s\): ", first)  # "... reached 4 protected value(s): names."
    if named:
        first = first[: named.end() - 2]
    mixed = [line.strip().split("; ")[0] for line in rest if line.strip().startswith("mixed in by:")]
    return "; ".join([first.split(". ")[0], *mixed])


def dynamic_layer(module: ModuleType) -> Catch:
    """Run the instrumented ``train`` once on the example inputs in strict mode (restored afterwards)."""
    primary, aux = module.amal_example_inputs()
    previous = av.set_strict(True)
    try:
        module.train(primary, aux)
    except (av.IsolationViolation, av.TaggingError) as exc:
        message = _relative(f"{type(exc).__name__}: {exc}")
        return Catch("dynamic", True, message, _dynamic_excerpt(message))
    finally:
        av.set_strict(previous)
    return Catch("dynamic", False, "trained to the end in strict mode without a refusal", "no refusal")


def differential_layer(module: ModuleType, max_examples: int = MAX_EXAMPLES) -> Catch:
    """The differential audit of the un-instrumented ``train_untagged`` (Hypothesis seed 0)."""
    from amal_verified.audit import check_noninterference

    primary, aux = module.amal_example_inputs()
    target = f"{_relative(str(Path(module.__file__ or '').resolve()))}:train_untagged"
    result = check_noninterference(
        module.train_untagged, primary, aux, max_examples=max_examples, seed=0, name=target
    )
    if result.ok:
        return Catch("differential", False, str(result), f"passed {result.examples} variants")
    changes = "; ".join(result.variant.changes) if result.variant is not None else "the example inputs"
    if result.raised is not None:
        effect = f"raised {result.raised.splitlines()[0]}"
    else:
        effect = f"{len(result.differences)} world-model entries differ ({result.differences[0].name}, …)"
    return Catch("differential", True, str(result), f"{changes} → {effect}")


def measure(paths: Sequence[Path] | None = None, max_examples: int = MAX_EXAMPLES) -> list[Row]:
    """Every layer on every script (one mypy run for all of them)."""
    chosen = [Path(p).resolve() for p in (gallery_paths() if paths is None else paths)]
    static = static_layer(chosen)
    rows = []
    for path in chosen:
        module = load(path)
        catches = (static[path], dynamic_layer(module), differential_layer(module, max_examples))
        rows.append(Row(path, module.LEAK.title, module.LEAK.layer, catches))
    return rows


def _path(module: ModuleType) -> Path:
    if module.__file__ is None:
        raise ValueError(f"{module.__name__} is not loaded from a file")
    return Path(module.__file__).resolve()


def _check(layer: str, module: ModuleType) -> Catch:
    if layer == "static":
        return static_layer([_path(module)])[_path(module)]
    if layer == "dynamic":
        return dynamic_layer(module)
    return differential_layer(module)


def demonstrate(module: ModuleType, argv: Sequence[str] | None = None) -> int:
    """A gallery script's ``main``: run a layer on the script and print what a user sees.

    The layer is the script's designated one unless ``--layer`` names another; the control (no designated
    layer) runs all three by default.  Exit status 0 when the outcome is the expected one (a leak caught;
    nothing reported on the control), else 1.
    """
    designated: str | None = module.LEAK.layer
    parser = argparse.ArgumentParser(
        prog=_path(module).name, description=(module.__doc__ or "").strip().splitlines()[0]
    )
    parser.add_argument(
        "--layer",
        choices=LAYERS,
        default=designated,
        help=f"the layer to run (default: {designated or 'all three'})",
    )
    args = parser.parse_args(argv)
    is_leak = designated is not None
    print(f"{_path(module).name}: {module.LEAK.title}")
    expected = True
    for layer in [args.layer] if args.layer else LAYERS:
        catch = _check(layer, module)
        if catch.caught:
            verdict = "catches the leak" if is_leak else "reports a leak in the control"
        else:
            verdict = "does NOT catch this leak" if is_leak else "reports nothing"
        print(f"\nThe {layer} layer {verdict}. What you see:\n\n{catch.message}")
        expected = expected and catch.caught == is_leak
    return 0 if expected else 1
