"""twinrun's pytest plugin, tested through pytester: real pytest sessions whose tests run a real PyTorch
script (an MLP on 64 bundled digits) in fresh processes through the ``twinrun_check`` fixture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy  # noqa: F401   # imported here: pytester's in-process runs unload what they import, and NumPy
import pytest  # cannot be loaded twice in one process

import twinrun.seeding
import twinrun.testing  # noqa: F401

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "plugin_mlp.py"
# The plugin is named explicitly: the installed twinrun's entry points may predate it (when they do
# not, the entry point has the module's name, and -p finds it registered).
PLUGIN = ("-p", "twinrun.pytest_plugin", "-p", "no:cacheprovider")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester folder holding the training script as train.py, next to the tests that use it."""
    shutil.copy(SCRIPT, pytester.path / "train.py")
    return pytester


def _failures(result: pytest.RunResult) -> dict[str, str]:
    """Each failed test's name -> its failure text (the longrepr)."""
    out = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):  # type: ignore[attr-defined]
        if rep.failed:
            out[rep.nodeid.split("::")[-1]] = str(rep.longrepr)
    return out


def test_entry_point_and_a_light_load(tmp_path: Path):
    """The pytest11 entry point that pyproject declares loads the plugin, also next to an explicit
    ``-p twinrun.pytest_plugin``; loading it imports neither NumPy nor a framework."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry = project["project"]["entry-points"]["pytest11"]
    assert entry == {"twinrun.pytest_plugin": "twinrun.pytest_plugin"}
    # an installed distribution declaring exactly that entry point
    dist = tmp_path / "site" / "twinrun_declared-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: twinrun-declared\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items()))
    (tmp_path / "test_x.py").write_text("def test_x(twinrun_seed):\n    assert twinrun_seed == 0\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    for extra in ([], ["-p", "twinrun.pytest_plugin"]):
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                              *extra, "test_x.py"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr

    code = ("import sys, twinrun.pytest_plugin as p; "
            "print(sorted(m for m in ('numpy', 'torch', 'tensorflow', 'jax', 'twinrun.testing') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_seeded_script_passes_and_an_unseeded_one_fails_at_init(suite: pytest.Pytester):
    suite.makepyfile(test_repro="""
        def test_seeded(twinrun_check):
            report = twinrun_check("train.py", max_steps=3)
            assert [r.steps for r in report.runs] == [3, 3]
            assert report.comparisons[0].identical

        def test_unseeded(twinrun_check):
            twinrun_check("train.py", "--unseeded", max_steps=3)
    """)
    result = suite.runpytest(*PLUGIN, "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    text = _failures(result)["test_unseeded"]
    assert "train.py, run 1 vs run 2 in fresh processes: The runs part at step 0, at initialisation" in text
    assert "`0.weight`" in text
    assert "site-packages" not in text and "testing.py" not in text   # one message, no traceback into twinrun


def test_golden_missing_then_written_then_matched(pytester: pytest.Pytester):
    """Relative paths are taken from the test file's folder (tests/), not from where pytest runs."""
    tests = pytester.mkdir("tests")
    shutil.copy(SCRIPT, tests / "train.py")
    (tests / "test_golden.py").write_text(textwrap.dedent("""
        def test_golden(twinrun_check):
            twinrun_check("train.py", max_steps=2, golden="golden/train.trace")
    """))
    missing = pytester.runpytest(*PLUGIN, "-p", "no:randomly")
    missing.assert_outcomes(failed=1)
    text = _failures(missing)["test_golden"]
    assert "golden trace" in text and "does not exist" in text and "pytest --twinrun-update" in text
    assert len(text.strip().splitlines()) == 1

    written = pytester.runpytest(*PLUGIN, "-p", "no:randomly", "--twinrun-update")
    written.assert_outcomes(passed=1)
    written.stdout.fnmatch_lines(["twinrun: --twinrun-update: golden traces are written, not compared",
                                  "twinrun: wrote 1 golden trace:", "*tests?golden?train.trace"])
    assert (tests / "golden" / "train.trace").is_file()

    matched = pytester.runpytest(*PLUGIN, "-p", "no:randomly")
    matched.assert_outcomes(passed=1)


def test_bad_options_fail_in_one_line(suite: pytest.Pytester):
    (suite.path / "not-a-trace.trace").write_text("hello")
    suite.makepyfile(test_bad="""
        def test_negative_ulps(twinrun_check):
            twinrun_check("train.py", ulps=-1)

        def test_unknown_phase(twinrun_check):
            twinrun_check("train.py", rtol={"gradient": 1e-6})

        def test_one_run(twinrun_check):
            twinrun_check("train.py", runs=1)

        def test_no_script(twinrun_check):
            twinrun_check("nowhere.py")

        def test_unknown_option(twinrun_check):
            twinrun_check("train.py", max_step=3)

        def test_not_a_golden(twinrun_check):
            twinrun_check("train.py", golden="not-a-trace.trace")
    """)
    result = suite.runpytest(*PLUGIN, "-p", "no:randomly")
    result.assert_outcomes(failed=6)
    fails = _failures(result)
    expect = {"test_negative_ulps": "ulps must be a whole number >= 0",
              "test_unknown_phase": "unknown phase 'gradient'",
              "test_one_run": "runs must be at least 2",
              "test_no_script": "script 'nowhere.py' does not exist",
              "test_unknown_option": "unexpected keyword argument 'max_step'",
              "test_not_a_golden": "is not a twinrun trace"}
    for name, words in expect.items():
        assert words in fails[name], (name, fails[name])
        assert len(fails[name].strip().splitlines()) == 1, (name, fails[name])
        assert fails[name].startswith("twinrun_check: ")

    # --twinrun-update never overwrites a file that is not a trace (and fails before any run)
    refused = suite.runpytest(*PLUGIN, "-p", "no:randomly", "--twinrun-update", "-k", "not_a_golden")
    refused.assert_outcomes(failed=1)
    assert "is not a twinrun trace; twinrun will not overwrite it" in _failures(refused)["test_not_a_golden"]
    assert (suite.path / "not-a-trace.trace").read_text() == "hello"

    bad_seed = suite.runpytest(*PLUGIN, "-p", "no:randomly", "--twinrun-seed", "abc")
    assert bad_seed.ret == pytest.ExitCode.USAGE_ERROR
    bad_seed.stderr.fnmatch_lines(["*argument --twinrun-seed: must be a non-negative integer, not 'abc'"])


def test_no_step_and_a_failing_script_are_never_called_a_divergence(pytester: pytest.Pytester):
    pytester.makepyfile(nostep="print('nothing to train')", crash="raise SystemExit('the data is missing')",
                        test_honest="""
        def test_nostep(twinrun_check):
            twinrun_check("nostep.py")

        def test_crash(twinrun_check):
            twinrun_check("crash.py")
    """)
    result = pytester.runpytest(*PLUGIN, "-p", "no:randomly")
    result.assert_outcomes(failed=2)
    fails = _failures(result)
    nostep = fails["test_nostep"]
    assert "twinrun cannot tell whether nostep.py repeats: in run 1, no training step was recorded" in nostep
    assert "twinrun.step()" in nostep and "part" not in nostep
    assert "run 1 of crash.py failed with exit code" in fails["test_crash"]
    assert "the data is missing" in fails["test_crash"]


def test_seeds_are_applied_after_pytest_randomly(pytester: pytest.Pytester):
    """pytest-randomly reseeds random and NumPy right before each test body; twinrun_seeds still wins."""
    pytester.makepyfile(test_seeds="""
        import random
        import numpy as np
        import twinrun

        def test_seeds(twinrun_seed, twinrun_seeds):
            got = (random.random(), float(np.random.random()))
            twinrun.seed_everything(twinrun_seed, hash_seed="ignore")
            assert got == (random.random(), float(np.random.random()))
            print("SEED", twinrun_seed, twinrun_seeds.root)

        def test_randomly_alone():   # without the fixture pytest-randomly's reseed stands
            got = random.random()
            twinrun.seed_everything(0, hash_seed="ignore")
            assert got != random.random()
    """)
    theirs = pytester.runpytest(*PLUGIN, "-p", "randomly", "--randomly-seed=123", "-s")
    theirs.assert_outcomes(passed=2)
    theirs.stdout.fnmatch_lines(["*SEED 123 123*"])
    ours = pytester.runpytest(*PLUGIN, "-p", "randomly", "--randomly-seed=123", "--twinrun-seed", "7", "-s")
    ours.assert_outcomes(passed=2)
    ours.stdout.fnmatch_lines(["twinrun: --twinrun-seed=7", "*SEED 7 7*"])
    alone = pytester.runpytest(*PLUGIN, "-p", "no:randomly", "-s", "-k", "not alone")
    alone.assert_outcomes(passed=1)
    alone.stdout.fnmatch_lines(["*SEED 0 0*"])


@pytest.mark.expensive
def test_tolerance_passes_last_bit_differences_and_fails_real_changes(suite: pytest.Pytester):
    """A golden recorded with 1 thread, checked with 2 (MKL splits the classifier's gradient sum another way):
    exact fails at that gradient, a tolerance of a few thousand ULP passes, a learning-rate change fails."""
    suite.makepyfile(test_tol=textwrap.dedent("""
        WIDE = ("--wide", "1024")
        GOLDEN = dict(max_steps=3, golden="golden/wide.trace")

        def test_exact(twinrun_check):
            twinrun_check("train.py", *WIDE, threads=2, **GOLDEN)

        def test_within(twinrun_check):
            twinrun_check("train.py", *WIDE, threads=2, ulps=8192, **GOLDEN)

        def test_too_tight(twinrun_check):
            twinrun_check("train.py", *WIDE, threads=2, ulps={"grad": 4}, rtol={"param": 1e-3}, **GOLDEN)

        def test_real_change(twinrun_check):
            twinrun_check("train.py", *WIDE, "--lr", "0.3", threads=1, rtol=1e-3, **GOLDEN)
    """))
    suite.makepyfile(test_write="""
        def test_write(twinrun_check):
            twinrun_check("train.py", "--wide", "1024", threads=1, max_steps=3, golden="golden/wide.trace")
    """)
    suite.runpytest(*PLUGIN, "-p", "no:randomly", "--twinrun-update", "test_write.py").assert_outcomes(passed=1)
    result = suite.runpytest(*PLUGIN, "-p", "no:randomly", "test_tol.py")
    result.assert_outcomes(passed=1, failed=3)
    fails = _failures(result)
    assert "at step 0, in the backward pass, at the gradient of `2.weight`" in fails["test_exact"]
    assert "ULP" in fails["test_exact"] and "twinrun --twinrun-update" not in fails["test_exact"]
    tight = fails["test_too_tight"]
    assert "beyond the tolerance (ulps: grad 4; rtol: param 0.001) at step 0, in the backward pass" in tight
    assert "values are outside it, by up to" in tight and "ULP (max abs" in tight
    assert "beyond the tolerance (rtol=0.001)" in fails["test_real_change"]
    assert "If the change is intended, rerun with `pytest --twinrun-update`" in fails["test_real_change"]
