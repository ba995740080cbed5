"""twinrun sweep / compare end to end, in fresh processes."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import run_twinrun
from twinrun.sweep import Results, plan

ROOT = Path(__file__).resolve().parents[1]

# Reads the seed variables itself, so these tests exercise only the sweep machinery.
TOY = textwrap.dedent("""
    import math, os, random, sys, time
    from twinrun.metrics import log_metric
    init = int(os.environ.get("TWINRUN_SEED_INIT", os.environ["TWINRUN_SEED"]))
    data = int(os.environ.get("TWINRUN_SEED_DATA", os.environ["TWINRUN_SEED"]))
    shift = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    if os.environ.get("TOY_FAIL_SEED") == str(init):
        raise RuntimeError(f"boom at seed {init}")
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
    for step in range(3):
        log_metric("loss", 1.0 / (step + 1 + init), step=step)
    acc = 0.9 + shift + 0.02 * random.Random(init).gauss(0, 1) + 0.004 * random.Random(1000 + data).gauss(0, 1)
    log_metric("accuracy", float("nan") if os.environ.get("TOY_NAN_SEED") == str(init) else acc)
""")


@pytest.fixture
def toy(tmp_path):
    p = tmp_path / "toy.py"
    p.write_text(TOY)
    return p


def run(cmd, *args, env=None, cwd=None, **kw):
    import os

    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, **kw)


def one_line_error(r, code=2):
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_plan_sets_only_the_varied_stream():
    assert plan(2, vary="all")[1].env == {"TWINRUN_SEED": "1"}
    assert plan(1, vary="data", base_seed=7)[0].env == {"TWINRUN_SEED": "7", "TWINRUN_SEED_DATA": "0"}
    assert plan(1, vary="aug-ment")[0].env["TWINRUN_SEED_AUG_MENT"] == "0"
    arms = plan(3, design="variance")
    assert [r.arm for r in arms] == ["init"] * 3 + ["data"] * 3 + ["none"] * 3
    assert {json.dumps(r.env) for r in arms if r.arm == "none"} == {'{"TWINRUN_SEED": "0"}'}


def test_sweep_records_runs_resumes_and_compares(twinrun_cmd, toy, tmp_path):
    db = tmp_path / "a.db"
    r = run(twinrun_cmd, "sweep", toy, "--seeds", 4, "--vary", "init", "--workers", 2, "-o", db, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["ok"], out["ran"], out["skipped"]) == (4, 4, 0)
    assert "[4/4]" in r.stderr  # progress on stderr, JSON alone on stdout
    with Results.open(db) as res:
        runs = res.runs(series=True)
        assert res.meta["script_sha256"] and res.meta["env"] and res.meta["state"] == "complete"
    assert sorted(x.seed for x in runs) == [0, 1, 2, 3]
    assert all(x.env["TWINRUN_SEED_INIT"] == str(x.seed) and x.env["TWINRUN_SEED"] == "0" for x in runs)
    assert len({x.metrics["accuracy"] for x in runs}) == 4
    assert runs[1].series["loss"] == [(0, 0.5), (1, 1 / 3), (2, 0.25)] and runs[1].metrics["loss"] == 0.25

    r = run(twinrun_cmd, "sweep", toy, "--seeds", 6, "--vary", "init", "-o", db, "--json")
    out = json.loads(r.stdout)
    assert (out["ran"], out["skipped"], out["ok"]) == (2, 4, 6)

    b = tmp_path / "b.db"
    assert run(twinrun_cmd, "sweep", toy, "--seeds", 6, "--vary", "init", "-o", b, "-q", "--", "0.1").returncode == 0
    r = run(twinrun_cmd, "compare", b, db, "--metric", "accuracy")
    assert r.returncode == 1, r.stderr
    assert "A beats B on accuracy" in r.stdout
    r = run(twinrun_cmd, "compare", db, b, "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["metrics"]["accuracy"]["verdict"].startswith("B beats A")
    assert doc["metrics"]["loss"]["direction"] == "lower is better"
    assert doc["metrics"]["loss"]["comparison"]["better"] is None  # same seeds, same losses
    r = run(twinrun_cmd, "compare", db, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["metrics"]["accuracy"]["n"] == 6


def test_compare_html_writes_the_page_and_refuses_a_file_that_is_not_a_report(toy, tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    for db, shift in ((a, "0.1"), (b, "0")):
        r = run_twinrun("sweep", toy, "--seeds", 4, "--vary", "init", "--workers", 2, "-o", db, "-q", "--", shift)
        assert r.returncode == 0, r.stderr
    page = tmp_path / "compare.html"
    r = run_twinrun("compare", a, b, "--metric", "accuracy", "--resamples", 500, "--json", "--html", page)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)   # stdout: the JSON document alone
    html = page.read_text(encoding="utf-8")
    assert json.loads(re.search(r'id="twinrun-document">(.*?)</script>', html, re.S).group(1)) == doc
    assert f"twinrun compare: wrote {page}" in r.stderr
    data = json.loads(re.search(r'id="twinrun-data">(.*?)</script>', html, re.S).group(1))
    assert [f["file"] for f in data["files"]] == ["a.db", "b.db"]   # the runs, read from both results files
    assert {arm: p["n"] for arm, p in data["profiles"]["accuracy"].items()} == {"A": 4, "B": 4}
    # One file, the terminal view, --quiet: no "wrote" line.
    one = tmp_path / "one.html"
    r = run_twinrun("compare", a, "--resamples", 500, "--html", one, "-q")
    assert r.returncode == 0 and "wrote" not in r.stderr and one.exists()
    # A file that is not a report: one line, exit 2, before the bootstrap, the file untouched.
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    r = run_twinrun("compare", a, b, "--html", notes)
    assert "not a twinrun report" in one_line_error(r) and "bootstrapping" not in r.stderr
    assert r.stdout == "" and notes.read_text() == "<p>my notes</p>"


def test_failed_runs_are_recorded_and_do_not_stop_the_sweep(twinrun_cmd, toy, tmp_path):
    db = tmp_path / "f.db"
    r = run(twinrun_cmd, "sweep", toy, "--seeds", 3, "--vary", "init", "-o", db, "--json", env={"TOY_FAIL_SEED": "1"})
    assert r.returncode == 3
    out = json.loads(r.stdout)
    assert (out["ok"], out["failed"]) == (2, 1)
    assert "boom at seed 1" in out["failures"][0]["error"]
    # Resume skips the failed run unless asked to retry it.
    r = run(twinrun_cmd, "sweep", toy, "--seeds", 3, "--vary", "init", "-o", db, "--json")
    assert json.loads(r.stdout)["ran"] == 0
    r = run(twinrun_cmd, "sweep", toy, "--seeds", 3, "--vary", "init", "-o", db, "--json", "--retry-failed")
    assert r.returncode == 0 and json.loads(r.stdout)["ran"] == 1


def test_nonfinite_metrics_are_reported_and_excluded(twinrun_cmd, toy, tmp_path):
    db = tmp_path / "n.db"
    run(twinrun_cmd, "sweep", toy, "--seeds", 4, "-o", db, "-q", env={"TOY_NAN_SEED": "2"}, check=True)
    r = run(twinrun_cmd, "compare", db, "--metric", "accuracy", "--json")
    doc = json.loads(r.stdout)["metrics"]["accuracy"]
    assert doc["n"] == 3 and doc["excluded"] == [{"arm": "all", "idx": 2, "seed": 2, "value": "nan"}]
    r = run(twinrun_cmd, "compare", db, "--metric", "accuracy")
    assert "excluded 1 run(s) with NaN/inf: seed 2 (nan)" in r.stdout


def test_bad_inputs_give_one_line_and_exit_2(twinrun_cmd, toy, tmp_path):
    db = tmp_path / "x.db"
    run(twinrun_cmd, "sweep", toy, "--seeds", 1, "-o", db, "-q", check=True)
    # another script into the same file
    other = tmp_path / "other.py"
    other.write_text(TOY)
    assert "holds a sweep of" in one_line_error(run(twinrun_cmd, "sweep", other, "--seeds", 2, "-o", db))
    # the same script, changed
    toy.write_text(TOY + "\n# edited\n")
    assert "changed since" in one_line_error(run(twinrun_cmd, "sweep", toy, "--seeds", 2, "-o", db))
    # fewer than 2 runs
    assert "need at least 2" in one_line_error(run(twinrun_cmd, "compare", db, "--metric", "accuracy"))
    # a metric that does not exist
    assert "available: accuracy, loss" in one_line_error(run(twinrun_cmd, "compare", db, db, "--metric", "acc"))
    # another schema
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    assert "schema version 99" in one_line_error(run(twinrun_cmd, "compare", db))
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    assert "not a twinrun sweep results file" in one_line_error(run(twinrun_cmd, "compare", junk))
    assert "does not exist" in one_line_error(run(twinrun_cmd, "sweep", tmp_path / "nope.py", "-o", db))


def test_unreachable_dask_scheduler(twinrun_cmd, toy, tmp_path):
    t0 = time.monotonic()
    r = run(twinrun_cmd, "sweep", toy, "--seeds", 2, "-o", tmp_path / "d.db",
            "--executor", "dask://127.0.0.1:9", "--dask-timeout", "2")
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in one_line_error(r)
    assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_dask_local_cluster_with_two_workers(twinrun_cmd, toy, tmp_path):
    db = tmp_path / "d.db"
    r = run(twinrun_cmd, "sweep", toy, "--seeds", 4, "--vary", "init", "--executor", "dask-local",
            "--workers", 2, "-o", db, "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["ok"] == 4
    with Results.open(db) as res:
        assert sorted(x.seed for x in res.runs()) == [0, 1, 2, 3]


def test_ctrl_c_leaves_a_consistent_file_and_resume_finishes(twinrun_cmd, toy, tmp_path):
    import os

    db = tmp_path / "c.db"
    cmd = [*twinrun_cmd, "sweep", str(toy), "--seeds", "8", "-o", str(db), "-q"]
    p = subprocess.Popen(cmd, env={**os.environ, "TOY_SLEEP": "0.7"}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if db.exists():
            try:
                with Results.open(db) as res:
                    if res.done():
                        break
            except Exception:
                pass
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130, err
    with Results.open(db) as res:
        runs = res.runs()
        assert res.meta["state"] == "interrupted"
    assert 1 <= len(runs) < 8
    assert all(x.status == "ok" and "accuracy" in x.metrics for x in runs)
    r = run(twinrun_cmd, "sweep", toy, "--seeds", 8, "-o", db, "--json")
    out = json.loads(r.stdout)
    assert out["skipped"] == len(runs) and out["ok"] == 8


def test_variance_design_attributes_the_spread_to_init(twinrun_cmd, toy, tmp_path):
    db = tmp_path / "v.db"
    r = run(twinrun_cmd, "sweep", toy, "--seeds", 8, "--design", "variance", "--workers", 2, "-o", db, "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)["variance"]["accuracy"]
    shares = {k: e["value"] for k, e in v["shares"].items()}
    assert shares["init"] > shares["data"] and shares["none"] == 0.0
    assert v["shares"]["init"]["low"] <= shares["init"] <= v["shares"]["init"]["high"]
    r = run(twinrun_cmd, "compare", db)
    assert r.returncode == 0 and "nondeterminism" in r.stdout


@pytest.mark.slow
def test_stacking_example_repeats_and_sweeps_against_a_single_cnn(twinrun_cmd, tmp_path):
    script = ROOT / "examples" / "stacking" / "stacking.py"
    once = [run([sys.executable, script, "--epochs", "2"], env={"TWINRUN_SEED_INIT": "1"}).stdout for _ in range(2)]
    assert once[0] == once[1] and "accuracy" in once[0]
    for name, extra in (("stack", []), ("cnn", ["--model", "cnn"])):
        r = run(twinrun_cmd, "sweep", script, "--seeds", 4, "--vary", "init", "--workers", 2,
                "-o", tmp_path / f"{name}.db", "--json", "--", "--epochs", "2", "--folds", "2", *extra, timeout=600)
        assert r.returncode == 0, r.stderr
        acc = json.loads(r.stdout)["arms"]["init"]["accuracy"]
        assert acc["n"] == 4 and acc["std"] > 0 and 0.8 < acc["mean"] <= 1.0
    r = run(twinrun_cmd, "compare", tmp_path / "stack.db", tmp_path / "cnn.db", "--json")
    assert r.returncode in (0, 1)
    assert json.loads(r.stdout)["metrics"]["accuracy"]["comparison"]["n_a"] == 4
