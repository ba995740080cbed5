"""One run of a sweep, in a worker (a thread here, or a Dask worker process elsewhere): the script in a
fresh process with the run's seed variables, its metrics read back from ``$TWINRUN_METRICS``."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _process
from .._lifeline import anonymous_file
from ..metrics import METRICS_ENV, read_metrics
from ..redact import redact_text
from .plan import PlannedRun

__all__ = ["ERROR_TAIL", "RunSpec", "SweepRun", "run_one"]

ERROR_TAIL = 2000


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to run one planned run (plain data: it crosses to Dask workers)."""

    run: PlannedRun
    script: str
    script_sha256: str
    args: tuple[str, ...]
    timeout: float | None = None
    python: str = sys.executable
    cwd: str | None = None


@dataclass
class SweepRun:
    """One run of a sweep as the results file records it: its plan, how it ended, what it reported."""

    arm: str
    idx: int
    seed: int | None
    env: dict[str, str]
    status: str                  # "ok", "failed", or "interrupted" (not recorded: rerun on resume)
    returncode: int | None
    error: str | None
    duration: float
    host: str | None
    metrics: dict[str, Any] = field(default_factory=dict)   # name -> last value (results file) or series (fresh)
    series: dict[str, list[tuple[int | None, float]]] = field(default_factory=dict)   # name -> [(step, value)]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_one(spec: RunSpec) -> SweepRun:
    """Run the script once with the spec's seed variables; return its record.

    Seed variables inherited from the caller's environment are dropped, so only the plan's count.
    """
    started = time.time()
    r = spec.run
    host = socket.gethostname()

    def failed(error: str) -> SweepRun:
        return SweepRun(r.arm, r.idx, r.seed, dict(r.env), "failed", None, error, time.time() - started, host)

    try:
        current = hashlib.sha256(Path(spec.script).read_bytes()).hexdigest()
    except OSError as e:
        return failed(f"cannot read the script on {host}: {e}")
    if current != spec.script_sha256:
        return failed(f"the script on {host} differs from the one the sweep started with (sha256 mismatch): give "
                      "every worker the same file")
    # No name on disk (Linux): a killed sweep leaves no metrics file behind.
    fd, mpath = anonymous_file("twinrun-metrics")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINRUN_SEED")}
    env.update(r.env)
    env[METRICS_ENV] = mpath
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        done = _process.run([spec.python, spec.script, *spec.args], env=env, cwd=spec.cwd, timeout=spec.timeout,
                            capture_stdout=False, stdin_devnull=True)
        series = read_metrics(mpath)
    finally:
        os.close(fd)
        if not mpath.startswith("/proc/"):
            Path(mpath).unlink(missing_ok=True)
    error = f"timed out after {spec.timeout} s" if done.timed_out else None
    if done.returncode == -signal.SIGINT:
        status = "interrupted"  # Ctrl-C reached the child: not a result, rerun it on resume
    elif done.returncode == 0 and not error:
        status = "ok"
    else:
        status = "failed"
        # the tail is stored in the results file and shown: secrets in it (a URL, a token) are redacted
        error = error or (redact_text(done.stderr[-ERROR_TAIL:].strip()) or f"exit code {done.returncode}")
    return SweepRun(r.arm, r.idx, r.seed, dict(r.env), status, done.returncode, error, time.time() - started, host,
                    metrics={name: values[-1][1] for name, values in series.items()}, series=series)
