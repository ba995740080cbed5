"""A probe document in the shape of issue 14's ``twinrun probe --json``, measured on a real model.

``twinrun probe`` does not exist yet; until it does, the report tests and the docs' screenshot use
this: a seeded 512-512-16 GELU MLP at batch 64 under ``no_grad``, its forward outputs recorded per
layer in fresh processes, and four checks computed exactly as the issue defines them:
``repeat`` (the same call again), ``batch_invariance`` (each row alone vs inside the batch),
``threads`` (1 thread vs the default, fresh processes) and ``isa`` (``ATEN_CPU_CAPABILITY=default``,
fresh process). Each check names the first layer whose output differs in any row, the largest ULP
distance at the output, and the largest ULP distance of every output row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, sys
from collections import OrderedDict
import numpy as np
import torch

mode, out = sys.argv[1], sys.argv[2]
if mode == "threads1":
    torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(OrderedDict([
    ("fc1", torch.nn.Linear(512, 512)), ("act1", torch.nn.GELU()),
    ("fc2", torch.nn.Linear(512, 512)), ("act2", torch.nn.GELU()),
    ("head", torch.nn.Linear(512, 16)),
])).eval()
x = torch.randn(64, 512, generator=torch.Generator().manual_seed(1))
names = [n for n, _ in model.named_children()]
seen = {}
for n, m in model.named_children():
    m.register_forward_hook(lambda mod, inp, o, n=n: seen.setdefault(n, []).append(o.detach().clone()))
with torch.no_grad():
    if mode == "rows":
        for i in range(len(x)):
            model(x[i:i + 1])
        layers = {n: torch.cat(seen[n]).numpy() for n in names}
    else:
        model(x)
        if mode == "repeat":
            seen.clear()
            model(x)
        layers = {n: seen[n][-1].numpy() for n in names}
np.savez(out, **layers)
print(json.dumps({"order": names, "capability": torch.backends.cpu.get_cpu_capability(),
                  "threads": torch.get_num_threads()}))
"""


def _run(mode: str, folder: Path, env: dict | None = None) -> tuple[dict, dict]:
    out = folder / f"{mode}.npz"
    script = folder / "probe_child.py"
    r = subprocess.run([sys.executable, str(script), mode, str(out)], capture_output=True, text=True, check=False,
                       env={**os.environ, **(env or {})}, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"probe child {mode} failed: {r.stderr[-2000:]}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    with np.load(out, allow_pickle=False) as z:
        layers = {k: z[k] for k in z.files}
    return info, layers


def _ulp_rows(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Largest ULP distance of each row (float32)."""
    ia = a.astype(np.float32).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32).view(np.int32).astype(np.int64)
    oa = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ob = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    d = np.abs(oa - ob).reshape(len(a), -1)
    return [int(v) for v in d.max(axis=1)]


def _check(ref: dict, other: dict, order: list[str], setting: str | None = None) -> dict:
    first = next((n for n in order if not np.array_equal(ref[n].view(np.uint32), other[n].view(np.uint32))), None)
    rows = _ulp_rows(ref[order[-1]], other[order[-1]])
    out = {"stable": first is None, "max_ulp": max(rows), "first_layer": first, "ulp_per_row": rows}
    if setting:
        out["setting"] = setting
    return out


def probe_document(quick: bool = False) -> dict:
    """Measure the four checks in fresh processes (about 5 torch start-ups, 2 at a time).

    ``quick``: only ``repeat`` and ``batch_invariance`` (3 start-ups); ``threads`` and ``isa`` are
    marked not run, as ``twinrun probe --checks`` would.
    """
    with tempfile.TemporaryDirectory(prefix="twinrun-probe-doc-") as tmp:
        folder = Path(tmp)
        (folder / "probe_child.py").write_text(_CHILD)
        jobs = {"batch": {}, "repeat": {}, "rows": {}, "threads1": {}, "isa": {"ATEN_CPU_CAPABILITY": "default"}}
        if quick:
            del jobs["threads1"]
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {k: pool.submit(_run, k, folder, env) for k, env in jobs.items() if k != "isa"}
            results = {k: f.result() for k, f in futures.items()}
        info, ref = results["batch"]
        order = info["order"]
        checks = {
            "repeat": _check(ref, results["repeat"][1], order),
            "batch_invariance": _check(ref, results["rows"][1], order, "64 rows, each computed alone"),
        }
        if quick:
            for name in ("threads", "isa"):
                checks[name] = {"stable": None, "max_ulp": None, "first_layer": None, "note": "not run (--checks)"}
        else:
            checks["threads"] = _check(ref, results["threads1"][1], order, f"1 thread vs {info['threads']}")
        if quick:
            pass
        elif info["capability"].lower() == "default":
            checks["isa"] = {"stable": None, "max_ulp": None, "first_layer": None,
                             "note": "this CPU runs PyTorch's default kernels already: no lower level to emulate"}
        else:
            (folder / "isa").mkdir()
            (folder / "isa" / "probe_child.py").write_text(_CHILD)
            _, isa = _run("batch", folder / "isa", jobs["isa"])
            checks["isa"] = _check(ref, isa, order, f"ATEN_CPU_CAPABILITY=default vs {info['capability']}")
    return {"checks": checks,
            "script": "a seeded Linear(512, 512)-GELU-Linear(512, 512)-GELU-Linear(512, 16), batch 64",
            "calls": 1, "batch": 64}


if __name__ == "__main__":
    print(json.dumps(probe_document(quick="--quick" in sys.argv), indent=2))
