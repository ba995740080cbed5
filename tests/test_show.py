"""``twinrun show``: what a trace holds, status and events per phase per step; bad input is one line."""

from __future__ import annotations

import json

import numpy as np

from helpers import run_twinrun
from twinrun.recording import record
from twinrun.trace import TraceWriter


def test_show_counts_events_per_phase_and_step(tmp_path):
    path = tmp_path / "a.trace"
    with record(path, max_steps=3) as rec:
        for step in range(10):
            if step == 0:
                rec.event("init", "w", np.zeros(3, np.float32))
            rec.event("input", "x", np.ones((4, 2), np.float32), per_sample=True)
            rec.event("grad", "w", np.full(3, step, np.float32))
            rec.event("grad", "w", np.full(3, step, np.float32))   # a second call: w#1
            rec.event("param", "w", np.full(3, step, np.float32))
            rec.end_step()
    r = run_twinrun("show", "--json", path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["steps"], doc["status"], doc["events"]) == (3, "stopped", 1 + 3 * 4)
    assert doc["per_step"][0] == {"step": 0, "events": {"init": 1, "input": 1, "grad": 2, "param": 1}}
    assert doc["per_step"][2] == {"step": 2, "events": {"input": 1, "grad": 2, "param": 1}}
    text = run_twinrun("show", path)
    assert text.returncode == 0 and "3 steps recorded" in text.stdout and "stopped" in text.stdout


def test_a_cut_off_and_an_empty_trace_say_so(tmp_path):
    cut = tmp_path / "cut.trace"
    w = TraceWriter(cut, {})
    w.add(0, "param", "w", np.zeros(2))
    w.commit_step(0)   # never closed: what a killed run leaves
    doc = json.loads(run_twinrun("show", "--json", cut).stdout)
    assert doc["status"] == "cut-off" and doc["steps"] == 1
    empty = tmp_path / "empty.trace"
    TraceWriter(empty, {}).close("complete")
    r = run_twinrun("show", empty)
    assert r.returncode == 0 and "0 steps recorded" in r.stdout and "no training step was recorded" in r.stdout
    w.close("complete")


def test_show_of_a_file_that_is_not_a_trace_is_one_line_exit_2(tmp_path):
    junk = tmp_path / "junk.trace"
    junk.write_text("hello")
    r = run_twinrun("show", junk)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a twinrun trace" in r.stderr
