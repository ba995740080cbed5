"""Many seeded runs of one script, and their results file.

``sweep(script, seeds=20, vary="init", output="results.db")`` runs the script once per seed in a
fresh process, changing only twinrun's seed variables (``TWINRUN_SEED`` for ``vary="all"``,
``TWINRUN_SEED_<STREAM>`` for one stream, the rest fixed at ``base_seed``), and collects what the
script reports with ``twinrun.log_metric`` into an SQLite results file:

- ``meta``: schema version, script identity (path, sha256 of its source, arguments), design, the
  environment fingerprint (once);
- ``runs``: one row per (arm, index): seed, seed variables, status, return code, error tail,
  duration, host;
- ``metrics``: per run and metric, the last value and the whole series.

Each finished run is committed in one transaction, so a killed sweep leaves a consistent file;
rerunning the same command skips the runs already recorded. Runs go to any
``concurrent.futures.Executor``: a local thread pool (each run is its own process anyway), or Dask.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ._errors import BadResultsError, FrameworkMissingError, UsageError

__all__ = ["SCHEMA_VERSION", "Results", "RunRecord", "SweepResult", "plan", "run_one", "sweep",
           "open_executor", "script_identity"]

SCHEMA = "twinrun-sweep"
SCHEMA_VERSION = 1
ERROR_TAIL = 2000
DESIGNS = ("single", "variance")
VARIANCE_ARMS = ("init", "data", "none")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    arm TEXT NOT NULL, idx INTEGER NOT NULL, seed INTEGER, env TEXT NOT NULL, status TEXT NOT NULL,
    returncode INTEGER, error TEXT, duration REAL, host TEXT, finished REAL,
    PRIMARY KEY (arm, idx));
CREATE TABLE IF NOT EXISTS metrics (
    arm TEXT NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, value REAL, nonfinite TEXT,
    series TEXT NOT NULL, PRIMARY KEY (arm, idx, name));
"""


# --- the plan ------------------------------------------------------------------------------------
def _stream_var(stream: str) -> str:
    return "TWINRUN_SEED_" + re.sub(r"[^A-Za-z0-9]", "_", stream).upper()


def _arm_env(arm: str, seed: int | None, base_seed: int) -> dict[str, str]:
    if arm == "all":
        return {"TWINRUN_SEED": str(seed)}
    env = {"TWINRUN_SEED": str(base_seed)}
    if arm != "none":
        env[_stream_var(arm)] = str(seed)
    return env


def plan(seeds: int, *, vary: str = "all", design: str = "single", base_seed: int = 0) -> list[dict]:
    """The runs of a sweep: ``[{"arm", "idx", "seed", "env"}]``; run ``idx`` of an arm gets seed ``idx``.

    >>> [r["env"] for r in plan(2, vary="init")]
    [{'TWINRUN_SEED': '0', 'TWINRUN_SEED_INIT': '0'}, {'TWINRUN_SEED': '0', 'TWINRUN_SEED_INIT': '1'}]
    """
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    if design not in DESIGNS:
        raise UsageError(f"unknown design {design!r}; use one of {', '.join(DESIGNS)}")
    if design == "single" and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", vary or ""):
        raise UsageError(f"--vary {vary!r} is not a seed stream name; use all, init, data or a stream name")
    arms = VARIANCE_ARMS if design == "variance" else (vary,)
    return [{"arm": arm, "idx": i, "seed": None if arm == "none" else i, "env": _arm_env(arm, i, base_seed)}
            for arm in arms for i in range(seeds)]


def script_identity(script: str | os.PathLike, args=()) -> dict:
    """Path, sha256 of the source and arguments: what makes two sweeps comparable run by run."""
    from .runner import check_script

    path = check_script(script)
    return {"script": str(path), "script_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "args": list(map(str, args))}


# --- one run (runs in a worker: a thread here, or a Dask worker process elsewhere) -------------------
_live: set[subprocess.Popen] = set()
_live_lock = threading.Lock()


def _kill_live() -> None:
    with _live_lock:
        procs = list(_live)
    for p in procs:
        with contextlib.suppress(OSError):
            p.kill()


def run_one(spec: dict) -> dict:
    """Run the script once with the spec's seed variables; return its record (plain data).

    Seed variables inherited from the caller's environment are dropped, so only the plan's count.
    """
    from .metrics import METRICS_ENV, read_metrics

    started = time.time()
    record = {"arm": spec["arm"], "idx": spec["idx"], "seed": spec["seed"], "env": spec["env"],
              "host": socket.gethostname(), "metrics": {}, "returncode": None, "error": None}
    try:
        current = hashlib.sha256(Path(spec["script"]).read_bytes()).hexdigest()
    except OSError as e:
        current, record["error"] = None, f"cannot read the script on {record['host']}: {e}"
    if current is not None and current != spec["script_sha256"]:
        record["error"] = (f"the script on {record['host']} differs from the one the sweep started with "
                           "(sha256 mismatch): give every worker the same file")
    if record["error"]:
        return {**record, "status": "failed", "duration": time.time() - started}
    fd, mpath = tempfile.mkstemp(prefix="twinrun-metrics-", suffix=".jsonl")
    os.close(fd)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINRUN_SEED")}
    env.update(spec["env"])
    env[METRICS_ENV] = mpath
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        proc = subprocess.Popen([spec.get("python") or sys.executable, spec["script"], *spec["args"]],
                                env=env, cwd=spec.get("cwd"), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with _live_lock:
            _live.add(proc)
        try:
            _, err = proc.communicate(timeout=spec.get("timeout"))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            record["error"] = f"timed out after {spec['timeout']} s"
        finally:
            with _live_lock:
                _live.discard(proc)
        rc = proc.returncode
        record["returncode"] = rc
        record["metrics"] = read_metrics(mpath)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(mpath)
    tail = err.decode("utf-8", "replace")[-ERROR_TAIL:]
    if rc == -signal.SIGINT:
        status = "interrupted"  # Ctrl-C reached the child: not a result, rerun it on resume
    elif rc == 0 and not record["error"]:
        status = "ok"
    else:
        status = "failed"
        record["error"] = record["error"] or (tail.strip() or f"exit code {rc}")
    return {**record, "status": status, "duration": time.time() - started}


# --- the results file ----------------------------------------------------------------------------
@dataclass
class RunRecord:
    arm: str
    idx: int
    seed: int | None
    env: dict
    status: str
    returncode: int | None
    error: str | None
    duration: float
    host: str | None
    metrics: dict = field(default_factory=dict)  # name -> last value
    series: dict = field(default_factory=dict)   # name -> [(step, value)]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _enc(v: float) -> tuple[float | None, str | None]:
    return (v, None) if math.isfinite(v) else (None, str(v))


class Results:
    """A sweep results file. ``Results.open(path)`` reads one (read-only); ``Results.create`` starts
    or resumes one for a given script identity and design."""

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict):
        self.path, self._conn, self.meta = path, conn, meta

    # opening --------------------------------------------------------------------------------
    @staticmethod
    def _read_meta(path: Path, conn: sqlite3.Connection) -> dict:
        try:
            rows = conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.DatabaseError:
            raise BadResultsError(f"{path} is not a twinrun sweep results file (make one with: twinrun sweep "
                                  "SCRIPT -o FILE)") from None
        meta = {k: json.loads(v) for k, v in rows}
        if meta.get("schema") != SCHEMA:
            raise BadResultsError(f"{path} is not a twinrun sweep results file (make one with: twinrun sweep "
                                  "SCRIPT -o FILE)")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise BadResultsError(f"{path} is a sweep results file of schema version {meta.get('schema_version')}; "
                                  f"this twinrun reads version {SCHEMA_VERSION}: use the matching twinrun version "
                                  "or rerun the sweep into a new file")
        return meta

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Results":
        """Open an existing results file for reading; never runs anything from it."""
        path = Path(path)
        if not path.is_file():
            raise BadResultsError(f"{path} does not exist; make it with: twinrun sweep SCRIPT -o {path}")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.DatabaseError as e:
            raise BadResultsError(f"{path} cannot be opened as SQLite ({e})") from None
        return cls(path, conn, cls._read_meta(path, conn))

    @classmethod
    def create(cls, path: str | os.PathLike, identity: dict, design: dict, env: Callable[[], dict]) -> "Results":
        """Start ``path``, or resume it when it holds a sweep of the same script, arguments and design."""
        path = Path(path)
        fresh = not path.exists() or path.stat().st_size == 0
        try:
            conn = sqlite3.connect(path, timeout=30)
            conn.execute("SELECT 1 FROM sqlite_master").fetchall()
        except sqlite3.DatabaseError:
            raise BadResultsError(f"{path} exists and is not a twinrun sweep results file; choose another -o") from None
        if fresh:
            meta = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **identity, **design,
                    "twinrun_version": _version(), "created": time.time(), "env": env(), "state": "running"}
            with conn:
                conn.executescript(_DDL)
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
            return cls(path, conn, meta)
        meta = cls._read_meta(path, conn)
        if meta["script"] != identity["script"]:
            raise BadResultsError(f"{path} holds a sweep of {meta['script']}, not {identity['script']}: "
                                  "use another -o file for this script")
        if meta["script_sha256"] != identity["script_sha256"]:
            raise BadResultsError(f"{identity['script']} changed since {path} was started (sha256 "
                                  f"{meta['script_sha256'][:12]} then, {identity['script_sha256'][:12]} now): its "
                                  "runs are of the old code; use another -o file, or delete it to start over")
        if meta["args"] != identity["args"]:
            raise BadResultsError(f"{path} holds a sweep with arguments {meta['args']}, not {identity['args']}: "
                                  "use another -o file for other arguments")
        for key in ("design", "vary", "base_seed"):
            if meta.get(key) != design.get(key):
                raise BadResultsError(f"{path} holds a sweep with {key} {meta.get(key)!r}, not {design.get(key)!r}: "
                                      "use another -o file")
        return cls(path, conn, meta)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # writing --------------------------------------------------------------------------------
    def add(self, rec: dict) -> None:
        """Record one finished run (replacing an earlier record of it) in one transaction."""
        self._runs = self._runs_series = None
        with self._conn:
            self._conn.execute("DELETE FROM metrics WHERE arm = ? AND idx = ?", (rec["arm"], rec["idx"]))
            self._conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec["arm"], rec["idx"], rec["seed"], json.dumps(rec["env"]), rec["status"], rec["returncode"],
                 rec["error"], rec["duration"], rec["host"], time.time()))
            for name, series in rec["metrics"].items():
                value, nonfinite = _enc(series[-1][1])
                text = json.dumps([[s, v if math.isfinite(v) else str(v)] for s, v in series])
                self._conn.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                                   (rec["arm"], rec["idx"], name, value, nonfinite, text))

    def set_state(self, state: str) -> None:
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('state', ?)", (json.dumps(state),))
        self.meta["state"] = state

    # reading --------------------------------------------------------------------------------
    def done(self) -> dict[tuple[str, int], str]:
        """``{(arm, idx): status}`` of every recorded run."""
        return {(a, i): s for a, i, s in self._conn.execute("SELECT arm, idx, status FROM runs")}

    def runs(self, *, series: bool = False) -> list[RunRecord]:
        """Every recorded run with its metrics (and series when asked); read once, then cached."""
        key = "_runs_series" if series else "_runs"
        if getattr(self, key, None) is None:
            setattr(self, key, self._read_runs(series))
        return getattr(self, key)

    def _read_runs(self, series: bool) -> list[RunRecord]:
        out = {}
        for a, i, seed, env, status, rc, err, dur, host, _ in self._conn.execute(
                "SELECT * FROM runs ORDER BY arm, idx"):
            out[(a, i)] = RunRecord(a, i, seed, json.loads(env), status, rc, err, dur, host)
        cols = "arm, idx, name, value, nonfinite" + (", series" if series else "")
        for row in self._conn.execute(f"SELECT {cols} FROM metrics ORDER BY arm, idx, name"):
            r = out.get((row[0], row[1]))
            if r is None:
                continue
            r.metrics[row[2]] = float(row[4]) if row[4] is not None else row[3]
            if series:
                r.series[row[2]] = [(s, float(v)) for s, v in json.loads(row[5])]
        return list(out.values())

    def metric_names(self) -> list[str]:
        return [n for (n,) in self._conn.execute("SELECT DISTINCT name FROM metrics ORDER BY name")]

    def arms(self) -> list[str]:
        return [a for (a,) in self._conn.execute("SELECT DISTINCT arm FROM runs ORDER BY arm")]


def _version() -> str:
    from . import __version__

    return __version__


def _fingerprint() -> dict:
    try:
        from .env import capture
    except ImportError:  # the env module is optional at this stage: a minimal fingerprint
        import platform
        from importlib import metadata

        versions = {}
        for dist in ("numpy", "torch", "tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "scipy"):
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[dist] = metadata.version(dist)
        return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
                "processor": platform.processor(), "cpu_count": os.cpu_count(), "packages": versions,
                "minimal": True}
    return capture()


# --- executors -----------------------------------------------------------------------------------
@contextlib.contextmanager
def open_executor(executor: str | Executor | None = None, *, workers: int = 1, dask_timeout: float = 10.0):
    """An ``Executor`` for ``executor``: None/"local" (a local pool of ``workers``), "dask-local"
    (a ``LocalCluster`` of ``workers`` processes, at least 2), "dask://HOST:PORT" (an existing
    cluster), or an ``Executor`` object, used as is."""
    if isinstance(executor, Executor):
        yield executor
        return
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    spec = (executor or "local").strip()
    if spec == "local":
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="twinrun-sweep")
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    if spec != "dask-local" and not spec.startswith(("dask://", "tcp://")):
        raise UsageError(f"unknown executor {spec!r}; use local, dask-local or dask://HOST:PORT")
    try:
        import distributed
    except ImportError:
        raise FrameworkMissingError("--executor dask needs dask.distributed; install it with: "
                                    "pip install 'twinrun[dask]'") from None
    import logging

    cluster = None
    if spec == "dask-local":
        cluster = distributed.LocalCluster(n_workers=max(workers, 2), threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        address = cluster.scheduler_address
    else:
        address = "tcp://" + spec.split("://", 1)[1]
    try:
        try:
            client = distributed.Client(address, timeout=dask_timeout, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise UsageError(f"cannot reach the Dask scheduler at {address} within {dask_timeout:g} s "
                             f"({type(e).__name__}); start one (dask scheduler) and its workers, "
                             "or use --executor dask-local") from None
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


# --- the sweep -----------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep did: counts, and per arm and metric n / mean / std of the finished runs."""

    path: str
    total: int
    ran: int
    skipped: int
    ok: int
    failed: int
    seconds: float
    design: str
    arms: dict  # arm -> {metric: {"n", "mean", "std", "excluded"}}
    failures: list = field(default_factory=list)  # [{"arm", "idx", "seed", "error"}]
    variance: dict | None = None  # metric -> VarianceShares.to_dict() for the variance design

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def sweep(script: str | os.PathLike, args=(), *, seeds: int = 10, vary: str = "all", design: str = "single",
          base_seed: int = 0, output: str | os.PathLike = "results.db", workers: int = 1,
          executor: str | Executor | None = None, timeout: float | None = None, retry_failed: bool = False,
          dask_timeout: float = 10.0, n_resamples: int = 2000,
          on_progress: Callable[[int, int, dict], None] | None = None) -> SweepResult:
    """Run ``script`` once per seed in fresh processes and record the results in ``output``.

    Runs already recorded in ``output`` are skipped (failed ones too, unless ``retry_failed``); a
    failed run is recorded with its error and the sweep goes on. ``KeyboardInterrupt`` stops the
    running scripts and leaves the file consistent (every recorded run is complete).
    """
    started = time.time()
    runs = plan(seeds, vary=vary, design=design, base_seed=base_seed)
    identity = script_identity(script, args)
    design_meta = {"design": design, "vary": None if design == "variance" else vary, "base_seed": base_seed}
    with Results.create(output, identity, design_meta, _fingerprint) as results:
        done = results.done()
        finished = {"ok"} if retry_failed else {"ok", "failed"}
        todo = [r for r in runs if done.get((r["arm"], r["idx"])) not in finished]
        skipped = len(runs) - len(todo)
        ran = 0
        results.set_state("running")
        with open_executor(executor, workers=workers, dask_timeout=dask_timeout) as pool:
            futures = {}
            try:
                for r in todo:
                    spec = {**r, **identity, "timeout": timeout, "python": sys.executable, "cwd": os.getcwd()}
                    futures[pool.submit(run_one, spec)] = r
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        rec = _result_of(fut, futures[fut])
                        if rec["status"] == "interrupted":
                            continue
                        results.add(rec)
                        ran += 1
                        if on_progress:
                            on_progress(skipped + ran, len(runs), rec)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                _kill_live()
                results.set_state("interrupted")
                raise
        results.set_state("complete")
        return _summarize_sweep(results, runs, ran, skipped, time.time() - started, design, n_resamples)


def _result_of(fut, run: dict) -> dict:
    try:
        return fut.result()
    except Exception as e:  # the worker itself failed (e.g. a Dask worker died): record, go on
        return {**run, "status": "failed", "returncode": None, "error": f"worker error: {type(e).__name__}: {e}",
                "duration": 0.0, "host": None, "metrics": {}}


def finite_values(runs: list[RunRecord], metric: str) -> tuple[list[float], list[dict]]:
    """Values of ``metric`` over finished runs, and the runs excluded because their value is not finite."""
    values, excluded = [], []
    for r in runs:
        if r.status != "ok" or metric not in r.metrics:
            continue
        v = r.metrics[metric]
        if math.isfinite(v):
            values.append(v)
        else:
            excluded.append({"arm": r.arm, "idx": r.idx, "seed": r.seed, "value": str(v)})
    return values, excluded


def _summarize_sweep(results: Results, runs, ran, skipped, seconds, design, n_resamples) -> SweepResult:
    import numpy as np

    planned = {(r["arm"], r["idx"]) for r in runs}
    recs = [r for r in results.runs() if (r.arm, r.idx) in planned]
    arms: dict = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in recs if r.arm == arm]
        names = sorted({n for r in mine for n in r.metrics})
        arms[arm] = {}
        for name in names:
            vals, excluded = finite_values(mine, name)
            arms[arm][name] = {"n": len(vals), "mean": float(np.mean(vals)) if vals else math.nan,
                               "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                               "excluded": excluded}
    failures = [{"arm": r.arm, "idx": r.idx, "seed": r.seed, "error": (r.error or "")[-300:]}
                for r in recs if r.status != "ok"]
    variance = None
    if design == "variance":
        variance = variance_report(recs, n_resamples=n_resamples)
    return SweepResult(str(results.path), len(runs), ran, skipped, sum(r.status == "ok" for r in recs),
                       len(failures), seconds, design, arms, failures, variance)


def variance_report(recs: list[RunRecord], *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """metric -> shares of variance by source (``stats.variance_shares``), for a variance-design sweep;
    a metric with fewer than 2 finite runs in an arm gets ``{"error": ...}`` instead."""
    from .stats import variance_shares

    names = sorted({n for r in recs for n in r.metrics})
    out = {}
    for name in names:
        arms, excluded = {}, []
        for arm in VARIANCE_ARMS:
            vals, exc = finite_values([r for r in recs if r.arm == arm], name)
            arms[arm], excluded = vals, excluded + exc
        short = [a for a, v in arms.items() if len(v) < 2]
        if short:
            out[name] = {"error": f"fewer than 2 finished runs with a finite {name!r} in arm(s) {', '.join(short)}",
                         "excluded": excluded}
            continue
        d = variance_shares(arms, n_resamples=n_resamples, seed=seed).to_dict()
        d["excluded"] = excluded
        out[name] = d
    return out


# --- compare -------------------------------------------------------------------------------------
_LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|rmse|nll|perplexity|regret|time|latency", re.I)


def _direction(metric: str, higher_is_better: bool | None) -> tuple[bool, str]:
    if higher_is_better is not None:
        return higher_is_better, "given"
    lower = bool(_LOWER_IS_BETTER.search(metric))
    return not lower, "assumed from the name" if lower else "assumed (default)"


def _population(res: Results, metric: str, arm: str | None = None) -> tuple[list[float], dict]:
    runs = [r for r in res.runs() if arm is None or r.arm == arm]
    vals, excluded = finite_values(runs, metric)
    info = {"runs": len(runs), "failed": sum(r.status != "ok" for r in runs),
            "missing": sum(r.status == "ok" and metric not in r.metrics for r in runs), "excluded": excluded}
    return vals, info


def _too_few(res: Results, metric: str, n: int, info: dict) -> BadResultsError:
    why = []
    if info["failed"]:
        why.append(f"{info['failed']} failed")
    if info["excluded"]:
        why.append(f"{len(info['excluded'])} NaN/inf excluded")
    if info["missing"]:
        why.append(f"{info['missing']} without it")
    detail = f" (of {info['runs']} runs: {', '.join(why)})" if why else f" (of {info['runs']} runs)"
    return BadResultsError(f"{res.path} has {n} finished run(s) with a finite {metric!r}{detail}; need at least 2: "
                           f"sweep more seeds into it (twinrun sweep {Path(res.meta['script']).name} --seeds N "
                           f"-o {res.path})")


def _pick_metrics(files: list[Results], metric: str | None) -> list[str]:
    names = [set(f.metric_names()) for f in files]
    if metric is not None:
        for f, n in zip(files, names):
            if metric not in n:
                avail = ", ".join(sorted(n)) or "none (the script never called twinrun.log_metric)"
                raise BadResultsError(f"metric {metric!r} is not in {f.path}; available: {avail}")
        return [metric]
    common = sorted(set.intersection(*names))
    if not common:
        if not any(names):
            raise BadResultsError(f"{files[0].path} holds no metrics: the script must report them with "
                                  "twinrun.log_metric(name, value)")
        listing = "; ".join(f"{f.path}: {', '.join(sorted(n)) or 'none'}" for f, n in zip(files, names))
        raise BadResultsError(f"the files share no metric ({listing}); name one with --metric")
    return common


@dataclass
class ResultsComparison:
    """``compare A.db B.db`` (or ``compare A.db``): per metric, statistics and a verdict."""

    a: str
    b: str | None
    metrics: dict            # name -> comparison (or summary) dict, with "verdict" and "excluded"
    skipped: dict            # name -> why it could not be analysed
    significant: bool
    variance: dict | None = None
    alpha: float = 0.05

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _verdict(metric: str, c) -> str:
    pct = round(100 * c.a.confidence)
    d = c.diff_mean
    stats_ = (f"mean {_fmt(c.a.mean.value)} vs {_fmt(c.b.mean.value)}, difference {d.value:+.3g} "
              f"[{pct}% CI {_fmt(d.low)}, {_fmt(d.high)}], P(A better) = {c.prob_improvement.value:.2f} "
              f"[{c.prob_improvement.low:.2f}, {c.prob_improvement.high:.2f}], Welch p = {c.welch_p:.2g}")
    if c.better:
        win, lose = ("A", "B") if c.better == "A" else ("B", "A")
        return f"{win} beats {lose} on {metric}: {stats_}"
    need = (f"need about {c.seeds_needed} per arm" if c.seeds_needed
            else "the means are equal")
    return f"no difference in {metric} detectable with these seeds ({c.n_a} and {c.n_b} runs; {need}): {stats_}"


def compare_results(a: str | os.PathLike, b: str | os.PathLike | None = None, *, metric: str | None = None,
                    higher_is_better: bool | None = None, alpha: float = 0.05, confidence: float = 0.95,
                    n_resamples: int = 10_000, seed: int = 0) -> ResultsComparison:
    """Compare the metrics of two results files (A minus B), or summarise one file.

    Several metrics compared at once are Holm-corrected; NaN/inf values are excluded and listed.
    """
    from .stats import compare_samples, holm, summarize

    if not 0 < alpha < 1 or not 0 < confidence < 1:
        raise UsageError("--alpha and the confidence level must lie strictly between 0 and 1")
    ra = Results.open(a)
    rb = Results.open(b) if b is not None else None
    try:
        files = [ra] + ([rb] if rb else [])
        if rb is not None:
            for f in files:
                if f.meta.get("design") == "variance":
                    raise BadResultsError(f"{f.path} is a variance-design sweep (three arms); compare it alone: "
                                          f"twinrun compare {f.path}")
        names = _pick_metrics(files, metric)
        out, skipped = {}, {}
        for name in names:
            hib, source = _direction(name, higher_is_better)
            try:
                if rb is None:  # one population (one per arm for a variance design)
                    arms = ra.arms() if ra.meta.get("design") == "variance" else [None]
                    for arm in arms:
                        label = name if arm is None else f"{name} ({arm} arm)"
                        va, ia = _population(ra, name, arm)
                        if len(va) < 2:
                            raise _too_few(ra, name, len(va), ia)
                        s = summarize(va, confidence=confidence, n_resamples=n_resamples, seed=seed).to_dict()
                        s["excluded"], s["failed"] = ia["excluded"], ia["failed"]
                        s["verdict"] = (f"{label}: n = {len(va)}, mean {_fmt(s['mean']['value'])} "
                                        f"[{_fmt(s['mean']['low'])}, {_fmt(s['mean']['high'])}], std "
                                        f"{_fmt(s['std']['value'])}, IQM {_fmt(s['iqm']['value'])} "
                                        f"[{_fmt(s['iqm']['low'])}, {_fmt(s['iqm']['high'])}]")
                        out[label] = s
                    continue
                va, ia = _population(ra, name)
                if len(va) < 2:
                    raise _too_few(ra, name, len(va), ia)
                vb, ib = _population(rb, name)
                if len(vb) < 2:
                    raise _too_few(rb, name, len(vb), ib)
            except BadResultsError as e:
                if metric is not None or len(names) == 1:
                    raise
                skipped[name] = str(e)
                continue
            out[name] = {"samples": (va, vb, hib), "direction": "higher is better" if hib else "lower is better",
                         "direction_source": source, "excluded_a": ia["excluded"], "excluded_b": ib["excluded"],
                         "failed_a": ia["failed"], "failed_b": ib["failed"]}
        if rb is not None and out:
            # NumPy's partition and bincount release the GIL: metrics in threads use every core.
            def one(item):
                va, vb, hib = item.pop("samples")
                item["comparison"] = compare_samples(va, vb, higher_is_better=hib, alpha=alpha,
                                                     confidence=confidence, n_resamples=n_resamples, seed=seed)

            with ThreadPoolExecutor(max_workers=min(len(out), os.cpu_count() or 1, 8)) as pool:
                list(pool.map(one, out.values()))
        if not out:
            raise BadResultsError("no metric has at least 2 finished runs with finite values: "
                                  + "; ".join(skipped.values()))
        significant = False
        if rb is not None:
            names_done = list(out)
            adjusted = holm([out[n]["comparison"].welch_p for n in names_done]) if len(names_done) > 1 else \
                [out[names_done[0]]["comparison"].welch_p]
            for n, p in zip(names_done, adjusted):
                c = out[n]["comparison"]
                c.decide(p)
                if len(names_done) > 1:
                    c.notes.append(f"Holm-adjusted over {len(names_done)} metrics: p = {p:.2g}")
                out[n]["verdict"] = _verdict(n, c)
                significant |= c.significant
                out[n]["comparison"] = c.to_dict()
        variance = None
        if rb is None and ra.meta.get("design") == "variance":
            variance = variance_report(ra.runs(), n_resamples=n_resamples, seed=seed)
        return ResultsComparison(str(ra.path), str(rb.path) if rb else None, out, skipped, significant,
                                 variance, alpha)
    finally:
        ra.close()
        if rb is not None:
            rb.close()
