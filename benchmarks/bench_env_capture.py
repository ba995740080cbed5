"""How long `twinrun.env.capture()` takes, with no framework loaded and with PyTorch loaded.

Run: python benchmarks/bench_env_capture.py   (from the repository root; uses this checkout's src/)

Each case runs in a fresh process, so import caches do not flatter the later cases; the numbers
are printed side by side with their ratio to a bare `import numpy` process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
REPEAT = 5

CASE = """
import time, json
t0 = time.perf_counter()
{setup}
t1 = time.perf_counter()
from twinrun import env
fp = env.capture()
t2 = time.perf_counter()
print(json.dumps({{"setup": t1 - t0, "capture": t2 - t1}}))
"""

CASES = {
    "no framework": "import numpy",
    "torch loaded": "import torch",
}


def run(setup: str) -> dict:
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", CASE.format(setup=setup)], capture_output=True, text=True, env=e,
                       check=True)
    return json.loads(p.stdout)


def main() -> None:
    results = {}
    for name, setup in CASES.items():
        try:
            times = [run(setup)["capture"] for _ in range(REPEAT)]
        except subprocess.CalledProcessError:
            print(f"{name}: skipped (setup failed)")
            continue
        results[name] = statistics.median(times)
    base = results.get("no framework")
    print(f"env.capture() median of {REPEAT} fresh processes (import of twinrun.env included):")
    for name, t in results.items():
        ratio = f"  x{t / base:.2f} of no-framework" if base else ""
        print(f"  {name:14s} {t * 1000:8.1f} ms{ratio}")


if __name__ == "__main__":
    main()
