"""What the obvious fixes for issue 16's unmet goals would buy, measured before anyone builds them.

Two prototypes, neither part of twinrun:

- **float64 stats in a compiled kernel.** The stats (l2, mean, max |x| in float64) are what hold the
  100 M-parameter goal back (``bench_bigparams.py``: with the stats patched out, tracing adds about
  1x raw ``xxh3_128``). NumPy's floor is the float32 -> float64 cast (about 0.37 ns per element)
  plus one pass per sum. The prototype is a straightforward Numba loop (16 float64 lanes, one pass:
  sum of squares, sum, max, min), alone and interleaved with the hash block by block, against
  twinrun's ``digest_and_stats``, NumPy's block-wise cast alone and raw ``xxh3_128`` on a 50 MB
  float32 tensor. It needs Numba, which
  twinrun does not depend on: without it this part says so and is skipped (install it in a venv of
  your own: ``pip install numba``).
- **kept values outside SQLite.** A step of 400 small events keeps 800 KB of values; committing
  them as one blob through SQLite's WAL (the writer's settings: 64 KiB pages, synchronous=NORMAL),
  against the same bytes appended to a plain file with ``os.write`` (as safe against a killed process:
  both sit in the page cache until the OS writes them). On the shared development machine the plain
  file was not cheaper: new bytes in the page cache cost about what SQLite's reused WAL pages do.

CPU time (``time.process_time``), medians of interleaved rounds.

    python benchmarks/bench_obvious_fixes.py
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import xxhash

from twinrun.trace.digest import digest_and_stats

N = 12_582_912          # float32 elements: 50 MB
BLOCK = 1 << 16         # elements hashed and reduced together (twinrun's block size)
STEP_BYTES = 800 * 1024  # kept values of one step of 400 events of 2 KB


def cpu_ms(fn: Callable[[], object], rounds: int = 9) -> float:
    times = []
    for _ in range(rounds):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return statistics.median(times) * 1e3


def fused_kernel() -> None:
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    buf = np.empty(BLOCK)

    def cast_only() -> None:
        for i in range(0, x.size, BLOCK):
            np.copyto(buf, x[i:i + BLOCK], casting="unsafe")

    parts: dict[str, Callable[[], object]] = {
        "raw xxh3_128": lambda: xxhash.xxh3_128(x).digest(),
        "twinrun digest_and_stats (NumPy)": lambda: digest_and_stats(x, "float32"),
        "NumPy's float32 -> float64 cast alone": cast_only,
    }
    try:
        import numba
    except ImportError:
        numba = None
        print("float64 stats, compiled: skipped (Numba is not installed; `pip install numba` in a venv of "
              "your own)")
    if numba is not None:
        @numba.njit(boundscheck=False, fastmath=True)
        def sums(x: np.ndarray) -> tuple[float, float, float, float]:
            lanes = 16
            ss, s = np.zeros(lanes), np.zeros(lanes)
            hi, lo = np.full(lanes, -np.inf, np.float32), np.full(lanes, np.inf, np.float32)
            n = x.size // lanes * lanes
            for i in range(0, n, lanes):
                for j in range(lanes):
                    v = x[i + j]
                    d = np.float64(v)
                    ss[j] += d * d
                    s[j] += d
                    hi[j] = v if v > hi[j] else hi[j]
                    lo[j] = v if v < lo[j] else lo[j]
            a, b = ss.sum(), s.sum()
            for i in range(n, x.size):
                d = np.float64(x[i])
                a += d * d
                b += d
            return a, b, float(hi.max()), float(lo.min())

        def fused(x: np.ndarray) -> str:
            h = xxhash.xxh3_128()
            for i in range(0, x.size, BLOCK):
                blk = x[i:i + BLOCK]
                h.update(blk)
                sums(blk)
            return h.hexdigest()

        sums(x[:100])  # compile
        parts["compiled stats alone"] = lambda: sums(x)
        parts["compiled stats + xxh3, fused per block"] = lambda: fused(x)
    got: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(3):
        for k, fn in parts.items():
            got[k].append(cpu_ms(fn))
    raw = statistics.median(got["raw xxh3_128"])
    compiled = f", compiled with Numba {numba.__version__}" if numba is not None else ""
    print(f"float64 stats{compiled}; {N / 1e6:.1f} M float32 ({4 * N / 1e6:.0f} MB), CPU ms:")
    for k, v in got.items():
        m = statistics.median(v)
        print(f"  {k:<42} {m:7.2f}  {m / raw:5.2f}x raw xxh3_128  {m / N * 1e6:5.2f} ns/element")


def value_write() -> None:
    folder = tempfile.mkdtemp()
    blob = os.urandom(STEP_BYTES)

    def sqlite_wal(steps: int = 60) -> float:
        db = sqlite3.connect(tempfile.mktemp(dir=folder), isolation_level=None)
        db.execute("PRAGMA page_size=65536")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE step_values (step INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        c0 = time.process_time()
        for i in range(steps):
            db.execute("BEGIN")
            db.execute("INSERT INTO step_values VALUES (?, ?)", (i, blob))
            db.execute("COMMIT")
        t = (time.process_time() - c0) / steps   # checkpoints shared out
        db.close()
        return t

    def plain_file(steps: int = 60) -> float:
        fd = os.open(tempfile.mktemp(dir=folder), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        c0 = time.process_time()
        for _ in range(steps):
            os.write(fd, blob)
        t = (time.process_time() - c0) / steps
        os.close(fd)
        return t

    got: dict[str, list[float]] = {"SQLite blob, WAL": [], "os.write to a plain file": []}
    for _ in range(5):
        got["SQLite blob, WAL"].append(sqlite_wal())
        got["os.write to a plain file"].append(plain_file())
    print(f"kept values of one step ({STEP_BYTES // 1024} KB = 400 events of 2 KB), CPU:")
    for k, v in got.items():
        m = statistics.median(v)
        print(f"  {k:<42} {m * 1e3:6.3f} ms per step  {m / 400 * 1e6:5.2f} us per event")


if __name__ == "__main__":
    fused_kernel()
    value_write()
