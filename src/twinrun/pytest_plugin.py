"""twinrun's pytest plugin (entry point ``pytest11``): reproducibility checks as test assertions.

Inert unless used: loading it adds two command-line options and three fixtures, and imports neither
NumPy nor any framework; ``twinrun.testing`` (and what it imports) loads when a fixture is used.

- ``twinrun_check(script, *args, max_steps=5, runs=2, golden=None, ulps=None, rtol=None, seed=None, ...)``
  runs the script in fresh processes and fails the test with twinrun's lead sentence when the runs part
  (``twinrun.testing.assert_reproducible``); ``golden=`` compares with a stored trace, which
  ``pytest --twinrun-update`` writes.
- ``twinrun_seed``: this test's seed (``--twinrun-seed``, else pytest-randomly's ``--randomly-seed``
  when that plugin is active, else 0); ``twinrun_seeds``: ``twinrun.seed_everything(twinrun_seed)``
  applied in the test process right before the test body, after pytest-randomly's own reseeding.

>>> def test_train_repeats(twinrun_check):                                  # doctest: +SKIP
...     twinrun_check("train.py", "--epochs", "1", max_steps=5)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .seeding import Seeds
    from .testing import CheckReport

__all__ = ["TwinrunCheck"]

_WRITTEN = pytest.StashKey[list[str]]()


def _seed_arg(text: str) -> int:
    # Parsed here, not by twinrun.seeding.seed_value: that module imports NumPy, and loading the plugin must not.
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text!r}")
    return int(text.strip())


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("twinrun", "twinrun: does a training script repeat?")
    group.addoption("--twinrun-update", action="store_true", dest="twinrun_update", default=False,
                    help="write (or rewrite) the golden traces of twinrun_check(..., golden=PATH) instead of "
                         "comparing with them")
    group.addoption("--twinrun-seed", dest="twinrun_seed", type=_seed_arg, default=None, metavar="S",
                    help="the seed of the twinrun_seed/twinrun_seeds fixtures (default: pytest-randomly's "
                         "--randomly-seed when it is active, else 0)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_WRITTEN] = []


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    if config.getoption("twinrun_update", False):
        lines.append("twinrun: --twinrun-update: golden traces are written, not compared")
    if config.getoption("twinrun_seed", None) is not None:
        lines.append(f"twinrun: --twinrun-seed={config.getoption('twinrun_seed')}")
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    written = config.stash.get(_WRITTEN, [])
    if written:
        terminalreporter.write_line(f"twinrun: wrote {len(written)} golden trace{'s' if len(written) != 1 else ''}:")
        for path in written:
            terminalreporter.write_line(f"  {path}")


def session_seed(config: pytest.Config) -> int:
    """The seed of this session's tests: ``--twinrun-seed``, else pytest-randomly's, else 0."""
    own = config.getoption("twinrun_seed", None)
    if own is not None:
        return int(own)
    if config.pluginmanager.hasplugin("randomly"):
        theirs = config.getoption("randomly_seed", None)
        if isinstance(theirs, int):
            return theirs
    return 0




class TwinrunCheck:
    """The ``twinrun_check`` fixture's value: call it to assert that a script repeats."""

    def __init__(self, config: pytest.Config, base: Path, workdir: Path, seed: int) -> None:
        self._config = config
        self._base = base
        self._workdir = workdir
        self._calls = 0
        self.seed = seed                          # this test's seed: pass seed=twinrun_check.seed to use it
        self.update: bool = bool(config.getoption("twinrun_update", False))

    def __call__(self, script: str | os.PathLike[str], *script_args: Any, **options: Any) -> CheckReport:
        """``twinrun.testing.assert_reproducible(script, *script_args, **options)``; fails the test with one
        message (no traceback into twinrun) when the runs part or an option is wrong."""
        from ._errors import TwinrunError
        from .testing import assert_reproducible

        if "update" in options or "base" in options:
            pytest.fail("twinrun_check: update and base are set by the plugin (use --twinrun-update; relative "
                        "paths are taken from the test file's folder)", pytrace=False)
        self._calls += 1
        update = self.update and options.get("golden") is not None
        failure: str | None = None
        try:
            report = assert_reproducible(script, *script_args, update=update, base=self._base,
                                         workdir=self._workdir / f"check-{self._calls}", **options)
        except TwinrunError as e:
            failure = f"twinrun_check: {e}"
        except AssertionError as e:
            failure = str(e)
        except TypeError as e:   # an unknown keyword: say which ones there are
            failure = (f"twinrun_check: {e}; options: max_steps, runs, golden, ulps, rtol, seed, deterministic, "
                       "threads, capture, timeout, env")
        if failure is not None:   # outside the except blocks: the message alone, no chained traceback
            pytest.fail(failure, pytrace=False)
        if report.golden_written is not None:
            self._config.stash[_WRITTEN].append(report.golden_written)
        return report


@pytest.fixture
def twinrun_seed(pytestconfig: pytest.Config) -> int:
    """This test's seed: ``--twinrun-seed``, else pytest-randomly's ``--randomly-seed``, else 0."""
    return session_seed(pytestconfig)


@pytest.fixture
def twinrun_seeds(twinrun_seed: int) -> Seeds:
    """``twinrun.seed_everything(twinrun_seed)`` in the test process (reapplied right before the test body,
    after pytest-randomly's reseed); the test's hash seed is not changed (use ``twinrun_check`` for that)."""
    from .seeding import seed_everything

    return seed_everything(twinrun_seed, hash_seed="ignore")


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    # pytest-randomly reseeds random and NumPy in pytest_runtest_call, after fixtures were set up; this
    # runs after it, right before the test function, so a test that asked for twinrun_seeds gets them.
    if "twinrun_seeds" in getattr(pyfuncitem, "funcargs", {}):
        from .seeding import seed_everything

        seed_everything(session_seed(pyfuncitem.config), hash_seed="ignore")
    return (yield)


@pytest.fixture
def twinrun_check(pytestconfig: pytest.Config, request: pytest.FixtureRequest,
                  tmp_path: Path) -> TwinrunCheck:
    """Assert that a training script repeats in fresh processes, or matches a golden trace; see
    ``twinrun.testing.assert_reproducible`` for the options."""
    return TwinrunCheck(pytestconfig, Path(request.path).parent, tmp_path / "twinrun", session_seed(pytestconfig))
