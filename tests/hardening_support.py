"""What the hardening tests (issue 12) share: small real scripts, real traces and results files made by
the command line, hostile variants of them, and running twinrun in a fresh process under time and
memory limits.

Every file here is made by twinrun itself (``twinrun run``, ``twinrun sweep``, ``twinrun env``) and then
changed with plain SQLite or byte edits, as an attacker or a bad disk would.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import TWINRUN

# A traced NumPy "training" script: three steps, no framework import, so a run costs ~0.3 s.
NP_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from twinrun.recording import active_recorder
    rec = active_recorder()
    w = np.arange(8, dtype=np.float32)
    for step in range(3):
        rec.event("input", "x", np.full((4, 3), step, np.float32), per_sample=True)
        rec.event("forward", "layer.0", w * 2)
        rec.event("loss", "loss", np.float32(w.sum()))
        w = w + 1
        rec.event("param", "w", w)
        rec.end_step()
""")

# Steps forever, printing each committed step: the run to SIGKILL mid-way.
LOOP_SCRIPT = textwrap.dedent("""
    import time
    import numpy as np
    from twinrun.recording import active_recorder
    rec = active_recorder()
    for step in range(1_000_000):
        rec.event("input", "x", np.full((4, 3), step, np.float32), per_sample=True)
        rec.event("param", "w", np.arange(1000, dtype=np.float32) * step)
        rec.end_step()
        print(step, flush=True)
        time.sleep(0.02)
""")

# A sweep script: reads its seed, logs two metrics; optional sleep, pid file and run log.
TOY_SCRIPT = textwrap.dedent("""
    import os, random, sys, time
    from twinrun.metrics import log_metric
    seed = int(os.environ.get("TWINRUN_SEED_INIT", os.environ.get("TWINRUN_SEED", "0")))
    log = os.environ.get("TOY_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{seed} {os.getpid()}\\n")
    time.sleep(float(os.environ.get("TOY_SLEEP", "0")))
    for step in range(3):
        log_metric("loss", 1.0 / (step + 1 + seed), step=step)
    log_metric("accuracy", 0.9 + 0.01 * random.Random(seed).gauss(0, 1))
""")

MEMORY_LIMIT = 2 * 2**30      # address space of each twinrun process (and its children)
RSS_BOUND_MB = 500            # how far a reader's peak RSS may rise: one that decodes what it should stays far below


def write_script(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(text)
    return p


def sha(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def siblings(path: str | os.PathLike) -> list[str]:
    """The SQLite side files that exist beside ``path``."""
    return [s for s in ("-wal", "-shm", "-journal") if os.path.lexists(f"{path}{s}")]


@dataclass
class Result:
    args: list[str]
    returncode: int | None        # None: killed at the time limit
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float             # peak RSS of the process and the children it reaped ...
    baseline_mb: float            # ... which Linux counts from this test process's own peak at the fork

    @property
    def grew_mb(self) -> float:
        """How far the command's peak RSS rose above what it inherited (0 when it stayed below)."""
        return max(0.0, self.max_rss_mb - self.baseline_mb)

    def __str__(self) -> str:
        return (f"twinrun {' '.join(self.args)} -> {self.returncode} in {self.seconds:.1f}s, "
                f"peak {self.max_rss_mb:.0f} MB (inherited {self.baseline_mb:.0f})\n"
                f"stdout: {self.stdout[-1500:]}\nstderr: {self.stderr[-3000:]}")


def _limits(memory: int | None, drop_dac: bool):
    def preexec() -> None:
        os.setsid()   # its own process group: a timeout kills it and everything it started
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop_dac:
            drop_file_capabilities()
    return preexec


def drop_file_capabilities() -> None:
    """In a child about to exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set,
    so that even root is refused a mode-000 file after exec (tests here run as root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2):   # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def can_drop_file_capabilities() -> bool:
    """Whether a child can be refused a mode-000 file (not root, or root able to drop its capabilities)."""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run([sys.executable, "-c", "open('/proc/self/status').read()"],
                           preexec_fn=drop_file_capabilities, capture_output=True, check=False)
    return probe.returncode == 0


def twinrun(*args, cwd: str | os.PathLike | None = None, env: dict | None = None, timeout: float = 120,
            memory: int | None = MEMORY_LIMIT, drop_dac: bool = False) -> Result:
    """``python -m twinrun ARGS`` in a fresh process group under an address-space limit and a time limit
    (then the whole group is killed), with its peak resident memory (of it and the children it reaped)."""
    import tempfile

    argv = [str(a) for a in args]
    t0 = time.perf_counter()
    # A forked child's peak RSS starts at the parent's peak (the pages it shared before exec).
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*TWINRUN, *argv], cwd=cwd, env={**os.environ, **(env or {})},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                # the limits must be set in the child; tests start processes from one thread
                                preexec_fn=_limits(memory, drop_dac))
        rc: int | None = None
        rss = 0.0
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                rc, rss = os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024
                proc.returncode = rc   # reaped here: keep Popen from waiting again
                break
            if time.perf_counter() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _, _, usage = os.wait4(proc.pid, 0)
                proc.returncode, rss = -9, usage.ru_maxrss / 1024
                break
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)   # anything it left running
        out.seek(0)
        err.seek(0)
        text_out, text_err = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    return Result(argv, rc, text_out, text_err, time.perf_counter() - t0, rss, baseline)


def assert_clean(r: Result, codes: tuple[int, ...] = (0, 1, 2)) -> None:
    """Exit code in ``codes``, in time, never "internal error" or a traceback."""
    assert r.returncode is not None, f"timed out: {r}"
    assert r.returncode in codes, str(r)
    assert "internal error" not in r.stderr, str(r)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, str(r)


def assert_one_line_error(r: Result) -> str:
    """Exit code 2 and exactly one error line (progress lines aside), no traceback: return that line."""
    assert_clean(r, (2,))
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(lines) == 1, str(r)
    assert len(lines[0]) < 1000, str(r)
    return lines[0]


# --- real files, made by twinrun -------------------------------------------------------------------

def make_trace(folder: Path, name: str = "a.trace", script: Path | None = None) -> Path:
    script = script or write_script(folder, "np_train.py", NP_SCRIPT)
    out = folder / name
    r = twinrun("run", "-q", "-o", out, script, cwd=folder)
    assert r.returncode == 0, str(r)
    return out


def make_results(folder: Path, name: str = "r.db", seeds: int = 3, script: Path | None = None) -> Path:
    script = script or write_script(folder, "toy.py", TOY_SCRIPT)
    out = folder / name
    r = twinrun("sweep", "-q", "--seeds", seeds, "-o", out, script, cwd=folder)
    assert r.returncode == 0, str(r)
    return out


def make_env(folder: Path, name: str = "env.json") -> Path:
    out = folder / name
    r = twinrun("env", "-q", "-o", out, cwd=folder)
    assert r.returncode == 0, str(r)
    return out


def killed_trace(folder: Path, name: str = "killed.trace", after_step: int = 5) -> Path:
    """A trace of a run SIGKILLed after ``after_step`` committed steps: it keeps its -wal and -shm."""
    script = write_script(folder, "loop.py", LOOP_SCRIPT)
    out = folder / name
    proc = subprocess.Popen([*TWINRUN, "run", "-q", "-o", str(out), str(script)], cwd=folder,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip().isdigit() and int(line) >= after_step:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert siblings(out) == ["-wal", "-shm"], siblings(out)
    return out


def edit(path: Path, *statements: str | tuple[str, tuple]) -> Path:
    """Run SQL on a file as an attacker would (plain sqlite3, nothing of twinrun's)."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        for s in statements:
            sql, params = (s, ()) if isinstance(s, str) else s
            con.execute(sql, params)
    finally:
        con.close()
    return path


def copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


DEEP = "[" * 100_000 + "]" * 100_000


def generated_column_trace(good: Path, dst: Path) -> Path:
    """The 28 KB attack: the events table rebuilt with ``digest`` as a generated column that
    allocates gigabytes whenever it is read."""
    copy(good, dst)
    con = sqlite3.connect(dst, isolation_level=None)
    try:
        cols = [(r[1], r[2]) for r in con.execute("PRAGMA table_info(events)")]
        keep = [c for c, _ in cols if c != "digest"]
        names = ", ".join(keep)
        con.execute("ALTER TABLE events RENAME TO events_old")
        con.execute(f"CREATE TABLE events ({', '.join(f'{c} {t}' for c, t in cols if c != 'digest')}, "
                    "PRIMARY KEY (step, idx)) WITHOUT ROWID")
        con.execute(f"INSERT INTO events ({names}) SELECT {names} FROM events_old")
        con.execute("DROP TABLE events_old")
        # Added after the rows: SQLite computes a virtual column only when it is read.
        con.execute("ALTER TABLE events ADD COLUMN digest TEXT GENERATED ALWAYS AS (hex(zeroblob(400000000))) VIRTUAL")
        con.execute("VACUUM")
    finally:
        con.close()
    return dst


def view_trace(good: Path, dst: Path) -> Path:
    """``events`` replaced by a view whose digest column calls SQL."""
    copy(good, dst)
    edit(dst, "ALTER TABLE events RENAME TO events_t",
         "CREATE VIEW events AS SELECT step, idx, phase, name, dtype, shape, hex(zeroblob(4000000)) AS digest, l2, "
         "mean, maxabs, nonfinite, value, sample_digests FROM events_t")
    return dst


def trigger_trace(good: Path, dst: Path) -> Path:
    copy(good, dst)
    edit(dst, "CREATE TRIGGER t AFTER UPDATE ON meta BEGIN DELETE FROM events; END")
    return dst


def expression_index_trace(good: Path, dst: Path) -> Path:
    """An index on an expression: checking the file (integrity_check) evaluates it."""
    copy(good, dst)
    edit(dst, "CREATE INDEX evil ON events (length(hex(zeroblob(4000000 + idx))))")
    return dst


def generated_column_results(good: Path, dst: Path) -> Path:
    """A results file whose metric values are a generated column (gigabytes per read)."""
    copy(good, dst)
    con = sqlite3.connect(dst, isolation_level=None)
    try:
        con.execute("ALTER TABLE metrics RENAME TO metrics_old")
        con.execute("CREATE TABLE metrics (arm TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, "
                    "nonfinite TEXT, series TEXT NOT NULL, PRIMARY KEY (arm, idx, name))")
        con.execute("INSERT INTO metrics (arm, idx, name, nonfinite, series) "
                    "SELECT arm, idx, name, nonfinite, series FROM metrics_old")
        con.execute("DROP TABLE metrics_old")
        con.execute("ALTER TABLE metrics ADD COLUMN value REAL GENERATED ALWAYS AS "
                    "(length(hex(zeroblob(400000000)))) VIRTUAL")
        con.execute("VACUUM")
    finally:
        con.close()
    return dst
