"""Launching the DDP case scripts as ``torchrun`` would, and reading what they dumped.

Used by ``measure.py`` (which prints the facts of README.md) and ``tests/test_ddp_facts.py``.
Plain functions over plain data: a launch's result, the per-rank rows of ``--dump``, the first step
and parameter where replicas part, the ULP distance of two float32 arrays.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


@dataclass
class Launch:
    returncode: int
    seconds: float
    stdout: str
    stderr: str


def torchrun_command(script: str | os.PathLike, args: list[str], nproc: int = 2) -> list[str]:
    """``torchrun --standalone --nproc-per-node N script args`` with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            str(script), *args]


def run(cmd: list[str], env: Mapping[str, str | None] | None = None, timeout: float = 300,
        cwd: str | os.PathLike | None = None) -> Launch:
    """Run ``cmd`` with this environment plus ``env`` (None removes a variable), timed."""
    full = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    t0 = time.perf_counter()
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, env=full, timeout=timeout, cwd=cwd)
    return Launch(p.returncode, time.perf_counter() - t0, p.stdout, p.stderr)


# A rank can die of SIGABRT while its interpreter exits, after the script has finished, even when it
# called destroy_process_group() (gloo's worker threads; about 1 launch in 40 on a loaded machine, and
# three in a row once on CI). The case scripts now skip that finalization (``ddp_common.finish``); a
# script that does not (ddp_probe.py) is relaunched.
HARD_EXIT_ENV = "DDP_CASE_HARD_EXIT"  # read by ddp_common.finish (which cannot be imported here without torch)
EXIT_ABORT = "terminate called without an active exception"
# On a loaded machine gloo's rendezvous can lose a peer's connection before training starts
# (seen once in a full suite at a load average of 15); nothing a script does is measured by then.
MESH_LOST = "Gloo connectFullMesh failed"
TRANSIENT = (EXIT_ABORT, MESH_LOST)
ATTEMPTS = 3


def run_again_on_exit_abort(cmd: list[str], env: Mapping[str, str | None] | None = None,
                            timeout: float = 300) -> Launch:
    """``run(cmd)``, again (up to ``ATTEMPTS`` launches) while it fails only by the exit-time abort or a
    lost rendezvous: two aborts in a row were seen once in a CI rehearsal on a busy machine."""
    env = {HARD_EXIT_ENV: "1", **(env or {})}  # the case scripts leave by os._exit: ddp_common.finish
    r = run(cmd, env=env, timeout=timeout)
    for _ in range(ATTEMPTS - 1):
        seen = next((t for t in TRANSIENT if t in r.stderr), None) if r.returncode != 0 else None
        if seen is None:
            break
        script = next((Path(c).name for c in cmd if str(c).endswith(".py")), cmd[-1])
        print(f"{script}: a launch failed outside the script ({seen!r}); launching again", file=sys.stderr)
        r = run(cmd, env=env, timeout=timeout)
    return r


def torchrun(script: str, args: list[str], nproc: int = 2, env: Mapping[str, str | None] | None = None,
             timeout: float = 300) -> Launch:
    """Launch ``HERE/script`` on ``nproc`` ranks; raise with the output when it fails.

    A launch that failed only by the exit-time abort is run once more (its dumps are rewritten).
    """
    r = run_again_on_exit_abort(torchrun_command(HERE / script, args, nproc), env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr[-4000:]}")
    return r


def single(script: str, args: list[str], env: Mapping[str, str | None] | None = None, timeout: float = 300) -> Launch:
    """Run ``HERE/script`` as one plain process."""
    r = run([sys.executable, str(HERE / script), *args], env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr[-4000:]}")
    return r


def read_dump(folder: str | os.PathLike) -> dict[int, list[dict]]:
    """``{rank: [row per step]}`` from the ``rank<R>.jsonl`` files of ``--dump``."""
    out = {}
    for path in sorted(Path(folder).glob("rank*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        out[int(path.stem.removeprefix("rank"))] = rows
    return out


def read_values(folder: str | os.PathLike, rank: int) -> dict[str, np.ndarray]:
    with np.load(Path(folder) / f"rank{rank}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def replica_divergence(dump: dict[int, list[dict]]) -> dict | None:
    """The first step (in order) and parameter whose digest differs between rank 0 and another rank.

    Only digests cross between ranks: this is the check twinrun can do from per-rank traces.
    """
    ranks = sorted(dump)
    for i, row0 in enumerate(dump[ranks[0]]):
        for r in ranks[1:]:
            row = dump[r][i]
            assert row["step"] == row0["step"]
            for name, d in row0["params"].items():
                if row["params"][name] != d:
                    return {"step": row0["step"], "name": name, "rank": r}
    return None


def same_inputs(dump: dict[int, list[dict]]) -> list[bool]:
    """Per step: whether every rank's input batch has the same digest (the same-data-seed bug)."""
    ranks = sorted(dump)
    steps = [row for row in dump[ranks[0]] if row["input"] is not None]
    return [all(dump[r][i + 1]["input"] == row["input"] for r in ranks) for i, row in enumerate(steps)]


def params_equal(a: list[dict], b: list[dict]) -> list[bool]:
    """Per step: whether every parameter digest of run ``a`` equals run ``b``'s."""
    return [ra["params"] == rb["params"] for ra, rb in zip(a, b, strict=True)]


def first_param_difference(a: list[dict], b: list[dict]) -> dict | None:
    for ra, rb in zip(a, b, strict=True):
        for name, d in ra["params"].items():
            if rb["params"][name] != d:
                return {"step": ra["step"], "name": name}
    return None


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distance of two float32 arrays in units in the last place (0 where bitwise equal)."""
    def ordered(x: np.ndarray) -> np.ndarray:
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(ordered(a) - ordered(b))


def value_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[dict]:
    """Per step of two ``--values`` dumps: differing elements, max ULPs, max absolute and relative difference."""
    steps = sorted({int(k.split("/")[0].removeprefix("step")) for k in a})
    out = []
    for s in steps:
        keys = [k for k in a if k.startswith(f"step{s}/")]
        n = differ = 0
        max_ulp = 0
        max_rel = max_abs = 0.0
        for k in keys:
            u = ulps(a[k], b[k])
            n += u.size
            differ += int((u > 0).sum())
            max_ulp = max(max_ulp, int(u.max()))
            da, db = a[k].astype(np.float64), b[k].astype(np.float64)
            rel = np.abs(da - db) / np.maximum(np.maximum(np.abs(da), np.abs(db)), np.finfo(np.float32).tiny)
            max_rel = max(max_rel, float(rel.max()))
            max_abs = max(max_abs, float(np.abs(da - db).max()))
        out.append({"step": s, "elements": n, "differ": differ, "max_ulp": max_ulp, "max_abs": max_abs,
                    "max_rel": max_rel})
    return out
