"""``twinrun run`` and ``twinrun check`` on real training scripts, in real fresh processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from helpers import TWINRUN, run_twinrun
from twinrun import runner
from twinrun.comparison import diff
from twinrun.trace import Trace

SCRIPTS = Path(__file__).parent / "scripts"
CNN = SCRIPTS / "cnn_digits.py"

pytestmark = pytest.mark.slow


twinrun = run_twinrun


def one_line_error(r, *words):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


# --- check: identical, unseeded, threads ---------------------------------------------------------
def test_seeded_script_repeats_in_fresh_processes(tmp_path):
    r = twinrun("check", "--json", "--runs", 3, "--max-steps", 3, "--keep-traces", tmp_path, CNN, "--",
                "--seed", 0)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["identical"] is True and doc["first_divergence"] is None
    assert [run["status"] for run in doc["runs"]] == ["stopped"] * 3
    assert [Path(c["b"]).name for c in doc["comparisons"]] == ["run-2.trace", "run-3.trace"]  # each vs the first
    a, b = Trace.open(tmp_path / "run-1.trace"), Trace.open(tmp_path / "run-2.trace")
    assert a.steps() == [0, 1, 2] and len(a.events()) == len(b.events()) > 60
    assert "run 3/3" in r.stderr  # progress on stderr


def test_unseeded_script_parts_at_init():
    r = twinrun("check", "--json", "--max-steps", 2, CNN)
    assert r.returncode == 1, r.stderr
    fd = json.loads(r.stdout)["first_divergence"]
    assert (fd["step"], fd["phase"], fd["name"]) == (0, "init", "features.0.weight")


@pytest.mark.parametrize("isa", ["native", "avx2"])
def test_one_vs_two_threads_part_at_the_wide_layer_gradient(tmp_path, isa):
    # Measured on AVX2 (FACTS.md) and on AVX-512 (natively and emulating AVX2): the forward pass is
    # identical; the first gradient backward() computes with a thread-dependent SGEMM blocking is
    # the wide classifier's weight. The ISA can only be lowered (a higher one dies of SIGILL).
    import torch

    env = {}
    if isa == "avx2":
        if torch.backends.cpu.get_cpu_capability() != "AVX512":
            pytest.skip("this CPU has no AVX-512: the native run already is the AVX2 case")
        env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    args = ["--seed", "0", "--wide"]
    one = runner.launch(CNN, args, max_steps=2, threads=1, env=env, trace_path=tmp_path / "1.trace")
    two = runner.launch(CNN, args, max_steps=2, threads=2, env=env, trace_path=tmp_path / "2.trace")
    assert (one.exit_code, one.status, two.exit_code, two.status) == (0, "stopped", 0, "stopped"), two.stderr
    c = diff(one.trace_path, two.trace_path)
    fd = c.first_divergence
    assert not c.identical and (fd.step, fd.phase, fd.name) == (0, "grad", "classifier.weight")
    assert fd.before_identical is True


# --- run: stop, kill, fail ------------------------------------------------------------------------
def test_max_steps_ends_the_script_cleanly(tmp_path):
    out = tmp_path / "m.trace"
    r = twinrun("run", "--json", "-o", out, "--max-steps", 2, CNN, "--", "--seed", 0, "--steps", 50)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # --json: stdout is the document; the script's prints go to stderr
    assert doc["status"] == "stopped" and doc["steps"] == 2 and doc["stop_reason"] == "max-steps"
    assert "final loss" not in r.stderr  # the script ended at step 2, before its last print
    t = Trace.open(out)
    assert t.status == "stopped" and t.steps() == [0, 1]


def test_run_runs_the_script_like_python_does(tmp_path):
    script = tmp_path / "argv.py"
    script.write_text("import json, sys\nprint(json.dumps([__name__, sys.argv, sys.path[0]]))\n")
    r = twinrun("run", "-o", tmp_path / "x.trace", script, "--", "--lr", "0.1", "pos", cwd=tmp_path.parent)
    assert r.returncode == 0, r.stderr
    name, argv, path0 = json.loads(r.stdout.splitlines()[0])
    assert name == "__main__" and argv == [str(script), "--lr", "0.1", "pos"]
    assert Path(path0) == tmp_path
    assert Trace.open(tmp_path / "x.trace").status == "complete"


def test_options_after_the_script_are_twinruns_and_script_options_go_after_dashdash(tmp_path):
    out = tmp_path / "o.trace"
    r = twinrun("run", "--json", "-o", out, CNN, "--max-steps", 1, "--", "--seed", 0, "--steps", 5)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 1
    r = twinrun("run", "-o", out, CNN, "--steps", 5)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "--steps" in r.stderr and "after --" in r.stderr


def test_sigkill_mid_run_leaves_a_readable_trace(tmp_path):
    out = tmp_path / "k.trace"
    proc = subprocess.Popen([*TWINRUN, "run", "-o", str(out), str(CNN), "--", "--seed", "0", "--steps", "200",
                             "--sleep", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        steps = []
        while time.monotonic() < deadline and len(steps) < 3:
            time.sleep(0.3)
            if out.exists():
                try:
                    steps = Trace.open(out).steps()
                except Exception:
                    steps = []
        assert len(steps) >= 3, proc.stderr.read() if proc.poll() is not None else "too slow"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t = Trace.open(out)
    assert t.status == "running"
    assert t.steps()[:3] == [0, 1, 2]
    assert all(e.digest for e in t.events(t.steps()[-1]))


def test_script_that_raises_exit_3_with_its_traceback_and_the_trace_kept(tmp_path):
    out = tmp_path / "f.trace"
    r = twinrun("run", "-o", out, CNN, "--", "--seed", 0, "--raise-at", 2)
    assert r.returncode == 3
    assert "RuntimeError: boom at step 2" in r.stderr and str(CNN) in r.stderr
    assert "runpy" not in r.stderr and "twinrun/runner" not in r.stderr  # the script's frames only
    t = Trace.open(out)
    assert t.status == "failed" and t.steps() == [0, 1]

    r = twinrun("check", CNN, "--", "--seed", 0, "--raise-at", 1)
    assert r.returncode == 3
    assert "RuntimeError: boom at step 1" in r.stderr
    kept = r.stderr.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    assert "kept" in r.stderr and Trace.open(kept).status == "failed"


# --- check --against ------------------------------------------------------------------------------
def test_check_against_a_reference_stops_at_the_first_divergence(tmp_path):
    ref = tmp_path / "ref.trace"
    r = twinrun("run", "-o", ref, CNN, "--", "--seed", 0, "--steps", 8)
    assert r.returncode == 0 and Trace.open(ref).steps() == list(range(8))
    # The live run sees the same samples in another order at step 3.
    r = twinrun("check", "--json", "--against", ref, "--keep-traces", tmp_path / "kept", CNN, "--",
                "--seed", 0, "--steps", 8, "--flip-at", 3, env={"TWINRUN_TEST_FLIP": "1"})
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    fd = doc["first_divergence"]
    assert (fd["step"], fd["phase"], fd["name"]) == (3, "input", "x")
    live = Trace.open(tmp_path / "kept" / "run-1.trace")
    assert live.status == "diverged" and live.steps() == [0, 1, 2, 3]  # stopped at step 3, not 8

    # --keep-going runs on, and the same check without the flip is identical.
    r = twinrun("check", "--json", "--against", ref, "--keep-going", "--keep-traces", tmp_path / "k2", CNN,
                "--", "--seed", 0, "--steps", 8, "--flip-at", 3, env={"TWINRUN_TEST_FLIP": "1"})
    assert r.returncode == 1
    assert Trace.open(tmp_path / "k2" / "run-1.trace").steps() == list(range(8))
    r = twinrun("check", "--json", "--against", ref, CNN, "--", "--seed", 0, "--steps", 8)
    assert r.returncode == 0 and json.loads(r.stdout)["identical"] is True


# --- check --html ---------------------------------------------------------------------------------
def island(page, ident="twinrun-document"):
    """A JSON island of a report page (docs/reports.md)."""
    html = page.read_text(encoding="utf-8")
    return json.loads(re.search(rf'id="{ident}">(.*?)</script>', html, re.S).group(1))


def test_check_html_reads_the_temporary_traces_before_they_are_deleted(tmp_path):
    page = tmp_path / "check.html"
    r = twinrun("check", "--html", page, "--max-steps", 2, CNN)   # unseeded: the runs part at init
    assert r.returncode == 1, r.stderr
    assert "The runs part at step 0" in r.stdout   # without --json: the terminal view, and the page
    assert f"twinrun check: wrote {page}" in r.stderr
    doc = island(page)   # the --json document, built without --json
    assert doc["traces_kept"] is None and len(doc["runs"]) == 2 and len(doc["comparisons"]) == 1
    fd = doc["first_divergence"]
    assert (fd["step"], fd["phase"], fd["name"]) == (0, "init", "features.0.weight")
    data = island(page, "twinrun-data")   # read from the two traces ...
    first = data["map"]["first"]
    assert (first["step"], first["name"]) == (0, "features.0.weight") and data["ulp"]
    assert not any(Path(run["trace"]).exists() for run in doc["runs"])   # ... which are gone now


def test_check_html_with_json_and_a_failed_run(tmp_path):
    page = tmp_path / "check.html"
    r = twinrun("check", "--json", "--html", page, "--runs", 3, "--max-steps", 2, "--keep-traces", tmp_path / "kept",
                CNN, "--", "--seed", 0)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)   # stdout: the JSON document alone
    assert island(page) == doc and doc["identical"] is True
    assert f"twinrun check: wrote {page}" in r.stderr
    assert island(page, "twinrun-data")["map"]["first"] is None
    # A run that fails gives no page, and says so.
    r = twinrun("check", "--html", tmp_path / "failed.html", "-q", CNN, "--", "--seed", 0, "--raise-at", 1)
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1].endswith("no two runs to compare")
    assert not (tmp_path / "failed.html").exists()


def test_check_html_bad_input_is_refused_before_any_run(tmp_path):
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    r = twinrun("check", "--html", notes, "--json", CNN, cwd=tmp_path)
    one_line_error(r, "the report path", str(notes), "not a twinrun report")   # one line: no run started
    assert r.stdout == "" and notes.read_text() == "<p>my notes</p>"
    one_line_error(twinrun("check", "--html", tmp_path / "no" / "c.html", CNN), "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.html"]


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["run", "missing.py"], ["missing.py", "does not exist"]),
    (["check", "missing.py"], ["missing.py", "does not exist"]),
    (["run", "{notpy}"], ["not a Python script"]),
    (["run", "--every", "0", "{cnn}"], ["--every", "'0'"]),
    (["run", "--max-steps", "-3", "{cnn}"], ["--max-steps", "'-3'"]),
    (["check", "--max-steps", "abc", "{cnn}"], ["--max-steps", "'abc'"]),
    (["run", "--capture", "grads", "{cnn}"], ["grads", "--capture"]),
    (["check", "--runs", "1", "{cnn}"], ["--runs"]),
    (["check", "--against", "{notpy}", "{cnn}"], ["{notpy}"]),
    (["run", "--threads", "zero", "{cnn}"], ["--threads"]),
    (["run", "--intervene", "no-such-thing", "{cnn}"], ["no-such-thing"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, argv, words):
    notpy = tmp_path / "data.txt"
    notpy.write_text("not a script\n")
    fill = {"{notpy}": str(notpy), "{cnn}": str(CNN)}
    argv = [fill.get(a, a) for a in argv]
    words = [fill.get(w, w) for w in words]
    one_line_error(twinrun(*argv, cwd=tmp_path), *words)
    assert not list(tmp_path.glob("*.trace"))


def test_launch_rejects_bad_values_before_starting_anything(tmp_path):
    from twinrun import UsageError

    with pytest.raises(UsageError, match="--max-steps"):
        runner.launch(CNN, max_steps=0)
    with pytest.raises(UsageError, match="not a Python script"):
        runner.launch(tmp_path / "notes.txt") if (tmp_path / "notes.txt").write_text("x") else None
    with pytest.raises(UsageError, match="is a folder"):
        runner.launch(tmp_path)
