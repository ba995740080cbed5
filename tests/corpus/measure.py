"""Run the corpus under ``twinrun check`` and say whether each claim of expected.toml holds.

    python tests/corpus/measure.py                      # every case, originals and fixed twins, twice
    python tests/corpus/measure.py torch_vocab_set -r 3 # one case, three checks of each file
    python tests/corpus/measure.py --json out.jsonl     # one JSON line per check, for the report
    python tests/corpus/measure.py --evidence           # also: where run A's input samples are in run B

Run from the repository root with this checkout's ``src`` on PYTHONPATH (``PYTHONPATH=src``).
Each check is two fresh runs of the script (``twinrun check --max-steps N``); a claim holds when
an original parts at the expected phase and its fixed twin (and every reproducible script) does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_cases() -> dict[str, dict[str, Any]]:
    """The tables of expected.toml, by case name."""
    with open(HERE / "expected.toml", "rb") as f:
        return tomllib.load(f)


def check(script: Path, max_steps: int, evidence: bool = False, timeout: float = 600) -> dict[str, Any]:
    """One ``twinrun check`` of ``script``: identical or not, where the runs part, and how long it took."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}  # hash-seed cases need it unset
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="corpus-measure-") as keep:
        extra = ["--keep-traces", keep] if evidence else []
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "twinrun", "check", str(script), "--max-steps", str(max_steps),
                               "--json", "--quiet", *extra], check=False, capture_output=True, text=True, env=env,
                              timeout=timeout)
        seconds = time.perf_counter() - started
        try:
            doc = json.loads(proc.stdout)
        except json.JSONDecodeError:
            return {"script": str(script), "returncode": proc.returncode, "error": proc.stderr[-2000:],
                    "seconds": seconds}
        first = doc.get("first_divergence") or {}
        result = {"script": str(script), "returncode": proc.returncode, "identical": doc["identical"],
                  "phase": first.get("phase"), "step": first.get("step"), "name": first.get("name"),
                  "steps": [doc.get("steps_a"), doc.get("steps_b")], "sentence": doc.get("sentence"),
                  "structural": bool(doc.get("structural")), "seconds": round(seconds, 1),
                  "run_seconds": [r.get("seconds") for r in doc.get("runs", [])]}
        if evidence and first.get("phase") == "input":
            result["samples"] = sample_pools(doc["a"], doc["b"], first["name"])
    return result


def sample_pools(trace_a: str, trace_b: str, name: str) -> dict[str, Any]:
    """Where run A's samples of input ``name`` are in run B, over every recorded step.

    ``same_place``: the same digest at the same step and position; ``elsewhere``: found in B at
    another place; ``nowhere``: not found in B (changed samples, or, in a partial epoch, samples
    that B had not reached). Fractions of A's samples. ``distinct``: distinct digests in A (few
    when the input is a label: then ``elsewhere`` says little).
    """
    # The public trace reader, imported here so that --help needs no twinrun on the path.
    from twinrun import Trace

    def pool(path: str) -> dict[tuple[int, int], str]:
        with Trace.open(path) as trace:
            return {(e.step, i): d for e in trace.events() if e.phase == "input" and e.name == name
                    for i, d in enumerate(e.sample_digests or [])}

    a, b = pool(trace_a), pool(trace_b)
    if not a:
        return {"count": 0}
    in_b = set(b.values())
    same = sum(b.get(pos) == d for pos, d in a.items())
    found = sum(d in in_b for d in a.values())
    return {"count": len(a), "distinct": len(set(a.values())), "same_place": round(same / len(a), 3),
            "elsewhere": round((found - same) / len(a), 3), "nowhere": round(1 - found / len(a), 3)}


def verdict(case: dict[str, Any], result: dict[str, Any], fixed: bool) -> str:
    """'ok' when the check agrees with the table, otherwise what is wrong."""
    if "error" in result:
        return f"no JSON (exit {result['returncode']})"
    if result["steps"][0] != case["max_steps"] or result["steps"][1] != case["max_steps"]:
        return f"steps {result['steps']} != {case['max_steps']}"
    should_part = case["cause"] != "reproducible" and not fixed
    if not should_part:
        return "ok" if result["identical"] else f"parted at {result['phase']} ({result['name']})"
    if result["identical"]:
        return "identical"
    if result["phase"] != case["phase"]:
        return f"phase {result['phase']} != {case['phase']}"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="case names (default: all)")
    parser.add_argument("-r", "--repeats", type=int, default=2, help="checks of each file (default 2)")
    parser.add_argument("--only", choices=["original", "fixed"], help="check only originals or only fixed twins")
    parser.add_argument("--json", type=Path, help="append one JSON line per check to this file")
    parser.add_argument("--evidence", action="store_true",
                        help="keep the traces and say where run A's input samples are in run B")
    args = parser.parse_args()
    cases = load_cases()
    names = args.names or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        parser.error(f"no such case in expected.toml: {', '.join(unknown)}")
    bad = 0
    for name in names:
        case = cases[name]
        files = []
        if args.only != "fixed":
            files.append((HERE / case["file"], False))
        if case["cause"] != "reproducible" and args.only != "original":
            files.append((HERE / "fixed" / case["file"], True))
        for path, fixed in files:
            for _ in range(args.repeats):
                result = check(path, case["max_steps"], evidence=args.evidence and not fixed)
                result.update(case=name, fixed=fixed, verdict=verdict(case, result, fixed))
                bad += result["verdict"] != "ok"
                where = "identical" if result.get("identical") else f"{result.get('phase')}@{result.get('step')} {result.get('name')}"
                samples = result.get("samples")
                print(f"{name:42s} {'fixed' if fixed else 'orig ':5s} {result['verdict']:28s} {where:40s} "
                      f"{result['seconds']:6.1f}s" + (f"  samples {samples}" if samples else ""), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(result) + "\n")
    print(f"{bad} check(s) disagree with expected.toml")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
