"""What issue 12's hardening costs and what it saves, measured side by side in one run.

1. The 20 KB trace whose ``digest`` column is generated as ``hex(zeroblob(4e8))``: ``twinrun diff`` on it,
   in a fresh process under a 2 GiB address-space limit -- exit code, seconds, peak RSS.
2. Starting a child through ``_lifeline`` (the parent-death trampoline) against a plain start.
3. ``twinrun.diff`` of two 10,200-event traces in-process: the reader checks every column now.

Pass ``--other SRC`` (another checkout's ``src``, e.g. one before the hardening) to run 1 and 3 on it too,
interleaved with this checkout.

    PYTHONPATH=src python benchmarks/bench_hardening.py [--other /path/to/old/src]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(HERE.parent / "tests"))

MANY = textwrap.dedent("""
    import numpy as np
    from twinrun.recording import active_recorder
    rec = active_recorder()
    w = np.arange(64, dtype=np.float32)
    for step in range(200):
        for i in range(50):
            rec.event("forward", f"layer.{i}", w * (i + 1))
        rec.event("param", "w", w)
        rec.end_step()
""")
# the first call pays the lazy imports; the second is the reading and comparing alone
DIFF = ("import sys, time, twinrun\nfor _ in range(2):\n    t = time.perf_counter()\n"
        "    twinrun.diff(sys.argv[1], sys.argv[2])\n    print(time.perf_counter() - t)")


def attack(folder: Path, sources: dict[str, str]) -> None:
    import os

    import hardening_support as hs

    good = hs.make_trace(folder)
    bad = hs.generated_column_trace(good, folder / "gen.trace")
    print(f"1. diff of the {bad.stat().st_size:,}-byte generated-column trace (RLIMIT_AS 2 GiB):")
    for label, src in sources.items():
        os.environ["PYTHONPATH"] = src
        r = hs.twinrun("diff", bad, good, cwd=folder, memory=2 * 2**30, timeout=300)
        last = (r.stderr.strip().splitlines() or [""])[-1]
        what = "internal error" if "internal error" in last else "one-line error" if "error:" in last else "?"
        print(f"   {label:>8}: exit {r.returncode} ({what}), {r.seconds:.1f} s, peak RSS {r.max_rss_mb:,.0f} MB")
    os.environ["PYTHONPATH"] = str(SRC)


def lifeline() -> None:
    sys.path.insert(0, str(SRC))
    from twinrun._lifeline import lifeline_argv

    cmd = [sys.executable, "-c", "pass"]
    plain, wrapped = [], []
    for _ in range(15):
        for argv, out in ((cmd, plain), (lifeline_argv(cmd), wrapped)):
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, start_new_session=True)
            out.append(time.perf_counter() - t0)
    p, w = statistics.median(plain), statistics.median(wrapped)
    print(f"2. a child through the lifeline: {w * 1000:.0f} ms vs {p * 1000:.0f} ms plain (+{(w - p) * 1000:.0f} ms; "
          "medians of 15, interleaved)")


def diff_speed(folder: Path, sources: dict[str, str]) -> None:
    script = folder / "many.py"
    script.write_text(MANY)
    a = folder / "many-a.trace"
    subprocess.run([sys.executable, "-m", "twinrun", "run", "-q", "-o", str(a), str(script)], check=True,
                   env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    b = shutil.copy(a, folder / "many-b.trace")
    times: dict[tuple[str, int], list[float]] = {(k, i): [] for k in sources for i in (0, 1)}
    for _ in range(7):
        for label, src in sources.items():
            out = subprocess.run([sys.executable, "-c", DIFF, str(a), str(b)], check=True, capture_output=True,
                                 text=True, env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}).stdout.split()
            for i in (0, 1):
                times[(label, i)].append(float(out[i]))
    med = {k: statistics.median(v) for k, v in times.items()}
    for i, what in ((0, "first call (with imports)"), (1, "second call")):
        line = ", ".join(f"{k} {med[(k, i)]:.3f} s" for k in sources)
        ratio = f" (x{med[('this', i)] / med[('other', i)]:.2f})" if "other" in sources else ""
        print(f"3. twinrun.diff of two 10,200-event traces in-process, {what}, medians of 7: {line}{ratio}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", metavar="SRC", help="another checkout's src/ to compare with")
    args = ap.parse_args()
    sources = {"this": str(SRC), **({"other": args.other} if args.other else {})}
    with tempfile.TemporaryDirectory(prefix="twinrun-bench-") as tmp:
        attack(Path(tmp), sources)
        lifeline()
        diff_speed(Path(tmp), sources)
