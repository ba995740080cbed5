"""Measure what changes the corpus's reproducible scripts on this CPU: one thread, a lower ISA.

    PYTHONPATH=src python tests/corpus/portability.py                 # every reproducible case
    PYTHONPATH=src python tests/corpus/portability.py torch_repro_cnn  # one case

For each case: one reference run (``twinrun run``, this machine's defaults), then one live run per
variant compared with it (``twinrun check --against``). A variant only lowers what the process may
use (one CPU, or an instruction set below this CPU's), never raises it: ``ATEN_CPU_CAPABILITY``
above the CPU's own level kills the process later with SIGILL. Prints one line per variant and a
TOML fragment for expected.toml.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}

# (label, environment, pin to one CPU) per framework; "one-cpu" also pins the process to CPU 0,
# which is what XLA's thread pool follows.
VARIANTS: dict[str, list[tuple[str, dict[str, str], bool]]] = {
    "torch": [("one-cpu", ONE_THREAD, True),
              ("ATEN_CPU_CAPABILITY=avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, False),
              ("ATEN_CPU_CAPABILITY=default", {"ATEN_CPU_CAPABILITY": "default"}, False),
              ("ONEDNN_MAX_CPU_ISA=AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
              ("MKL_CBWR=AVX2", {"MKL_CBWR": "AVX2"}, False)],
    "keras": [("one-cpu", ONE_THREAD, True),
              ("TF_ENABLE_ONEDNN_OPTS=0", {"TF_ENABLE_ONEDNN_OPTS": "0"}, False),
              ("ONEDNN_MAX_CPU_ISA=AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
              ("ONEDNN_MAX_CPU_ISA=SSE41", {"ONEDNN_MAX_CPU_ISA": "SSE41"}, False)],
    "jax": [("one-cpu", ONE_THREAD, True),
            ("XLA_FLAGS=--xla_cpu_max_isa=AVX2", {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}, False),
            ("XLA_FLAGS=--xla_cpu_max_isa=SSE4_2", {"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"}, False)],
}


def cpuinfo(field: str) -> str:
    """The first value of a /proc/cpuinfo field ('' where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":")[0].strip() == field), "")


def machine() -> str:
    """One line naming what the findings were measured on."""
    flags = set(cpuinfo("flags").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "below AVX2"
    return f"{cpuinfo('model name') or platform.processor()}, {isa}, {len(os.sched_getaffinity(0))} CPUs"


def twinrun(args: list[str], env: dict[str, str], pin: bool) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    base.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "twinrun", *args]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, env={**base, **env}, timeout=900)


def measure(case: dict[str, Any]) -> dict[str, str]:
    """Variant label -> 'repeats' or 'parts at PHASE `NAME`'."""
    script = str(HERE / case["file"])
    steps = str(case["max_steps"])
    findings: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="corpus-portability-") as tmp:
        ref = str(Path(tmp) / "ref.trace")
        done = twinrun(["run", "-o", ref, "--max-steps", steps, "--json", script], {}, False)
        if done.returncode != 0:
            raise SystemExit(f"{case['file']}: the reference run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        for label, env, pin in VARIANTS[case["framework"]]:
            proc = twinrun(["check", "--against", ref, "--max-steps", steps, "--json", "--quiet", script], env, pin)
            try:
                doc = json.loads(proc.stdout)
            except json.JSONDecodeError:
                findings[label] = f"failed (exit {proc.returncode})"
                continue
            first = doc.get("first_divergence")
            findings[label] = "repeats" if doc["identical"] else (
                f"parts at {first['phase']} `{first['name']}`" if first else "parts (structural)")
    return findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="reproducible case names (default: all)")
    args = parser.parse_args()
    with open(HERE / "expected.toml", "rb") as f:
        cases = tomllib.load(f)
    names = args.names or [n for n, c in cases.items() if c["cause"] == "reproducible"]
    for name in names:
        if cases.get(name, {}).get("cause") != "reproducible":
            parser.error(f"{name} is not a reproducible case of expected.toml")
    print(f"# measured on {machine()}", flush=True)
    for name in names:
        findings = measure(cases[name])
        threads = "stable" if findings.get("one-cpu") == "repeats" else "sensitive"
        isa = "stable" if all(v == "repeats" for k, v in findings.items() if k != "one-cpu") else "sensitive"
        print(f"\n[{name}.portability]\nmeasured_on = {json.dumps(machine())}\n"
              f"thread_count = \"{threads}\"\ncpu_isa = \"{isa}\"")
        for label, finding in findings.items():
            print(f"{json.dumps(label)} = {json.dumps(finding)}", flush=True)


if __name__ == "__main__":
    main()
