"""twinrun doctor on real PyTorch scripts (examples/nondeterminism/): the cause, where the runs part,
and that the fix it proposes makes `twinrun check` pass. Every run is a real fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import run_twinrun
from twinrun import _channel
from twinrun.doctor import diagnose
from twinrun.frameworks.torch.portability import isa_variants
from twinrun.interventions import NAMES, apply

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples" / "nondeterminism"
FIXED = EX / "fixed"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def _user_env(monkeypatch):
    # Doctor runs the script "as the user would": make sure this shell does not already fix what is tested.
    for var in ("PYTHONHASHSEED", "TWINRUN_SEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY",
                "ONEDNN_MAX_CPU_ISA", "MKL_CBWR"):
        monkeypatch.delenv(var, raising=False)


def twinrun(*args, env=None):
    return run_twinrun(*args, env=env, timeout=600)


def check_passes(script: Path) -> None:
    r = twinrun("check", "--max-steps", 3, "--json", script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["identical"] is True


# (example, cause, detail, phase of the first divergence, words the fix must hold, max steps)
CASES = [
    ("no_seed", "unseeded-init", None, "init", ["torch.manual_seed(0)", "no_seed.py:31"], 3),
    ("numpy_augment", "data-pipeline", "content", "input", ["numpy.random.default_rng()", "numpy_augment.py:"], 3),
    ("unseeded_shuffle", "data-pipeline", "order", "input", ["generator=torch.Generator().manual_seed(0)",
                                                             "unseeded_shuffle.py:38"], 3),
    ("set_order", "hash-seed", None, "input", ["sorted(", "PYTHONHASHSEED"], 3),
    ("nondeterministic_kernel", "nondeterministic-kernel", None, "grad", ["twinrun.deterministic()", "`table`"], 5),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, cause, detail, phase, words, steps", CASES, ids=[c[0] for c in CASES])
def test_doctor_names_the_cause_and_the_fix_works(name, cause, detail, phase, words, steps):
    d = diagnose(EX / f"{name}.py", max_steps=steps)
    assert (d.verdict, d.cause) == ("not-reproducible", cause), d.summary
    if detail is not None:
        assert d.detail == detail
    assert d.first_divergence.phase == phase
    assert d.confirmed, "a cause is named only when an intervention removed the divergence"
    assert any(e.identical for e in d.evidence[1:]), "the confirming experiment is in the evidence"
    assert d.portability is None
    for w in words:
        assert w in d.fix
    if cause == "nondeterministic-kernel":
        assert d.first_divergence.name == "table"
    check_passes(FIXED / f"{name}.py")


@pytest.mark.slow
def test_completion_order_is_proven_from_the_trace_through_the_cli():
    r = twinrun("doctor", "--json", "--max-steps", 5, EX / "imap_unordered.py")
    assert r.returncode == 1, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert (d["cause"], d["detail"], d["first_divergence"]["phase"]) == ("data-pipeline", "order", "input")
    assert d["confirmed"] is False          # no seed removes it: the evidence is the trace itself
    assert [e["name"] for e in d["evidence"]][:2] == ["baseline", "trace"]
    assert "`imap_unordered` at " in d["fix"] and "imap_unordered.py:" in d["fix"] and ".imap(" in d["fix"]
    assert d["source"]["edit"]["new"].count("imap(") == 1
    check_passes(FIXED / "imap_unordered.py")


@pytest.mark.slow
def test_reproducible_script_with_portability_through_the_cli():
    r = twinrun("doctor", "--json", "--max-steps", 3, EX / "reproducible.py")
    assert r.returncode == 0, r.stderr[-2000:]
    assert set(json.loads(r.stdout)) >= {"verdict", "cause", "detail", "first_divergence", "fix", "evidence",
                                         "portability"}
    d = json.loads(r.stdout)
    assert (d["verdict"], d["cause"], d["first_divergence"]) == ("reproducible", "reproducible", None)
    isa = d["portability"]["cpu-isa"]
    if isa["capability"] == "AVX512":   # measured there: its small layers give equal bits at 1 and 2 threads
        assert d["portability"]["thread-count"]["stable"] is True
    else:
        assert d["portability"]["thread-count"]["stable"] in (True, False)
    plans, _ = isa_variants()
    assert [row["setting"] for row in isa["runs"]] == [p.name for p in plans]
    assert not any("avx512" in row["setting"].lower() for row in isa["runs"])   # never above the CPU
    if isa["runs"]:
        assert isa["stable"] is (all(row["identical"] for row in isa["runs"]))
    # No false alarm: a second time, in-process, still reproducible.
    assert diagnose(EX / "reproducible.py", max_steps=3, portability=False).verdict == "reproducible"


@pytest.mark.slow
def test_thread_sensitive_model_parts_between_thread_counts_and_pinning_fixes_it():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores to compare 1 and 2 threads")
    d = diagnose(EX / "thread_sensitive.py", max_steps=3, portability=("thread-count",))
    assert (d.verdict, d.cause) == ("reproducible", "reproducible")
    tc = d.portability["thread-count"]
    assert tc["stable"] is False
    assert tc["runs"][0]["first_divergence"]["phase"] == "grad"
    assert "twinrun.deterministic(threads=N)" in d.fix
    fixed = diagnose(FIXED / "thread_sensitive.py", max_steps=3, portability=("thread-count",))
    assert fixed.portability["thread-count"]["stable"] is True


def test_no_emulable_isa_is_said_not_skipped(monkeypatch):
    # The user already runs the lowest levels: nothing lower can be emulated, and doctor says so.
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    d = diagnose(EX / "reproducible.py", max_steps=2, portability=("cpu-isa",))
    isa = d.portability["cpu-isa"]
    assert isa["runs"] == [] and isa["stable"] is None
    assert isa["note"].startswith("no lower CPU instruction set can be emulated on this machine")
    assert "ATEN_CPU_CAPABILITY" in isa["note"] and "MKL_CBWR: already set" in isa["note"]
    assert d.reruns == 2
    # Without PyTorch there is nothing to emulate either.
    plans, why = isa_variants(probe_result={}, flags=set(), environ={})
    assert plans == [] and "not installed" in why[0]


def test_isa_ladder_never_goes_above_the_cpu():
    probe = {"capability": "AVX2", "mkl": True, "mkldnn": True, "threads": 2}
    plans, _ = isa_variants(probe_result=probe, flags={"avx", "avx2", "fma", "sse4_1"}, environ={})
    assert [p.name for p in plans] == ["ATEN_CPU_CAPABILITY=default", "ONEDNN_MAX_CPU_ISA=AVX",
                                       "ONEDNN_MAX_CPU_ISA=SSE41", "MKL_CBWR=COMPATIBLE"]


def test_a_script_failing_in_one_experiment_exits_3_naming_it(tmp_path):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("the script fails only single-threaded, which needs a 2-core default")
    src = (EX / "reproducible.py").read_text().replace(
        "torch.manual_seed(0)\n",
        "torch.manual_seed(0)\nif torch.get_num_threads() == 1:\n    raise RuntimeError('refuses one thread')\n")
    script = tmp_path / "picky.py"
    script.write_text(src)
    r = twinrun("doctor", "--max-steps", 2, script)
    assert r.returncode == 3, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "experiment 'threads-1'" in last and "refuses one thread" in last
    assert "Traceback" not in last


def test_bad_input_is_one_line_exit_2(tmp_path):
    r = twinrun("doctor", tmp_path / "missing.py")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = twinrun("doctor", "--max-steps", 0, EX / "reproducible.py")
    assert r.returncode == 2 and "--max-steps" in r.stderr
    junk = tmp_path / "junk.trace"
    junk.write_text("not a trace")
    r = twinrun("doctor", "--against", junk, EX / "reproducible.py")
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_against_a_trace_of_another_model_is_a_structural_mismatch(tmp_path):
    ref = tmp_path / "other.trace"
    r = twinrun("run", "-o", ref, "--max-steps", 2, EX / "reproducible.py")
    assert r.returncode == 0, r.stderr
    r = twinrun("doctor", "--max-steps", 2, "--against", ref, EX / "thread_sensitive.py")
    assert r.returncode == 2, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert "does not record the same model" in line and "Traceback" not in r.stderr


@pytest.mark.slow
def test_against_a_lower_isa_machine_is_reproduced_by_emulation(tmp_path):
    plans, _ = isa_variants()
    aten = [p for p in plans if p.name.startswith("ATEN_CPU_CAPABILITY=")]
    if not aten:
        pytest.skip("this CPU runs PyTorch's lowest kernel level: no other machine to emulate")
    level = aten[0].env["ATEN_CPU_CAPABILITY"]     # the highest level below this CPU's
    ref = tmp_path / "other-machine.trace"
    r = twinrun("run", "-o", ref, "--max-steps", 3, EX / "reproducible.py", env={"ATEN_CPU_CAPABILITY": level})
    assert r.returncode == 0, r.stderr
    r = twinrun("doctor", "--json", "--max-steps", 3, "--against", ref, EX / "reproducible.py")
    assert r.returncode == 1, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert (d["verdict"], d["cause"], d["confirmed"]) == ("not-reproducible", "environment", True)
    assert d["environment"][0]["key"].endswith("ATEN_CPU_CAPABILITY")
    assert f"ATEN_CPU_CAPABILITY={level}" in d["fix"]
    emulated = [e for e in d["evidence"] if e["name"] == f"ATEN_CPU_CAPABILITY={level}"]
    assert emulated and emulated[0]["identical"] is True


# --- interventions, in fresh processes (they patch process-wide state) ---------------------------------

def test_interventions_seed_only_what_was_left_unseeded(tmp_path):
    script = tmp_path / "draws.py"
    script.write_text(textwrap.dedent("""
        import random, numpy as np
        a = np.random.default_rng().integers(1 << 30)
        b = np.random.default_rng(7).integers(1 << 30)
        c = random.Random().random()
        print(a, b, c, np.random.rand())
    """))
    reports = [tmp_path / f"reports-{i}.jsonl" for i in range(2)]
    runs = [subprocess.run([sys.executable, "-c",
                            "import sys, runpy, twinrun.interventions as iv; iv.apply(sys.argv[1]); "
                            "runpy.run_path(sys.argv[2], run_name='__main__')", "seed-numpy,seed-random", str(script)],
                           capture_output=True, text=True, cwd=tmp_path, env={**os.environ, _channel.ENV: str(rep)})
            for rep in reports]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout
    acted = _channel.read(reports[0])
    assert {(a["name"], a["what"]) for a in acted} == {("seed-numpy", "numpy.random.default_rng() without a seed"),
                                                      ("seed-random", "random.Random() without a seed"),
                                                      ("seed-numpy", "numpy.random.rand draws from an unseeded RNG")}
    assert [a.get("direct") for a in acted if a.get("draw")] == [True]   # the program drew itself
    assert all(a["site"].startswith("draws.py:") for a in acted)
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    seeded_b = runs[0].stdout.split()[1]
    assert plain.stdout.split()[1] == seeded_b   # an explicit seed is left alone


def test_unknown_intervention_is_a_usage_error():
    with pytest.raises(ValueError, match="unknown intervention 'seed-everything'"):
        apply(["seed-everything"])
    assert NAMES == ("seed-loaders", "seed-torch", "seed-numpy", "seed-random", "seed-tf-data", "seed-tf-random",
                     "fixed-clock", "later-clock", "one-cpu", "ddp-small-buckets")
