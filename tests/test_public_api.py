"""The public surface: exactly the names in ``twinrun.__all__``, each resolvable, and importing
twinrun (or building its command line) imports no framework."""

from __future__ import annotations

import subprocess
import sys

import twinrun

EXPECTED = [
    "BadLockError", "BadResultsError", "BadTraceError", "Comparison", "DeterminismReport", "FrameworkMissingError",
    "ProbeReport", "ScriptFailedError", "Seeds", "StructuralMismatchError", "Trace", "TwinrunError", "UsageError",
    "__version__", "batch_invariant", "compare", "compare_sweeps", "deterministic", "diff", "log_metric", "numerics",
    "probe", "record", "replicas", "seed_everything", "step",
]


def test_public_names_are_exactly_these():
    assert twinrun.__all__ == sorted(twinrun.__all__) == sorted(EXPECTED)
    for name in twinrun.__all__:
        assert getattr(twinrun, name) is not None


def test_errors_inherit_the_matching_builtin():
    assert issubclass(twinrun.BadTraceError, (twinrun.TwinrunError, ValueError))
    assert issubclass(twinrun.UsageError, ValueError)
    assert issubclass(twinrun.ScriptFailedError, RuntimeError)
    assert issubclass(twinrun.FrameworkMissingError, ImportError)


def test_import_and_cli_import_no_framework():
    code = (
        "import sys, twinrun, twinrun.cli\n"
        "twinrun.cli.build_parser()\n"
        "twinrun.seed_everything\n"
        "loaded = [m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_attribute_is_an_attribute_error():
    try:
        twinrun.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_probe_numerics_and_batch_invariant_are_what_they_say():
    # twinrun.probe is the function even after its package (twinrun.probes) is imported by the CLI,
    # and twinrun.numerics the module; neither imports a framework, batch_invariant imports torch.
    code = (
        "import sys, twinrun, twinrun.cli\n"
        "import twinrun.probes.session\n"
        "assert callable(twinrun.probe) and twinrun.probe.__module__ == 'twinrun.probes.api'\n"
        "assert twinrun.ProbeReport.__name__ == 'ProbeReport'\n"
        "import numpy as np\n"
        "assert float(twinrun.numerics.repro_sum(np.array([1e16, 1.0, -1e16]))) == 1.0\n"
        "assert {'repro_sum', 'repro_mean', 'repro_dot'} <= set(twinrun.numerics.__all__)\n"
        "print([m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules])\n"
        "twinrun.batch_invariant\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]
