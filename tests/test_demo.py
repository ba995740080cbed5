"""`twinrun demo` end to end in a fresh process: seeded runs repeat, 1 vs 2 threads and unseeded
runs part where they should, and doctor names the unseeded cause."""

from __future__ import annotations

import json
import subprocess


def test_demo_json_tells_the_whole_story(twinrun_cmd, tmp_path):
    proc = subprocess.run([*twinrun_cmd, "demo", "--json", "--steps", "4", "--keep", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True
    seeded, threads, unseeded = doc["scenarios"]
    assert seeded["identical"] is True
    assert threads["identical"] is False
    fd = threads["comparison"]["first_divergence"]
    assert (fd["step"], fd["phase"], fd["name"]) == (0, "grad", "classifier.weight")
    assert unseeded["identical"] is False
    assert unseeded["comparison"]["first_divergence"]["phase"] == "init"
    assert doc["diagnosis"]["cause"] == "unseeded-init" and doc["diagnosis"]["confirmed"] is True
    assert doc["seeds"]["root"] == 0
    assert any(s["name"] == "torch.use_deterministic_algorithms" for s in doc["determinism"]["settings"])
    assert (tmp_path / "seeded-a.trace").exists()


def test_demo_rejects_bad_steps(twinrun_cmd):
    proc = subprocess.run([*twinrun_cmd, "demo", "--steps", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--steps" in proc.stderr
