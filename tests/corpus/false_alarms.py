"""How often do the corpus's reproducible scripts part when nothing changes? (doctor's false alarms)

    PYTHONPATH=src python tests/corpus/false_alarms.py                  # every reproducible case, 20 runs
    PYTHONPATH=src python tests/corpus/false_alarms.py -n 20 torch_repro_cnn

Each case is one ``twinrun check SCRIPT --runs N --max-steps <max_steps>``: N fresh runs, each compared
with the first. A run that parts from the first is a false alarm: doctor's baseline would have called
the script not reproducible. Prints one line per case and the rate over all comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", help="case names (default: every reproducible case)")
    parser.add_argument("-n", "--runs", type=int, default=20, help="runs per case (default 20)")
    args = parser.parse_args()
    with open(HERE / "expected.toml", "rb") as f:
        cases = tomllib.load(f)
    names = args.names or [n for n, c in cases.items() if c["cause"] == "reproducible"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parted = compared = 0
    for name in names:
        case = cases[name]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "twinrun", "check", str(HERE / case["file"]), "--runs",
                               str(args.runs), "--max-steps", str(case["max_steps"]), "--json", "--quiet"],
                              check=False, capture_output=True, text=True, env=env, timeout=3600)
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError:
            print(f"{name:32s} no JSON (exit {proc.returncode}): {proc.stderr.strip()[-300:]}", flush=True)
            continue
        comps = doc.get("comparisons") or [doc]
        bad = sum(1 for c in comps if not c.get("identical"))
        parted, compared = parted + bad, compared + len(comps)
        print(f"{name:32s} {bad} of {len(comps)} comparisons parted  ({time.perf_counter() - t0:.0f} s)", flush=True)
    rate = parted / compared if compared else 0.0
    print(f"false alarms: {parted} of {compared} comparisons ({100 * rate:.1f}%) over {args.runs} runs per case")


if __name__ == "__main__":
    main()
