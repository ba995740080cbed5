"""Issue 10: true traces on every training loop (tests/loops/: one script per loop kind).

Each script writes its own ground truth, by its framework's own means, when TWINRUN_LOOPS_TRUTH
names a file (tests/loops/_truth.py); these tests run twinrun on the unmodified scripts in fresh
processes and hold the trace to that truth:

- a seeded script passes ``check`` with the right step count (``--max-steps`` works);
- a full ``run`` records as many steps as the script performed, and the step-0 gradients in the
  trace are the step-0 gradients (same names, same values: bitwise where the truth is the tensor the
  update used, within 4 ULP for a second pass), with no placeholder or wrapper names;
- 1 vs 2 threads with ``--wide`` part in the backward pass, at step 0, at the parameter whose
  gradient the truth files show differing first (JAX: one CPU vs two, as no thread variable moves
  XLA:CPU's pool);
- an unseeded script parts at ``init``.

Cases that today's twinrun still gets wrong are ``xfail(strict=True)`` with the reason
(``XFAIL``; tests/loops/FINDINGS.md has the table). The full matrix (about 30 cases x 4 tests, 7 script
processes per case: over an hour on 2 cores) is marked ``expensive`` and deselected by default;
one cheap case per loop kind runs by default (``DEFAULT``). Run everything with

    python -m pytest -m "expensive or not expensive" tests/test_loops.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import run_twinrun

LOOPS = Path(__file__).resolve().parent / "loops"
sys.path.insert(0, str(LOOPS))

from _truth import TRUTH_ENV, load  # noqa: E402 - found through the path above
from loop_cases import CASES, Case  # noqa: E402

pytestmark = [pytest.mark.slow]
# (test, case) pairs that run by default: one process each, a loop kind each.
DEFAULT = {("step0", c) for c in (
    "torch-manual-sub", "torch-autograd-grad", "torch-closure-sgd", "torch-compile-aot", "lightning-callback",
    "hf-trainer-callback", "keras-fit-torch", "keras-fit-jax", "flax-linen-record-step")}
# What twinrun still gets wrong, by (test, case) (test "*": all four), and why.
XFAIL: dict[tuple[str, str], str] = {
    ("*", "tf-gradient-tape"): "a tf.GradientTape step inside tf.function shows no hook a step: the script must call "
                               "twinrun.keras.Tracer (docs/keras-and-jax.md)",
    ("*", "flax-nnx"): "a jitted Flax step shows nothing outside it: wrap it with twinrun.jax.record_step "
                       "(case flax-nnx-record-step)",
    ("*", "flax-linen"): "a jitted Flax step shows nothing outside it: wrap it with twinrun.jax.record_step "
                         "(case flax-linen-record-step)",
}


def _params(test: str) -> list:
    out = []
    for c in CASES:
        marks = [] if (test, c.name) in DEFAULT else [pytest.mark.expensive]
        why = XFAIL.get((test, c.name)) or XFAIL.get(("*", c.name))
        if why:
            marks.append(pytest.mark.xfail(strict=True, reason=why))
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out

# Several root models (a GAN): twinrun may prefix the later roots' paths with a label.
PREFIX_OK = {"torch-gan"}


def _json(r: subprocess.CompletedProcess) -> dict:
    assert r.stdout.strip(), f"no JSON on stdout (exit {r.returncode}): {r.stderr[-1500:]}"
    return json.loads(r.stdout)


def _args(case: Case, *extra: str) -> list[str]:
    return [str(LOOPS / case.script), "--", *extra, *case.args]


def _name_in_trace(truth_name: str, trace_names: list[str], case: Case) -> str | None:
    if truth_name in trace_names:
        return truth_name
    if case.name in PREFIX_OK:
        hits = [n for n in trace_names if n.endswith("." + truth_name)]
        if len(hits) == 1:
            return hits[0]
    return None


def _trace_events(path: Path, step: int) -> tuple:
    from twinrun.trace import Trace

    t = Trace.open(path)
    return t, t.steps(), t.events(step) if step in t.steps() else []


@pytest.mark.parametrize("case", _params("seeded"))
def test_seeded_check_identical_with_right_step_count(case: Case):
    r = run_twinrun("check", "--max-steps", "3", "--json", *_args(case), env=case.env, timeout=1800)
    doc = _json(r)
    assert r.returncode == 0, doc.get("sentence")
    assert doc["identical"] is True
    assert doc["steps_compared"] == 3, doc.get("sentence")
    assert [run["status"] for run in doc["runs"]] == ["stopped", "stopped"], doc["runs"]


@pytest.mark.parametrize("case", _params("step0"))
def test_step0_gradients_are_the_truth(case: Case, tmp_path: Path):
    trace, truth = tmp_path / "run.trace", tmp_path / "truth.npz"
    r = run_twinrun("run", "-o", trace, "--json", *_args(case), env={**case.env, TRUTH_ENV: str(truth)},
                    timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    meta, grads = load(truth)
    t, steps, ev0 = _trace_events(trace, 0)
    assert len(steps) == meta["steps"], f"trace has {len(steps)} steps, the script performed {meta['steps']}"
    recorded = [e for e in ev0 if e.phase == "grad"]
    names = [e.name for e in recorded]
    matched = {}
    for tname, want in grads.items():
        hit = _name_in_trace(tname, names, case)
        assert hit is not None, f"no step-0 gradient event for {tname!r}; step 0 records {names}"
        matched[hit] = tname
        got = t.value(recorded[names.index(hit)])
        assert got is not None, f"{hit}: value not kept"
        if meta["exact"]:
            np.testing.assert_array_equal(got, want, err_msg=f"step-0 gradient of {tname}")
        else:  # a second pass over batch 0: measured bitwise equal, allowed a few ULP
            np.testing.assert_array_max_ulp(got, want, maxulp=4)
    assert sorted(matched) == sorted(names), f"step 0 records gradients the script never had: " \
                                             f"{sorted(set(names) - set(matched))}"
    all_names = [e.name for e in t.events()]
    assert not [n for n in all_names if n.startswith("?")], "placeholder names in the trace"
    assert not [n for n in all_names if "_orig_mod" in n or "_torch_params" in n], "wrapper names in the trace"
    inputs = {e.name for e in ev0 if e.phase == "input"}
    assert "num_items_in_batch" not in inputs, "a trainer's keyword argument is recorded as an input"
    params = {e.name for e in ev0 if e.phase in ("init", "param")}
    for p in meta["param_names"]:
        assert _name_in_trace(p, sorted(params), case), f"parameter {p!r} not recorded under its name: {params}"


@pytest.mark.parametrize("case", _params("threads"))
def test_thread_difference_located_in_backward(case: Case, tmp_path: Path):
    runs = []
    for n in (1, 2):
        trace, truth = tmp_path / f"t{n}.trace", tmp_path / f"t{n}.npz"
        env = {**case.env, TRUTH_ENV: str(truth)}
        if case.framework == "jax":  # XLA:CPU's pool follows the CPU affinity, not a thread setting
            cmd = [*(["taskset", "-c", "0"] if n == 1 else []), sys.executable, "-m", "twinrun", "run", "-o",
                   str(trace), "--json", *_args(case, "--wide", "--steps", "2")]
            r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=1800,
                               check=False)
        else:
            r = run_twinrun("run", "-o", trace, "--threads", n, "--json", *_args(case, "--wide", "--steps", "2"),
                            env=env, timeout=1800)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append((trace, *load(truth)))
    (ta, ma, ga), (tb, mb, gb) = runs
    assert ma["loss0"] == mb["loss0"], "the step-0 loss differs: not a backward-pass case"
    order = ma.get("grad_order") or list(ga)
    differing = [n for n in order if n in ga and not np.array_equal(ga[n], gb[n])]
    assert differing, "the thread setting changed no step-0 gradient: this case cannot test the location"
    r = run_twinrun("diff", "--json", ta, tb)
    doc = _json(r)
    assert r.returncode == 1, doc.get("sentence")
    fd = doc["first_divergence"]
    assert (fd["step"], fd["phase"]) == (0, "grad"), doc["sentence"]
    assert _name_in_trace(differing[0], [fd["name"]], case), f"located at {fd['name']}, truth: {differing[0]}"


@pytest.mark.parametrize("case", _params("unseeded"))
def test_unseeded_parts_at_init(case: Case):
    r = run_twinrun("check", "--max-steps", "2", "--json", *_args(case, "--unseeded"), env=case.env, timeout=1800)
    doc = _json(r)
    assert r.returncode == 1, doc.get("sentence")
    fd = doc["first_divergence"]
    assert fd is not None and (fd["step"], fd["phase"]) == (0, "init"), doc["sentence"]
