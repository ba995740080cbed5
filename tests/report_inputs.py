"""Real inputs for the report tests, made once per test session into one folder and shared by
test_report.py and test_report_browser.py: traces of the demo CNN (1 thread vs 2), traces whose
event names are hostile, sweeps of a NumPy script with failed and NaN runs, a doctor document,
and a probe document."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from helpers import run_twinrun

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "twinrun" / "_demo" / "digits_cnn.py"
CURVES = ROOT / "tests" / "scripts" / "numpy_curves.py"

# Names a trace, a script or an environment could hold, that must never become markup.
HOSTILE = [
    '<script>alert("owned")</script>',
    "</script><script>alert(1)</script>",
    "\"quoted' & <b>bold</b> <!-- comment",
    "ctl\x1b[31mred\x07bell\x01end",
    "line\u2028separator and rtl\u202eoverride",
    "]]><img src=x onerror=alert(2)>",
]
HOSTILE_METRIC = "</script><img src=x onerror=alert(3)>"


def twinrun(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m twinrun ARGS`` in a fresh process (tests/helpers.py), TensorFlow's log quiet."""
    return run_twinrun(*args, timeout=timeout, env={"TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def _check(r: subprocess.CompletedProcess, ok=(0,)) -> subprocess.CompletedProcess:
    if r.returncode not in ok:
        raise RuntimeError(f"{r.args}: exit {r.returncode}\n{r.stderr[-3000:]}")
    return r


def demo_traces(folder: Path) -> tuple[Path, Path]:
    """The demo CNN, 20 steps, 1 thread vs 2: they part at the gradient of the wide layer."""
    a, b = folder / "demo-t1.trace", folder / "demo-t2.trace"
    if not (a.exists() and b.exists()):
        with ThreadPoolExecutor(2) as pool:
            jobs = [pool.submit(twinrun, "run", "-q", "-o", str(p), "--threads", str(n), str(DEMO),
                                "--", "--steps", "20")
                    for p, n in ((a, 1), (b, 2))]
            for j in jobs:
                _check(j.result())
    return a, b


def hostile_traces(folder: Path) -> tuple[Path, Path]:
    """Two short traces (NumPy arrays through twinrun.record) whose event names are hostile;
    they part at step 1."""
    from twinrun.recording import record

    paths = folder / "hostile-a.trace", folder / "hostile-b.trace"
    if all(p.exists() for p in paths):
        return paths
    for k, p in enumerate(paths):
        with record(p) as rec:
            for step in range(4):
                for j, name in enumerate(HOSTILE):
                    v = np.linspace(0, 1, 32, dtype=np.float32) * (j + 1) + step
                    if k == 1 and step >= 1 and j == 2:
                        v = v + np.float32(1e-6)   # run B parts here
                    rec.event("forward" if j % 2 else "param", name, v)
                rec.end_step()
    return paths


def sweeps(folder: Path) -> dict[str, Path]:
    """Sweeps of tests/scripts/numpy_curves.py: A (lr 0.5; seed 2 fails, seed 4 reports NaN, a metric
    with a hostile name), B (lr 0.05), and a variance-design sweep."""
    out = {"a": folder / "a.db", "b": folder / "b.db", "v": folder / "v.db"}
    jobs = {
        "a": ["--seeds", "6", "--vary", "init", "--", "--lr", "0.5", "--fail-seed", "2", "--nan-seed", "4",
              "--extra-name", HOSTILE_METRIC],
        "b": ["--seeds", "6", "--vary", "init", "--", "--lr", "0.05"],
        "v": ["--seeds", "4", "--design", "variance", "--", "--lr", "0.2"],
    }
    for key, args in jobs.items():
        if not out[key].exists():
            cut = args.index("--")
            _check(twinrun("sweep", "-q", "--workers", "2", "-o", str(out[key]), *args[:cut], str(CURVES), *args[cut:]),
                   ok=(0, 3))
    return out


def doctor_json(folder: Path) -> Path:
    """``twinrun doctor --json --html doctor-cli.html`` of examples/nondeterminism/no_seed.py (cause
    unseeded-init); its stderr is kept in doctor.stderr."""
    path = folder / "doctor.json"
    if not path.exists():
        r = _check(twinrun("doctor", "--json", "--html", str(folder / "doctor-cli.html"), "--max-steps", "3",
                           "--no-portability", str(ROOT / "examples" / "nondeterminism" / "no_seed.py")), ok=(1,))
        (folder / "doctor.stderr").write_text(r.stderr)
        path.write_text(r.stdout)
    return path


def probe_json(folder: Path) -> Path:
    """A probe document measured on a real model; the fast variant (repeat and batch invariance in
    this process; threads and isa marked not run)."""
    path = folder / "probe.json"
    if not path.exists():
        sys.path.insert(0, str(ROOT / "tests"))
        from probe_document import probe_document

        path.write_text(json.dumps(probe_document(quick=True)))
    return path


def inputs_folder(tmp_path_factory) -> Path:
    """One folder per test session, shared by the report test modules."""
    folder = tmp_path_factory.getbasetemp() / "report-inputs"
    folder.mkdir(exist_ok=True)
    return folder
