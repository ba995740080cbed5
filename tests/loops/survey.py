"""Run the current twinrun on every loop script as a stranger would, and compare with the truth.

    PYTHONPATH=src python tests/loops/survey.py OUT.json [CASE ...]

For each case (``tests/loops/loop_cases.py``): ``twinrun run`` of the whole script (with the truth file
written by the script itself), ``twinrun run --max-steps 3``, ``twinrun check --max-steps 3``
seeded, unseeded, and unseeded with ``--seed 0``, and 1 vs 2 threads with ``--wide``
(``twinrun run --threads 1`` / ``--threads 2``, then ``twinrun diff``; for JAX also ``taskset -c 0``
vs both CPUs). Everything found goes to OUT.json (one object per case); FINDINGS.md is written from
it. Reads traces with ``twinrun.trace.Trace`` only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "src")]

from _truth import load
from loop_cases import CASES, Case

from twinrun.trace import Trace


def twinrun(*args: str, env: dict[str, str], prefix: tuple[str, ...] = (), timeout: float = 900) -> dict[str, Any]:
    """``python -m twinrun ARGS --json``: exit code, parsed JSON (or None), stderr tail, seconds."""
    t0 = time.perf_counter()
    r = subprocess.run([*prefix, sys.executable, "-m", "twinrun", *args], check=False, capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=timeout)
    try:
        doc = json.loads(r.stdout) if r.stdout.strip() else None
    except ValueError:
        doc = None
    return {"rc": r.returncode, "json": doc, "stderr": r.stderr[-1500:], "seconds": round(time.perf_counter() - t0, 1)}


def short(check: dict[str, Any]) -> dict[str, Any]:
    """What a check/diff said, in a few fields."""
    doc = check["json"] or {}
    fd = doc.get("first_divergence") or {}
    return {"rc": check["rc"], "seconds": check["seconds"], "identical": doc.get("identical"),
            "sentence": doc.get("sentence"), "steps_compared": doc.get("steps_compared"),
            "different_models": doc.get("different_models"),
            "first": {k: fd.get(k) for k in ("step", "phase", "name", "differing", "max_abs")} if fd else None,
            "structural": (doc.get("structural") or [])[:1],
            "runs": [{k: r.get(k) for k in ("returncode", "status", "steps", "seconds")} for r in doc.get("runs", [])],
            "stderr": check["stderr"][-600:] if check["rc"] not in (0, 1) else ""}


def match(name: str, names: list[str]) -> str | None:
    """The trace event name for a truth name: equal, or ending in ``.name`` / ``/name`` (a prefix)."""
    if name in names:
        return name
    hits = [n for n in names if n.endswith(("." + name, "/" + name))]
    return hits[0] if len(hits) == 1 else None


def compare_truth(trace_path: Path, truth_path: Path) -> dict[str, Any]:
    """Steps, names and step-0 gradients of a full trace against the script's own truth."""
    meta, grads = load(truth_path)
    out: dict[str, Any] = {"truth_steps": meta["steps"], "truth_grad_names": list(grads)[:6],
                           "truth_param_names": meta["param_names"]}
    with Trace.open(trace_path) as t:
        steps = t.steps()
        out.update(trace_steps=len(steps), status=t.status)
        per_step = []
        for s in steps[:3]:
            counts: dict[str, int] = {}
            for e in t.events(s):
                counts[e.phase] = counts.get(e.phase, 0) + 1
            per_step.append(counts)
        out["per_step_phases"] = per_step
        ev0 = t.events(steps[0]) if steps else []
        out["names"] = {ph: sorted({e.name for e in ev0 if e.phase == ph})[:12] for ph in
                        ("init", "input", "forward", "loss", "grad", "param")}
        g0 = [e for e in ev0 if e.phase == "grad"]
        names = [e.name for e in g0]
        rows = []
        for tname, tval in grads.items():
            hit = match(tname, names)
            if hit is None:
                rows.append({"truth": tname, "trace": None})
                continue
            e = g0[names.index(hit)]
            v = t.value(e)
            row: dict[str, Any] = {"truth": tname, "trace": hit}
            if v is not None and v.shape == tval.shape:
                row["bitwise"] = bool((v == tval).all())
                row["max_abs"] = float(np.abs(v.astype(np.float64) - tval).max())
            else:
                row["l2_rel"] = abs(e.l2 - float(np.linalg.norm(tval.astype(np.float64)))) / max(e.l2, 1e-30)
            rows.append(row)
        out["grads"] = rows
        # where the step-0 truth sits, if anywhere: a closure read before backward shows it a step late
        found: dict[str, int] = {}
        for s in steps[:4]:
            for e in t.events(s):
                if e.phase == "grad" and e.name not in found:
                    tname = next((n for n in grads if match(n, [e.name]) == e.name), None)
                    v = t.value(e)
                    if tname is not None and v is not None and v.shape == grads[tname].shape \
                            and (v == grads[tname]).all():
                        found[e.name] = s
        out["truth_found_at_step"] = found
        out["grads_all_equal"] = bool(rows) and all(r.get("bitwise") or (r.get("l2_rel", 1) < 1e-6) for r in rows)
        out["grad_names_recorded_step0"] = names[:8]
    return out


def survey(case: Case, tmp: Path) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **case.env,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    script = str(HERE / case.script)
    res: dict[str, Any] = {"case": case.name, "script": case.script, "args": case.args, "env": case.env}
    truth = tmp / "truth.npz"
    full = twinrun("run", "-o", str(tmp / "full.trace"), "--json", script, "--", *case.args,
                   env={**env, "TWINRUN_LOOPS_TRUTH": str(truth)})
    res["run_full"] = {"rc": full["rc"], "json": full["json"], "seconds": full["seconds"],
                       "stderr": full["stderr"][-800:]}
    if truth.exists() and (tmp / "full.trace").exists():
        res["truth"] = compare_truth(tmp / "full.trace", truth)
    stop = twinrun("run", "-o", str(tmp / "stop.trace"), "--max-steps", "3", "--json", script, "--", *case.args, env=env)
    res["run_max3"] = {"rc": stop["rc"], "json": stop["json"], "seconds": stop["seconds"]}
    res["check_seeded"] = short(twinrun("check", "--max-steps", "3", "--json", script, "--", *case.args, env=env))
    res["check_unseeded"] = short(twinrun("check", "--max-steps", "3", "--json", script, "--", "--unseeded",
                                          *case.args, env=env))
    res["check_unseeded_twinrun_seed"] = short(twinrun("check", "--max-steps", "3", "--seed", "0", "--json", script,
                                                       "--", "--unseeded", *case.args, env=env))
    for n in (1, 2):
        twinrun("run", "-o", str(tmp / f"t{n}.trace"), "--threads", str(n), "--max-steps", "2", "--json", script,
                "--", "--wide", *case.args, env=env)
    res["threads_diff"] = short(twinrun("diff", "--json", str(tmp / "t1.trace"), str(tmp / "t2.trace"), env=env))
    if case.framework == "jax":
        twinrun("run", "-o", str(tmp / "a1.trace"), "--max-steps", "2", "--json", script, "--", "--wide", *case.args,
                env=env, prefix=("taskset", "-c", "0"))
        twinrun("run", "-o", str(tmp / "a2.trace"), "--max-steps", "2", "--json", script, "--", "--wide", *case.args,
                env=env)
        res["affinity_diff"] = short(twinrun("diff", "--json", str(tmp / "a1.trace"), str(tmp / "a2.trace"), env=env))
    return res


def main() -> None:
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    only = set(sys.argv[2:])
    results = json.loads(out.read_text()) if out.exists() else {}
    for case in CASES:
        if only and case.name not in only:
            continue
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            results[case.name] = survey(case, Path(d))
            results[case.name]["survey_seconds"] = round(time.perf_counter() - t0, 1)
        out.write_text(json.dumps(results, indent=1, default=str))
        print(f"{case.name}: {results[case.name]['survey_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
