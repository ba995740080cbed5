"""Run every benchmark in this folder, one after the other, and print their outputs.

    python benchmarks/run_all.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    failed = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"==> {script.name}", flush=True)
        rc = subprocess.call([sys.executable, str(script)])
        failed += rc != 0
        print(flush=True)
    sys.exit(1 if failed else 0)
