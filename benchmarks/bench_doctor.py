"""Doctor's wall time and number of reruns on each example of examples/nondeterminism/ (and the demo CNN).

Goal (issue 4): under a minute per script with --max-steps 20 on a 2-core machine; reruns run two at a
time where cores allow. Run: `python benchmarks/bench_doctor.py [--max-steps 20] [--only NAME,...]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])

from twinrun.doctor import PARALLEL, diagnose  # noqa: E402

EXAMPLES = ["no_seed", "numpy_augment", "unseeded_shuffle", "set_order", "imap_unordered",
            "nondeterministic_kernel", "thread_sensitive", "reproducible"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--only", default=None, help="comma list of example names (and/or demo)")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else EXAMPLES
    scripts = [(n, ROOT / "examples" / "nondeterminism" / f"{n}.py") for n in names if n != "demo"]
    if not a.only or "demo" in names:
        from twinrun.demo import SCRIPT as demo

        scripts.append(("demo CNN (seeded)", demo))
    for v in ("PYTHONHASHSEED", "OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"):
        os.environ.pop(v, None)
    print(f"twinrun doctor, --max-steps {a.max_steps}, {PARALLEL} runs at a time, {os.cpu_count()} cores")
    print(f"{'script':<26} {'cause':<26} {'reruns':>6} {'wall s':>7} {'s/run':>6}  goal < 60 s")
    total = 0.0
    for name, path in scripts:
        t0 = time.perf_counter()
        try:
            d = diagnose(path, max_steps=a.max_steps)
            cause = d.cause + (f"/{d.detail}" if d.detail and len(d.detail) < 10 else "")
            reruns = d.reruns
        except Exception as e:  # noqa: BLE001 - report and go on
            cause, reruns = f"error: {type(e).__name__}", 0
            print(f"  {e}", file=sys.stderr)
        wall = time.perf_counter() - t0
        total += wall
        per = wall / reruns if reruns else float("nan")
        print(f"{name:<26} {cause:<26} {reruns:>6} {wall:>7.1f} {per:>6.2f}  {'ok' if wall < 60 else 'SLOW'}",
              flush=True)
    print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
