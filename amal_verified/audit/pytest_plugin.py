"""The pytest plugin (loaded automatically once amal_verified is installed; ``-p no:amal_verified``
turns it off): audit a training function in a five-line test.

    from my_project.training import example_inputs, train

    def test_world_model_learns_only_from_primary_data(amal_audit):
        primary, aux = example_inputs()
        amal_audit(train, primary, aux)

``amal_audit(train, primary, aux, **options)`` is
:func:`amal_verified.audit.assert_noninterference`: the test fails with the shrunk auxiliary variant
and the world-model entries that differ.  The number of variants follows the Hypothesis profile
(``--hypothesis-profile``) unless ``max_examples=`` is given.  Every audit run in the session is
listed at the end with its variants per second.

``--amal-target=module:function`` names a training function whose module defines
``amal_example_inputs()``; the ``amal_target`` fixture returns it (an
:class:`amal_verified.audit.Target`) and skips tests when the option is absent.  This project's
``pytest properties/ --amal-target=...`` audits it with the Theorem 1 property.  An unusable target
is a usage error reported before any test runs.

Importing this module imports neither torch nor Hypothesis: that happens on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from amal_verified.audit import AuditResult, Target

__all__ = ["configured_target"]

_TARGET_KEY = pytest.StashKey["Target"]()
_RESULTS_KEY = pytest.StashKey["list[AuditResult]"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amal_verified", "amal_verified isolation audit")
    group.addoption(
        "--amal-target",
        metavar="MODULE:FUNCTION",
        default=None,
        help="a training function train(primary, aux) -> world model to audit (fixture amal_target); its "
        "module defines amal_example_inputs() -> (primary, aux)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS_KEY] = []
    spec = config.getoption("--amal-target", default=None)
    if spec is None:
        return
    from amal_verified.audit.targets import TargetError, load_target

    try:
        config.stash[_TARGET_KEY] = load_target(spec)
    except TargetError as exc:
        raise pytest.UsageError(f"--amal-target={spec}: {exc}") from None


def configured_target(config: pytest.Config) -> Target | None:
    """The target given with ``--amal-target``, or ``None``."""
    return config.stash.get(_TARGET_KEY, None)


@pytest.fixture(scope="session")
def amal_target(pytestconfig: pytest.Config) -> Target:
    """The training function named by ``--amal-target`` with its example inputs; skips without it."""
    target = configured_target(pytestconfig)
    if target is None:
        pytest.skip("no --amal-target=module:function given")
    return target


@pytest.fixture
def amal_audit(pytestconfig: pytest.Config) -> Callable[..., AuditResult]:
    """``amal_audit(train, primary, aux, **options)``: assert that ``train``'s world model ignores ``aux``."""
    from amal_verified.audit import Interference, assert_noninterference

    results = pytestconfig.stash[_RESULTS_KEY]

    def audit(train: Callable[[Any, Any], Any], primary: Any, aux: Any, **options: Any) -> AuditResult:
        __tracebackhide__ = True
        try:
            outcome = assert_noninterference(train, primary, aux, **options)
        except Interference as failure:
            results.append(failure.result)
            raise
        results.append(outcome)
        return outcome

    return audit


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS_KEY, [])
    if not results:
        return
    terminalreporter.section("amal_verified audit")
    for r in results:
        terminalreporter.write_line(
            f"{'passed' if r.ok else 'FAILED'} {r.target}: {r.examples} variants in {r.seconds:.2f} s "
            f"({r.examples_per_second:.1f} variants/s)"
        )
