"""Run every benchmark in this folder, one after the other, and print their outputs.

    python benchmarks/run_all.py                     # all of them, full size (the tracing ones take long)
    python benchmarks/run_all.py --quick             # --quick to each benchmark that takes it
    python benchmarks/run_all.py lstm event_cost     # only bench_lstm.py and bench_event_cost.py

The tracing benchmarks of issue 16 (bench_lstm, bench_vs_debugmode, bench_event_cost, bench_bigparams,
bench_longrun) measure their modes side by side in one process and print ratios in wall and CPU time;
see README.md for how to read them on a shared machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    p = argparse.ArgumentParser(description="run the benchmarks in this folder")
    p.add_argument("--quick", action="store_true", help="pass --quick to each benchmark that takes it")
    p.add_argument("only", nargs="*", help="names of benchmarks to run (bench_NAME.py), default all")
    a = p.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if a.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in a.only or s.stem in a.only]
    failed = 0
    for script in scripts:
        args = [sys.executable, str(script)]
        if a.quick and "--quick" in script.read_text():
            args.append("--quick")
        print(f"==> {script.name}{' --quick' if len(args) > 2 else ''}", flush=True)
        rc = subprocess.call(args)
        failed += rc != 0
        print(flush=True)
    sys.exit(1 if failed else 0)
