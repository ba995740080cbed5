"""Issue 12, black box: what the command line shows and how it ends, for hostile names and bad inputs.

- strings that came from a file or a script are shown with control characters escaped and names capped;
- each input that used to end in "internal error ... please report it" gets its own one-line message
  (exit 2) naming the file or option;
- ``--threads``, ``--timeout`` and ``--keep-going`` are validated; ``run`` has a ``--timeout``;
- two sweeps on one results file never run a seed twice; a SIGKILLed sweep takes its scripts with it
  and leaves no temporary files.

Every command runs as ``python -m twinrun ...`` in a fresh process under time and memory limits.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from hardening_support import (
    DEEP,
    NP_SCRIPT,
    TOY_SCRIPT,
    assert_clean,
    assert_one_line_error,
    can_drop_file_capabilities,
    copy,
    edit,
    make_env,
    make_results,
    make_trace,
    twinrun,
    write_script,
)
from helpers import TWINRUN

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("made")
    return {"trace": make_trace(d), "results": make_results(d), "env": make_env(d),
            "script": write_script(d, "np_train.py", NP_SCRIPT), "toy": write_script(d, "toy.py", TOY_SCRIPT)}


# --- terminal escape injection ---------------------------------------------------------------------------

EVIL = "evil\x1b]52;c;cHduZWQ=\x07\x1b[2J\x07\x1b[31m\r\x08" + "A" * 5000
CONTROL = [chr(c) for c in range(32) if chr(c) not in "\n\t"] + ["\x7f", "\x9b"]


def _no_control(text: str) -> None:
    bad = sorted({repr(c) for c in text if c in CONTROL})
    assert not bad, f"raw control characters reach the terminal: {bad}"
    assert "A" * 300 not in text, "a 5,000-character name is shown whole"


ESC_SCRIPT = textwrap.dedent(f"""
    import os
    import numpy as np
    from twinrun.recording import active_recorder
    rec = active_recorder()
    for step in range(2):
        # differs on every run: the first divergence is at this name
        rec.event("forward", {EVIL!r}, np.full(4, float(os.getpid() % 997), np.float32))
        rec.end_step()
""")


@pytest.fixture(scope="module")
def esc(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("esc")
    script = write_script(d, "esc.py", ESC_SCRIPT)
    a, b = d / "a.trace", d / "b.trace"
    for t in (a, b):
        assert twinrun("run", "-q", "-o", t, script, cwd=d).returncode == 0
    return {"dir": d, "script": script, "a": a, "b": b}


@pytest.mark.parametrize("command", ["diff", "check", "doctor"])
def test_layer_names_from_a_trace_are_shown_escaped_and_capped(esc, command):
    if command == "diff":
        r = twinrun("diff", esc["a"], esc["b"], cwd=esc["dir"])
    elif command == "check":
        r = twinrun("check", "--max-steps", 1, esc["script"], cwd=esc["dir"])
    else:
        r = twinrun("doctor", "--max-steps", 1, "--no-portability", esc["script"], cwd=esc["dir"], timeout=300)
    assert_clean(r, (1,))
    assert "evil" in r.stdout, "the name is still shown"
    _no_control(r.stdout + r.stderr)


def test_env_diff_shows_values_from_files_escaped(tmp_path, made):
    a, b = json.loads(made["env"].read_text()), json.loads(made["env"].read_text())
    b["env_vars"]["OMP_NUM_THREADS"] = EVIL
    b["cpu"]["model"] = EVIL
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    r = twinrun("env", "diff", "a.json", "b.json", cwd=tmp_path)
    assert_clean(r, (0, 1))
    _no_control(r.stdout + r.stderr)


def test_metric_names_and_error_tails_from_scripts_are_shown_escaped(tmp_path):
    script = write_script(tmp_path, "m.py", textwrap.dedent(f"""
        import os, sys
        from twinrun.metrics import log_metric
        seed = int(os.environ["TWINRUN_SEED"])
        log_metric({EVIL[:40]!r}, 0.5 + seed / 10)
        if seed == 2:
            sys.exit({EVIL!r})
    """))
    r = twinrun("sweep", "--seeds", 3, "-o", "m.db", script, cwd=tmp_path)
    assert_clean(r, (3,))
    _no_control(r.stdout + r.stderr)
    r = twinrun("compare", "m.db", cwd=tmp_path)
    assert_clean(r, (0, 2))
    _no_control(r.stdout + r.stderr)


# --- inputs that ended in "internal error" ------------------------------------------------------------------

def _trace_edit(*sql):
    return lambda good, dst: edit(copy(good, dst), *sql)


# Trace schema 2 (make_trace's NP_SCRIPT): each step is one row of events (idx 0, the input with its
# per-sample digests) and one packed row (idx 1-3: layer.0, loss, w), its kept values one blob in
# step_values. diff skips a step whose summaries are equal in both traces without reading it, so a case
# that corrupts an event also changes its step's summary (READ), and one that needs a divergence to reach
# a kept value zeroes the digest of layer.0 (the first packed event: DIVERGE).
def READ(step: int) -> str:
    return f"UPDATE steps SET summary = 'changed' WHERE step = {step}"


DIVERGE = "UPDATE packed SET digests = '" + "0" * 32 + "' || substr(digests, 33) WHERE step = 0"

TRACE_CASES = {
    "header-5": _trace_edit("UPDATE meta SET value = '5' WHERE key = 'header'"),
    "header-list": _trace_edit("UPDATE meta SET value = '[]' WHERE key = 'header'"),
    "header-null": _trace_edit("UPDATE meta SET value = 'null' WHERE key = 'header'"),
    "header-deep-json": _trace_edit(("UPDATE meta SET value = ? WHERE key = 'header'", (DEEP,))),
    "shape-deep-json": _trace_edit(("UPDATE events SET shape = ? WHERE step = 0 AND idx = 0", (DEEP,)), READ(0)),
    "sample-digests-int": _trace_edit("UPDATE events SET sample_digests = 5 WHERE step = 0 AND idx = 0", READ(0)),
    "sample-digests-text": _trace_edit("UPDATE events SET sample_digests = 'abc' WHERE step = 0 AND idx = 0", READ(0)),
    "value-text": _trace_edit("UPDATE step_values SET data = 'abc' WHERE step = 0", DIVERGE, READ(0)),
    "value-int": _trace_edit("UPDATE step_values SET data = 7 WHERE step = 0", DIVERGE, READ(0)),
    "negative-shape": _trace_edit("UPDATE events SET shape = '[-1]', digest = '00' WHERE step = 0 AND idx = 0",
                                  READ(0)),
    "huge-shape": _trace_edit("UPDATE events SET shape = '[4294967296, 4294967296]', digest = '00' "
                              "WHERE step = 0 AND idx = 0", READ(0)),
    "step-as-text": _trace_edit("UPDATE events SET step = 'zero' WHERE step = 0 AND idx = 0"),
    "digest-blob": _trace_edit("UPDATE events SET digest = x'00ff' WHERE step = 1 AND idx = 0", READ(1)),
    # the same attacks on a packed row
    "packed-names-deep-json": _trace_edit(("UPDATE packed SET names = ? WHERE step = 0", (DEEP,)), READ(0)),
    "packed-negative-shape": _trace_edit("UPDATE packed SET shapes = '[[-1], [-1], [-1]]' WHERE step = 0", READ(0)),
    "packed-huge-shape": _trace_edit("UPDATE packed SET shapes = '[[4294967296, 4294967296]]' WHERE step = 0",
                                     READ(0)),
    "packed-stats-text": _trace_edit("UPDATE packed SET stats = 'abc' WHERE step = 0", READ(0)),
    "packed-offset-out-of-range": _trace_edit("UPDATE packed SET value_off = x'ffffffffffffff7f' || "
                                              "substr(value_off, 9) WHERE step = 0", DIVERGE, READ(0)),
    "summary-phases-unknown": _trace_edit("UPDATE steps SET phases = 'evil' WHERE step = 0"),
}


@pytest.mark.parametrize("case", sorted(TRACE_CASES))
def test_a_corrupt_trace_gets_a_one_line_message_naming_the_file(tmp_path, made, case):
    bad = TRACE_CASES[case](made["trace"], tmp_path / f"{case}.trace")
    r = twinrun("diff", bad, made["trace"], cwd=tmp_path)
    line = assert_one_line_error(r)
    assert bad.name in line, f"the message does not name the file: {line}"


def test_env_diff_of_a_deeply_nested_file(tmp_path, made):
    (tmp_path / "deep.json").write_text('{"schema": "twinrun.env/1", "cpu": ' + DEEP + "}")
    r = twinrun("env", "diff", "deep.json", made["env"], cwd=tmp_path)
    line = assert_one_line_error(r)
    assert "deep.json" in line


@pytest.mark.skipif(not can_drop_file_capabilities(), reason="cannot make a file unreadable here")
@pytest.mark.parametrize("command", ["diff", "compare", "env-diff", "check-against"])
def test_an_unreadable_file_gets_a_one_line_message(tmp_path, made, command):
    kind = {"diff": "trace", "compare": "results", "env-diff": "env", "check-against": "trace"}[command]
    locked = copy(made[kind], tmp_path / f"locked-{kind}")
    locked.chmod(0)
    args = {"diff": ("diff", locked, made["trace"]), "compare": ("compare", locked),
            "env-diff": ("env", "diff", locked, made["env"]),
            "check-against": ("check", "--against", locked, made["script"])}[command]
    r = twinrun(*args, cwd=tmp_path, drop_dac=True)
    line = assert_one_line_error(r)
    assert locked.name in line and "permission" in line.lower()


def test_compare_on_a_trace(tmp_path, made):
    line = assert_one_line_error(twinrun("compare", made["trace"], cwd=tmp_path))
    assert made["trace"].name in line


def test_sweep_o_on_a_trace(tmp_path, made):
    t = copy(made["trace"], tmp_path / "t.trace")
    line = assert_one_line_error(twinrun("sweep", "--seeds", 2, "-o", t, made["toy"], cwd=tmp_path))
    assert "t.trace" in line


def test_run_o_a_folder(tmp_path, made):
    (tmp_path / "adir").mkdir()
    line = assert_one_line_error(twinrun("run", "-o", "adir", made["script"], cwd=tmp_path))
    assert "adir" in line


def test_check_keep_traces_where_no_folder_can_be_made(tmp_path, made):
    line = assert_one_line_error(twinrun("check", "--keep-traces", "/proc/x", made["script"], cwd=tmp_path))
    assert "/proc/x" in line


@pytest.mark.parametrize("command, value", [(c, v) for c in ("check", "doctor", "sweep", "run")
                                            for v in ("nan", "inf", "-inf")])
def test_timeout_nan_or_infinite_is_refused(tmp_path, made, command, value):
    script = made["toy"] if command == "sweep" else made["script"]
    extra = ("--seeds", 2, "-o", tmp_path / "s.db") if command == "sweep" else ()
    line = assert_one_line_error(twinrun(command, f"--timeout={value}", *extra, script, cwd=tmp_path))
    assert "--timeout" in line


def test_compare_negative_seed(tmp_path, made):
    line = assert_one_line_error(twinrun("compare", "--seed", -1, made["results"], cwd=tmp_path))
    assert "--seed" in line


def test_sweep_with_a_billion_seeds_is_refused_at_once(tmp_path, made):
    r = twinrun("sweep", "--seeds", 10**9, "-o", tmp_path / "s.db", made["toy"], cwd=tmp_path, timeout=60)
    line = assert_one_line_error(r)
    assert "--seeds" in line
    assert r.grew_mb < 250 and r.seconds < 30


def test_compare_with_a_trillion_resamples_is_refused_at_once(tmp_path, made):
    r = twinrun("compare", "--resamples", 10**12, made["results"], cwd=tmp_path, timeout=60)
    line = assert_one_line_error(r)
    assert "--resamples" in line
    assert r.grew_mb < 250 and r.seconds < 30


@pytest.mark.parametrize("case", ["header-5", "sample-digests-int", "value-text"])
def test_check_against_a_corrupt_reference_fails_before_the_script_starts(tmp_path, made, case):
    ref = TRACE_CASES[case](made["trace"], tmp_path / "ref.trace")
    marker = tmp_path / "started"
    script = write_script(tmp_path, "s.py", f"open({str(marker)!r}, 'w').close()\n" + NP_SCRIPT)
    line = assert_one_line_error(twinrun("check", "--against", ref, script, cwd=tmp_path))
    assert "ref.trace" in line
    assert not marker.exists(), "the script ran against a reference that cannot be read"


def test_a_reference_found_bad_mid_run_ends_the_run_even_under_except_exception(tmp_path, made):
    """A reference read lazily (twinrun.record(against=...)) that holds a bad value: the error is not
    raised inside the script's loop, where `except Exception` would swallow it, but ends the run."""
    import numpy as np

    from twinrun import record
    from twinrun._errors import BadTraceError
    from twinrun.trace import Trace

    ref = TRACE_CASES["value-text"](made["trace"], tmp_path / "ref.trace")
    live = tmp_path / "live.trace"
    w = np.arange(8, dtype=np.float32)
    steps_ended = []
    with pytest.raises(BadTraceError, match=r"ref\.trace"), record(live, against=ref) as rec:
        for step in range(3):
            try:   # the script swallows every Exception
                rec.event("input", "x", np.full((4, 3), step, np.float32), per_sample=True)
                rec.event("forward", "layer.0", w * 2)
                rec.event("loss", "loss", np.float32(w.sum()))
                w = w + 1
                rec.event("param", "w", w)
                rec.end_step()
                steps_ended.append(step)
            except Exception:
                pass
    assert steps_ended == []
    with Trace.open(live) as t:
        assert t.status == "failed"


def test_two_sweeps_started_at_once_on_a_new_file(tmp_path, made):
    procs = _start_sweeps(tmp_path, made["toy"], "new.db", seeds=4, sleep=0.2)
    results = [_finish(p) for p in procs]
    for rc, _out, err in results:
        assert rc in (0, 2), err
        assert "internal error" not in err and "Traceback" not in err, err
    assert 0 in [rc for rc, _, _ in results]
    runs = sqlite3.connect(tmp_path / "new.db").execute("SELECT idx, status FROM runs ORDER BY idx").fetchall()
    assert runs == [(i, "ok") for i in range(4)]


# --- --threads, --timeout, --keep-going --------------------------------------------------------------------

TORCH_SCRIPT = "import torch\nx = torch.randn(256, 256)\nprint(float((x @ x).sum()))\n"


def test_run_threads_100000_is_refused(tmp_path):
    script = write_script(tmp_path, "t.py", TORCH_SCRIPT)
    r = twinrun("run", "--threads", 100_000, script, cwd=tmp_path, timeout=120)
    line = assert_one_line_error(r)
    assert "--threads" in line


def test_run_timeout_ends_a_script_that_never_completes_a_step(tmp_path):
    hang = write_script(tmp_path, "hang.py", "import time\nwhile True:\n    time.sleep(1)\n")
    t0 = time.monotonic()
    r = twinrun("run", "--timeout", 3, "-o", "h.trace", hang, cwd=tmp_path, timeout=120)
    assert r.returncode == 3, str(r)
    assert "timed out" in r.stderr or "timeout" in r.stderr, str(r)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("command, value", [(c, v) for c in ("run", "check", "sweep", "doctor")
                                            for v in ("0", "-1", "-0.5")])
def test_timeout_zero_or_negative_is_refused(tmp_path, made, command, value):
    script = made["toy"] if command == "sweep" else made["script"]
    extra = ("--seeds", 2, "-o", tmp_path / "s.db") if command == "sweep" else ()
    line = assert_one_line_error(twinrun(command, f"--timeout={value}", *extra, script, cwd=tmp_path))
    assert "--timeout" in line
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("command", ["run", "check"])
def test_keep_going_without_against_is_refused(tmp_path, made, command):
    line = assert_one_line_error(twinrun(command, "--keep-going", made["script"], cwd=tmp_path))
    assert "--keep-going" in line and "--against" in line


# --- concurrent sweeps, and a killed sweep -----------------------------------------------------------------

def _start_sweeps(folder: Path, toy: Path, out: str, *, seeds: int, sleep: float, n: int = 2,
                  extra_env: dict | None = None, workers: int = 1) -> list[subprocess.Popen]:
    env = {**os.environ, "TOY_LOG": str(folder / "runs.log"), "TOY_SLEEP": str(sleep), **(extra_env or {})}
    return [subprocess.Popen([*TWINRUN, "sweep", "-q", "--seeds", str(seeds), "--workers", str(workers), "-o", out,
                              str(toy)], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True) for _ in range(n)]


def _finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    return p.returncode, out, err


def test_two_concurrent_sweeps_on_one_results_file_never_run_a_seed_twice(tmp_path, made):
    make_results(tmp_path, "r.db", seeds=1, script=copy(made["toy"], tmp_path / "toy.py"))
    procs = _start_sweeps(tmp_path, tmp_path / "toy.py", "r.db", seeds=6, sleep=0.5)
    results = [_finish(p) for p in procs]
    for rc, _out, err in results:
        assert rc in (0, 2), err
        assert "internal error" not in err and "Traceback" not in err, err
    seeds = [int(line.split()[0]) for line in (tmp_path / "runs.log").read_text().splitlines()]
    assert sorted(seeds) == sorted(set(seeds)), f"seeds run twice: {sorted(seeds)}"
    assert sorted(seeds) == list(range(1, 6))
    runs = sqlite3.connect(tmp_path / "r.db").execute("SELECT idx, status FROM runs ORDER BY idx").fetchall()
    assert runs == [(i, "ok") for i in range(6)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigkill_of_sweep_kills_its_scripts_and_leaves_no_temporary_files(tmp_path, made):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    toy = copy(made["toy"], tmp_path / "toy.py")
    [proc] = _start_sweeps(tmp_path, toy, "r.db", seeds=4, sleep=120, n=1, workers=2, extra_env={"TMPDIR": str(tmp)})
    log = tmp_path / "runs.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.1)
    pids = [int(line.split()[1]) for line in log.read_text().splitlines()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "the sweep's scripts outlive it"
        left = [f for f in os.listdir(tmp) if f.startswith("twinrun-")]
        assert left == [], f"left behind in TMPDIR: {left}"
    finally:
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
