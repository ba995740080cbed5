"""Comparison of two traces: first divergence, ULPs, structure, growth, env diff, and `twinrun diff`."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess

import numpy as np
import pytest

from helpers import run_twinrun
from twinrun.comparison import Samples, diff, event_difference
from twinrun.recording import record
from twinrun.trace import Event, Trace, TraceWriter


def train(path, steps=6, *, grad_noise_at=None, ulps=1, n_changed=100, permute_at=None, change_sample_at=None,
          names=("features.0", "classifier"), value_threshold=65_536, capture=None, env=None,
          max_steps=None):
    """A small fake training run with NumPy: the events a PyTorch run records, in the same order."""
    r = np.random.default_rng(0)
    params = {f"{n}.weight": r.standard_normal(shape).astype(np.float32)
              for n, shape in zip(names, [(16, 1, 3, 3), (10, 2048)])}
    data = r.standard_normal((steps, 8, 5)).astype(np.float32)
    opts = {} if capture is None else {"capture": capture}
    if max_steps:
        opts["max_steps"] = max_steps
    with record(path, header={"env": env} if env else None, value_threshold=value_threshold, **opts) as rec:
        for name, p in params.items():
            rec.event("init", name, p)
        for s in range(steps):
            x = data[s]
            if permute_at is not None and s >= permute_at:
                x = x[::-1].copy()
            if change_sample_at is not None and s >= change_sample_at:
                x = x.copy()
                x[2, 0] += 1
            rec.event("input", "x", x, per_sample=True)
            for name in names:
                rec.event("forward", name, x * np.float32(s + 1))
            rec.event("loss", "loss", np.float32(x.sum()))
            grads = {}
            for name, p in params.items():
                g = p * np.float32(0.01)
                if grad_noise_at is not None and s >= grad_noise_at and name.startswith(names[-1]):
                    g = g.copy()
                    flat = g.reshape(-1)
                    for _ in range(ulps):
                        flat[:n_changed] = np.nextafter(flat[:n_changed], np.float32(np.inf))
                grads[name] = g
                rec.event("grad", name, g)
            for name in params:
                params[name] = params[name] - grads[name]
                rec.event("param", name, params[name])
            rec.end_step()
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return train(tmp_path_factory.mktemp("base") / "a.trace")


def test_identical_traces(base, tmp_path):
    b = train(tmp_path / "b.trace")
    c = diff(base, b)
    assert c.identical and c.first_divergence is None and not c.structural and c.growth == []
    assert c.steps_compared == 6
    assert c.events_compared == 2 + 6 * 8  # init, then input, 2 forward, loss, 2 grad, 2 param
    assert c.sentence().startswith("The runs are identical: 6 steps")


def test_first_divergence_in_the_backward_pass(base, tmp_path):
    b = train(tmp_path / "b.trace", grad_noise_at=3, ulps=3, n_changed=2876)
    c = diff(base, b)
    assert not c.identical and not c.structural
    d = c.first_divergence
    assert (d.step, d.phase, d.name) == (3, "grad", "classifier.weight")
    assert d.shape == [10, 2048] and d.dtype == "float32" and d.size == 20480
    assert d.differing == 2876 and d.max_ulp == 3
    ta, tb = Trace.open(base), Trace.open(b)
    ea = next(e for e in ta.events(3) if (e.phase, e.name) == ("grad", "classifier.weight"))
    eb = next(e for e in tb.events(3) if (e.phase, e.name) == ("grad", "classifier.weight"))
    delta = np.abs(ta.value(ea).astype(np.float64) - tb.value(eb).astype(np.float64))
    assert d.max_abs == delta.max()
    assert d.before_identical is True
    assert set(d.before_checked) >= {"init", "input", "forward", "loss", "param"}
    s = c.sentence()
    assert s.startswith("The runs part at step 3, in the backward pass, at the gradient of `classifier.weight`: "
                        "2,876 of 20,480 values differ by at most ")
    assert "(3 ULP); inputs and parameters were identical up to there." in s
    # growth: the parameters drift further apart step after step
    assert [g.step for g in c.growth] == [3, 4, 5]
    rel = [g.param_rel_diff for g in c.growth]
    assert all(r > 0 for r in rel) and rel[0] < rel[1] < rel[2]
    assert all(g.param_basis == "values" for g in c.growth)
    assert c.growth[0].differing == 2  # the gradient and the updated parameter
    assert "By step 5 the parameters differ by" in s
    doc = c.to_dict()
    assert json.loads(json.dumps(doc)) == doc and doc["sentence"] == s


def test_without_values_stats_still_say_where(base, tmp_path):
    a = train(tmp_path / "a.trace", value_threshold=0)
    b = train(tmp_path / "b.trace", grad_noise_at=1, value_threshold=0)
    c = diff(a, b)
    d = c.first_divergence
    assert (d.step, d.name) == (1, "classifier.weight")
    assert d.values is False and d.differing is None and d.max_ulp is None
    assert "values not kept" in c.sentence()
    assert c.growth[-1].param_basis == "norms"


def test_input_order_only(base, tmp_path):
    b = train(tmp_path / "b.trace", permute_at=2)
    d = diff(base, b).first_divergence
    assert (d.step, d.phase, d.name) == (2, "input", "x")
    assert d.input_order_only is True
    assert d.samples == Samples(count=8, moved=8, changed=0)
    assert "the same 8 samples arrive in another order" in diff(base, b).sentence()


def test_input_with_other_content_is_not_order_only(base, tmp_path):
    b = train(tmp_path / "b.trace", change_sample_at=1)
    c = diff(base, b)
    d = c.first_divergence
    assert d.phase == "input" and d.input_order_only is False
    assert d.samples == Samples(count=8, moved=1, changed=1)
    assert "1 of 8 samples have other content" in c.sentence()


def test_a_different_model_is_structural_not_numeric(base, tmp_path):
    b = train(tmp_path / "b.trace", names=("conv1", "fc"))
    c = diff(base, b)
    assert not c.identical and c.first_divergence is None and c.different_models
    s = c.structural[0]
    assert s.kind == "other-event" and (s.step, s.index) == (0, 0)
    assert s.a.name == "features.0.weight" and s.b.name == "conv1.weight"
    assert c.sentence().startswith("Structural mismatch, the traces record different models: at step 0")


def test_structural_mismatch_after_a_divergence_keeps_both(tmp_path):
    a, b = tmp_path / "a.trace", tmp_path / "b.trace"
    for path, extra in ((a, False), (b, True)):
        w = TraceWriter(path, {})
        for s in range(4):
            w.add(s, "param", "w", np.full(4, s + (0.5 if extra and s >= 1 else 0), np.float32))
            if extra and s == 2:
                w.add(s, "custom", "branch", np.zeros(1))  # the diverged run takes another branch
            w.commit_step(s)
        w.close()
    c = diff(a, b)
    assert c.first_divergence.step == 1 and not c.different_models
    assert [s.to_dict() for s in c.structural] == [{"kind": "missing-event", "step": 2, "index": 1, "a": None,
                             "b": {"phase": "custom", "name": "branch", "dtype": "float64", "shape": [1]}}]
    assert "Later, at step 2" in c.sentence()


def test_other_shape_is_structural(tmp_path):
    paths = []
    for n in (4, 5):
        w = TraceWriter(tmp_path / f"{n}.trace", {})
        w.add(0, "param", "w", np.zeros(n, np.float32))
        w.commit_step(0)
        w.close()
        paths.append(tmp_path / f"{n}.trace")
    c = diff(*paths)
    assert c.structural[0].kind == "other-shape" and c.first_divergence is None


def test_only_common_steps_and_phases_are_compared(base, tmp_path):
    short = train(tmp_path / "short.trace", max_steps=3)
    c = diff(base, short)
    assert c.identical and c.steps_compared == 3 and c.status_b == "stopped"
    assert "Trace B has only 3 recorded steps" in c.sentence()
    params_only = train(tmp_path / "p.trace", capture=("param",))
    c = diff(base, params_only)
    assert c.identical and c.phases == ["param"] and "different phases" in c.notes[0]
    b = train(tmp_path / "b.trace", capture=("param",), grad_noise_at=2, ulps=400)  # big enough to survive p - g
    d = diff(base, b).first_divergence
    assert (d.step, d.phase) == (2, "param")
    assert "parameters were identical up to there (inputs not recorded)" in diff(base, b).sentence()
    # parting at the input itself: the inputs were recorded (it is one), and only the parameters came before
    moved = diff(base, train(tmp_path / "moved.trace", change_sample_at=0)).sentence()
    assert "; parameters were identical up to there." in moved and "inputs not recorded" not in moved, moved


def test_env_diff_of_the_headers(tmp_path):
    a = train(tmp_path / "a.trace", steps=1, env={"python": "3.11", "torch": {"version": "2.13.0", "threads": 2}})
    b = train(tmp_path / "b.trace", steps=1, env={"python": "3.11", "torch": {"version": "2.13.0", "threads": 1}})
    c = diff(a, b)
    assert c.identical
    keys = [d.key for d in c.env_diff.differences]
    assert any("threads" in str(k) for k in keys) and not any(k == "python" for k in keys)


# --- ULPs and differences of one pair of events -----------------------------------------------------

def ev(x, dtype=None):
    from twinrun.trace import digest, stats

    dtype = dtype or str(x.dtype)
    return Event(0, 0, "param", "w", dtype, x.shape, digest(x, dtype), *stats(x, dtype), True, None)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_ulp_distance_counts_representable_values_between(dtype):
    x = np.array([1.0, -1.0, 0.0, 1e-3], dtype)
    y = x.copy()
    for _ in range(5):
        y[1] = np.nextafter(y[1], dtype(-np.inf))
    y[2] = -np.finfo(dtype).smallest_subnormal  # across zero: +0 and the smallest negative subnormal
    d = event_difference(ev(x), ev(y), x, y)
    assert d.differing == 2 and d.max_ulp == 5
    assert d.max_abs == pytest.approx(abs(float(x[1]) - float(y[1])))
    z = np.array([np.finfo(dtype).smallest_subnormal, 0, 0, 0], dtype)
    w = np.array([-np.finfo(dtype).smallest_subnormal, 0, 0, 0], dtype)
    assert event_difference(ev(z), ev(w), z, w).max_ulp == 2


def test_plus_and_minus_zero_differ_in_bits_but_not_in_ulps():
    x, y = np.zeros(3, np.float32), np.zeros(3, np.float32)
    y[0] = -0.0
    d = event_difference(ev(x), ev(y), x, y)
    assert d.differing == 1 and d.max_ulp == 0 and d.max_abs == 0.0


def test_bfloat16_ulps_through_the_raw_bits():
    f = np.array([1.0, 2.0, -3.0], np.float32)
    bits = (f.view(np.int32) >> 16).astype(np.int16)
    other = bits.copy()
    other[1] += 4  # four bf16 steps above 2.0
    d = event_difference(ev(bits, "bfloat16"), ev(other, "bfloat16"), bits, other)
    assert d.differing == 1 and d.max_ulp == 4
    assert d.max_abs == pytest.approx(4 * 2.0 ** -6)  # bf16 has 7 mantissa bits: spacing 2**-6 at 2


def test_nan_counts_as_differing_without_a_distance():
    x = np.array([1.0, 2.0], np.float32)
    y = np.array([1.0, np.nan], np.float32)
    d = event_difference(ev(x), ev(y), x, y)
    assert d.differing == 1 and d.max_abs is None and d.max_ulp is None
    assert d.stats_b.nonfinite == 1


def test_integers_have_differences_but_no_ulps():
    x = np.array([1, 2, 3], np.int64)
    y = np.array([1, 7, 3], np.int64)
    d = event_difference(ev(x), ev(y), x, y)
    assert d.differing == 1 and d.max_abs == 5 and d.max_ulp is None


# --- the command line ----------------------------------------------------------------------------

def run_cli(twinrun_cmd, *args):
    return subprocess.run([*twinrun_cmd, "diff", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_diff_exit_codes_json_and_text(twinrun_cmd, base, tmp_path):
    same = train(tmp_path / "same.trace")
    other = train(tmp_path / "other.trace", grad_noise_at=2)
    r = run_cli(twinrun_cmd, base, same)
    assert r.returncode == 0, r.stderr
    assert "The runs are identical" in r.stdout
    r = run_cli(twinrun_cmd, base, other)
    assert r.returncode == 1, r.stderr
    assert "The runs part at step 2, in the backward pass" in r.stdout and "growth" in r.stdout
    r = run_cli(twinrun_cmd, base, other, "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)  # one JSON document, nothing else
    assert doc["first_divergence"]["step"] == 2 and doc["identical"] is False
    assert doc["sentence"].startswith("The runs part at step 2")


def test_cli_diff_bad_input_is_one_line_and_exit_2(twinrun_cmd, base, tmp_path):
    text = tmp_path / "notes.trace"
    text.write_text("not a trace")
    data = base.read_bytes()
    trunc = tmp_path / "trunc.trace"
    trunc.write_bytes(data[: len(data) // 3])
    newer = tmp_path / "newer.trace"
    newer.write_bytes(data)
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    model = train(tmp_path / "model.trace", names=("conv1", "fc"))
    for path, words in [(tmp_path / "missing.trace", "no such file"), (text, "not a twinrun trace"),
                        (trunc, "truncated"), (newer, "upgrade twinrun"), (model, "different models")]:
        r = run_cli(twinrun_cmd, base, path)
        assert r.returncode == 2, (path, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""


# --- twinrun diff --html -------------------------------------------------------------------------

def island(page, ident="twinrun-document"):
    """A JSON island of a report page (docs/reports.md)."""
    html = page.read_text(encoding="utf-8")
    return json.loads(re.search(rf'id="{ident}">(.*?)</script>', html, re.S).group(1))


def test_cli_diff_html_writes_the_page_and_keeps_stdout_json(base, tmp_path):
    other = train(tmp_path / "other.trace", grad_noise_at=2)
    page = tmp_path / "diff.html"
    r = run_twinrun("diff", base, other, "--json", "--html", page)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)  # stdout: the JSON document alone
    assert island(page) == doc
    assert f"twinrun diff: wrote {page}" in r.stderr
    first = island(page, "twinrun-data")["map"]["first"]  # read from the two traces themselves
    assert (first["step"], first["phase"], first["name"]) == (2, "grad", "classifier.weight")
    before = page.read_bytes()
    # Without --json: the terminal view on stdout; --quiet: no "wrote" line; the same bytes again.
    r = run_twinrun("diff", base, other, "--html", page, "-q")
    assert r.returncode == 1, r.stderr
    assert "The runs part at step 2" in r.stdout and r.stderr == ""
    assert page.read_bytes() == before


def test_cli_diff_html_refuses_a_file_that_is_not_a_report(base, tmp_path):
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    for path, words in [(notes, "not a twinrun report"), (tmp_path / "no" / "r.html", "does not exist"),
                        (tmp_path, "is a folder")]:
        r = run_twinrun("diff", base, base, "--html", path, "--json")
        assert r.returncode == 2, (path, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr, r.stderr
        assert r.stdout == ""
    assert notes.read_text() == "<p>my notes</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.html"]
