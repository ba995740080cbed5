"""Tracing overhead under ``--nproc 2``: DDP training of the ResNet-style CNN of ``bench_tracing.py``
(3x32x32 images, global batch 64 = 32 per rank, gloo on CPU, one thread per rank as torchrun sets it).

Three launches per round, rounds interleaved so that machine load hits every mode alike:

- untraced: ``python -m torch.distributed.run --standalone --nproc-per-node 2 THIS --as-script``;
- traced, every phase: ``twinrun run --nproc 2 THIS -- --as-script``;
- traced, ``--capture param``.

Each rank times its own training steps (wall and process CPU time, warm-up steps left out) and writes
them to a file; the ratios are of rank 0's medians, which is what tracing adds to a DDP step (the
goals are those of single-process tracing: every phase <= 1.3, param only <= 1.05). The wall time of
the whole launch is reported beside them: torchrun's start-up dominates it.

    python benchmarks/bench_ddp.py             # 3 rounds, 20 steps (about 4 minutes on 2 cores)
    python benchmarks/bench_ddp.py --quick     # 1 round, 12 steps
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
from pathlib import Path

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"
sys.path.insert(0, str(HERE.parent))
WARMUP = 4


def as_script(argv: list[str]) -> None:
    """One rank's training (a user's DDP script: no twinrun in it); step times to $BENCH_OUT/rank<R>.json."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from bench_tracing import build_model, data

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args(argv)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DDP(build_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xs, ys = data(4, 64)
    per = 64 // world
    wall, cpu = [], []
    for s in range(a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        x = xs[s % 4][rank * per:(rank + 1) * per]
        y = ys[s % 4][rank * per:(rank + 1) * per]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = os.environ.get("BENCH_OUT")
    if out:
        Path(out, f"rank{rank}.json").write_text(json.dumps({"wall": wall, "cpu": cpu}))
    dist.destroy_process_group()


def launch(mode: str, steps: int, folder: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=folder))
    env = {**os.environ, "BENCH_OUT": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    env.pop("OMP_NUM_THREADS", None)   # torchrun's default: one thread per rank, in every mode
    script = [str(HERE), "--as-script", "--steps", str(steps)]
    if mode == "untraced":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *script]
    else:
        cmd = [sys.executable, "-m", "twinrun", "run", "-q", "--nproc", "2", "-o", str(out / "run.trace")]
        if mode == "param only":
            cmd += ["--capture", "param"]
        cmd += [script[0], "--", *script[1:]]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{mode}: exit {r.returncode}\n{r.stderr[-3000:]}")
    rank0 = json.loads((out / "rank0.json").read_text())
    size = sum(p.stat().st_size for p in out.glob("run.rank*.trace"))
    return {"seconds": seconds, "wall": rank0["wall"][WARMUP:], "cpu": rank0["cpu"][WARMUP:],
            "trace_bytes_per_step": size / 2 / steps if size else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--as-script", action="store_true")
    args, rest = p.parse_known_args()
    if args.as_script:
        as_script(rest)
        return
    rounds, steps = (1, 12) if args.quick else (3, 20)
    modes = ("untraced", "all phases", "param only")
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    launches: dict[str, list[float]] = {m: [] for m in modes}
    size: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for i in range(rounds):
            order = list(modes)[i % 3:] + list(modes)[:i % 3]
            for mode in order:
                r = launch(mode, steps, Path(tmp))
                wall[mode] += r["wall"]
                cpu[mode] += r["cpu"]
                launches[mode].append(r["seconds"])
                size[mode] = r["trace_bytes_per_step"]
    med = {m: statistics.median(v) for m, v in wall.items()}
    med_cpu = {m: statistics.median(v) for m, v in cpu.items()}
    print(f"DDP, 2 ranks (gloo, 1 thread each), ResNet-style CNN, global batch 64; {rounds} round(s) of {steps} "
          f"steps, medians of rank 0's steps after {WARMUP} warm-up steps")
    for m in modes:
        line = (f"  {m:11s} step {med[m] * 1000:7.1f} ms wall, {med_cpu[m] * 1000:7.1f} ms CPU; launch "
                f"{statistics.median(launches[m]):5.1f} s")
        if size.get(m):
            line += f"; trace {size[m] / 1e6:.2f} MB per rank per step"
        print(line)
    print(f"  traced / untraced, every phase: {med['all phases'] / med['untraced']:.2f} wall, "
          f"{med_cpu['all phases'] / med_cpu['untraced']:.2f} CPU (goal <= 1.3)")
    print(f"  traced / untraced, param only:  {med['param only'] / med['untraced']:.2f} wall, "
          f"{med_cpu['param only'] / med_cpu['untraced']:.2f} CPU (goal <= 1.05)")
    print(f"  whole launch, traced every phase / untraced: "
          f"{statistics.median(launches['all phases']) / statistics.median(launches['untraced']):.2f}")


if __name__ == "__main__":
    main()
