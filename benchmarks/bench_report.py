"""HTML reports: page sizes and render times, from real artefacts; optionally the docs' screenshots.

    python benchmarks/bench_report.py                          # make the inputs, render, measure
    python benchmarks/bench_report.py --inputs DIR             # keep/reuse the inputs in DIR
    python benchmarks/bench_report.py --screenshots docs/reports   # also write PNGs (system Chromium)

Inputs: the demo CNN 20 steps 1 thread vs 2 (diff), `twinrun doctor` on
examples/nondeterminism/reproducible.py (with its portability reruns), sweeps of
tests/scripts/digits_sweep.py (lr 0.05 vs 0.02, 10 seeds each, and a variance-design sweep of 6
seeds per arm), a probe document measured on a 512-wide MLP (tests/probe_document.py), and a large
synthetic trace pair (500 steps x 200 events, recorded by twinrun's writer) for the map's scaling.
Render times: the median of 5 renders in this process (imports already paid), and one fresh
`twinrun report` process for the diff (imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# After the path set-up above: this script runs from a checkout without installing twinrun.
import numpy as np  # noqa: E402

from twinrun.report import render, write_html  # noqa: E402

DEMO = ROOT / "src" / "twinrun" / "_demo" / "digits_cnn.py"
SWEEP = ROOT / "tests" / "scripts" / "digits_sweep.py"


def tw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinrun", *args], capture_output=True, text=True, check=False)


def need(r: subprocess.CompletedProcess, ok=(0, 1)) -> subprocess.CompletedProcess:
    if r.returncode not in ok:
        raise SystemExit(f"{' '.join(map(str, r.args))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r


def make_inputs(d: Path) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    a, b = d / "demo-1thread.trace", d / "demo-2threads.trace"
    if not (a.exists() and b.exists()):
        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(tw, "run", "-q", "-o", str(p), "--threads", str(n), str(DEMO), "--", "--steps", "20")
                      for p, n in ((a, 1), (b, 2))]:
                need(f.result(), ok=(0,))
    doctor = d / "doctor.json"
    if not doctor.exists():
        script = ROOT / "examples" / "nondeterminism" / "reproducible.py"
        doctor.write_text(need(tw("doctor", "--json", "-q", str(script))).stdout)
    dbs = {"a": (d / "lr0.05.db", ["--seeds", "10", "--vary", "init"], ["--lr", "0.05"]),
           "b": (d / "lr0.02.db", ["--seeds", "10", "--vary", "init"], ["--lr", "0.02"]),
           "v": (d / "variance.db", ["--seeds", "6", "--design", "variance"], ["--lr", "0.05"])}
    for path, opts, script_args in dbs.values():
        if not path.exists():
            need(tw("sweep", "-q", "--workers", "2", "-o", str(path), *opts, str(SWEEP), "--", *script_args), ok=(0, 3))
    probe = d / "probe.json"
    if not probe.exists():
        from probe_document import probe_document

        probe.write_text(json.dumps(probe_document()))
    big = d / "big-a.trace", d / "big-b.trace"
    if not all(p.exists() for p in big):
        from twinrun.recording import record

        for k, p in enumerate(big):
            with record(p) as rec:
                for step in range(500):
                    for j in range(200):
                        v = np.full(64, step + j, dtype=np.float32)
                        if k and step >= 100 and j >= 120:
                            v += np.float32(1e-3)
                        rec.event(("forward", "grad", "param")[j % 3], f"block{j // 3}.layer{j % 3}", v)
                    rec.end_step()
    return {"demo": (a, b), "doctor": doctor, "dbs": {k: v[0] for k, v in dbs.items()}, "probe": probe, "big": big}


def timed(fn, n: int = 5) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", default=None, help="folder for the inputs (kept; reused when present)")
    p.add_argument("--screenshots", default=None, help="write a PNG of every page into this folder")
    args = p.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="twinrun-bench-report-")
    folder = Path(args.inputs or tmp.name)
    t0 = time.perf_counter()
    inp = make_inputs(folder)
    print(f"inputs ready in {time.perf_counter() - t0:.0f} s ({folder})")
    a, b = inp["demo"]
    diff_doc = json.loads(need(tw("diff", str(a), str(b), "--json")).stdout)
    big_doc = json.loads(need(tw("diff", *map(str, inp["big"]), "--json")).stdout)
    dbs = inp["dbs"]
    cmp_doc = json.loads(need(tw("compare", str(dbs["a"]), str(dbs["b"]), "--json", "-q")).stdout)
    var_doc = json.loads(need(tw("compare", str(dbs["v"]), "--json", "-q")).stdout)
    pages = {
        "diff": ("diff", diff_doc, {"a": a, "b": b}),
        "doctor": ("doctor", json.loads(inp["doctor"].read_text()), {}),
        "compare": ("compare", cmp_doc, {"a": dbs["a"], "b": dbs["b"]}),
        "sweep-variance": ("compare", var_doc, {"a": dbs["v"]}),
        "probe": ("probe", json.loads(inp["probe"].read_text()), {}),
        "diff-500-steps": ("diff", big_doc, {"a": inp["big"][0], "b": inp["big"][1]}),
    }
    out = folder / "pages"
    out.mkdir(exist_ok=True)
    print(f"{'page':<16} {'bytes':>10} {'render (median of 5)':>22}")
    for name, (kind, doc, src) in pages.items():
        seconds, html = timed(lambda kind=kind, doc=doc, src=src: render(kind, doc, **src))
        write_html(kind, doc, out / f"{name}.html", **src)
        print(f"{name:<16} {len(html.encode()):>10,} {seconds:>20.3f} s")
    t = time.perf_counter()
    need(subprocess.run([sys.executable, "-m", "twinrun", "report", str(a), str(b), "-o", str(out / "cli-diff.html"),
                         "-q"],
                        capture_output=True, text=True, check=False), ok=(0,))
    print(f"`twinrun report A.trace B.trace` in a fresh process (imports, comparison and page): "
          f"{time.perf_counter() - t:.2f} s")
    if args.screenshots:
        shots(out, Path(args.screenshots), [n for n in pages if n != "diff-500-steps"])


def shots(pages: Path, dest: Path, names: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    dest.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", headless=True, viewport={"width": 1200, "height": 900},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        for name in names:
            page = ctx.new_page()
            page.goto((pages / f"{name}.html").resolve().as_uri())
            page.screenshot(path=str(dest / f"report-{name}.png"), full_page=True)
            page.close()
            print(f"screenshot {dest / f'report-{name}.png'}")
        ctx.close()


if __name__ == "__main__":
    main()
